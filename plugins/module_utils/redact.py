# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keep secrets out of what the collection prints: URL credentials, the env file's secret values,
JWT-looking strings.

Pure Python; no Ansible import.
"""

from __future__ import annotations

import re

MASK = "********"
# scheme://user:password@host (restic's rest:https://..., s3:https://..., an rclone or sftp URL)
_URL_CREDENTIALS_RE = re.compile(r"(?P<pre>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):(?P<password>[^/\s@]+)@")
# three base64url parts, the first a JSON header ({"... is eyJ), as Supabase's anon and service role keys
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")
# an env file variable whose value is a secret (the config role's rule for the .env.example's variables)
SECRET_NAME_RE = re.compile(r"(SECRET|PASS|TOKEN|_KEY$|PRIVATE|CREDENTIAL|_DSN$|DATABASE_URL)", re.IGNORECASE)
# shorter values are too likely to occur in ordinary text (a port, "true"); none of the secrets is this short
MIN_SECRET_LEN = 6


def url_passwords(text: str) -> list[str]:
    """The passwords of every ``scheme://user:password@`` in ``text``."""
    return [m.group("password") for m in _URL_CREDENTIALS_RE.finditer(text or "")]


def mask_url(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` replaced by a mask."""
    return _URL_CREDENTIALS_RE.sub(lambda m: f"{m.group('pre')}:{MASK}@", text or "")


def secret_values(env: dict) -> list[str]:
    """The values of ``env`` (an env file read as a dict) that are secrets, longest first."""
    out = {str(v) for k, v in env.items() if v and SECRET_NAME_RE.search(str(k)) and len(str(v)) >= MIN_SECRET_LEN}
    return sorted(out, key=len, reverse=True)


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """``text`` with every value of ``secrets``, every JWT-looking string and every URL password masked."""
    text = text or ""
    for value in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LEN}, key=len, reverse=True):
        text = text.replace(value, MASK)
    text = JWT_RE.sub(MASK, text)
    return mask_url(text)


def env_secrets(path: str) -> list[str]:
    """The secret values of the env file at ``path`` (missing or unreadable: none)."""
    # imported here: the scheduled backup's runner carries this file without envfile.py
    from ansible_collections.paycraft.selfhost.plugins.module_utils.envfile import EnvFile

    try:
        env = EnvFile.read(path)
    except (OSError, UnicodeDecodeError):
        return []
    return secret_values({k: env.get(k) for k in env.keys()})


def container_logs(containers: list[str], tail: int, secrets: list[str], run) -> list[dict]:
    """The last ``tail`` lines (stdout and stderr) of each container, redacted. ``run(argv)`` returns
    ``(rc, stdout, stderr)``: ``docker logs --tail N <container>``."""
    out = []
    for name in containers:
        rc, stdout, stderr = run(["docker", "logs", "--tail", str(int(tail)), name])
        lines = [redact(line, secrets) for line in (stdout or "").splitlines() + (stderr or "").splitlines()]
        out.append({"container": name, "rc": rc, "lines": lines})
    return out
