# -*- coding: utf-8 -*-
# Copyright: (c) 2026, paycraft.selfhost contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One way to run external commands (docker, git, ...) from the collection's modules.

In the manner of community.docker's ``module_utils/_common_cli.py``: the module owns the process
handling (``AnsibleModule.run_command``: no shell, argv as a list, its environment and logging rules),
and the libraries in module_utils never start processes themselves. They take a *runner*, a callable
``runner(argv, cwd=None, timeout=None) -> (rc, stdout, stderr)``, which a module makes with
:func:`module_runner`.

Conventions every runner keeps (the libraries rely on them):

* a binary that does not exist is ``rc 127`` (as a shell says), with the reason in stderr;
* a command that does not finish within ``timeout`` seconds is stopped and is ``rc 124`` (as coreutils'
  ``timeout`` says), with ``"<argv> did not answer within <n>s"`` in stderr;
* stdout and stderr are text.

Pure Python; no Ansible import (the module object is passed in).
"""

from __future__ import annotations

RC_NOT_FOUND = 127
RC_TIMEOUT = 124
DEFAULT_TIMEOUT = 30.0


def _timed_out(argv, timeout) -> str:
    return f"{' '.join(argv)} did not answer within {timeout:g}s"


def module_runner(module, default_timeout: float = DEFAULT_TIMEOUT):
    """A runner built on ``module.run_command``; the timeout goes through coreutils' ``timeout``."""
    timeout_bin = module.get_bin_path("timeout")

    def run(argv, cwd=None, timeout=None):
        argv = [str(a) for a in argv]
        limit = default_timeout if timeout is None else float(timeout)
        cmd = argv
        if timeout_bin and limit > 0:
            cmd = [timeout_bin, "--kill-after=5", f"{limit:g}", *argv]
        try:
            rc, out, err = module.run_command(cmd, cwd=cwd, check_rc=False, handle_exceptions=False)
        except FileNotFoundError as exc:
            return RC_NOT_FOUND, "", f"{argv[0]}: {exc.strerror or exc}"
        except OSError as exc:
            return 126, "", f"{argv[0]}: {exc.strerror or exc}"
        if timeout_bin and limit > 0 and rc in (RC_TIMEOUT, 137):
            return RC_TIMEOUT, out or "", _timed_out(argv, limit)
        return rc, out or "", err or ""

    return run
