#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, paycraft.selfhost contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: paycraft_release_check
short_description: Validate a PayCraft release before the host changes, and plan the gaps the collection fills
version_added: "0.2.0"
description:
  - V(extract) exports O(version) of O(repo) with C(git archive) into a new temporary directory on the host
    (from the objects of the existing O(checkout) when it has them, else by a fetch into a scratch
    repository) and returns the texts of the YAML files of its C(infra/selfhost) directory. The checkout,
    its refs and the running stack are not touched.
  - V(check) looks at a release tree (O(tree)) - the migrations directory resolves and holds C(*.sql) files;
    every path the compose file mounts or starts exists in the release; every route of Kong's declarative
    file resolves to a compose service that will run (the gap-filled C(rest) counts); C(docker compose config)
    accepts the compose file with the env file the config role renders (O(env_file) plus a placeholder for
    each of O(env_keys) it does not hold yet). All findings are reported together, one line each naming the
    file and the fix.
  - The controller parses the YAML (O(compose), O(yaml_files)); the managed host needs no PyYAML.
author:
  - paycraft.selfhost maintainers (@paycraft)
options:
  stage:
    description: V(extract) the release into a temporary tree, or V(check) a tree.
    type: str
    choices: [extract, check]
    default: check
  repo:
    description: Git URL of PayCraft (V(extract)).
    type: str
  version:
    description: Tag or commit to export (V(extract)); also named in messages.
    type: str
  checkout:
    description: The existing checkout whose objects are used when they hold O(version) (V(extract)).
    type: path
  tree:
    description: The release tree to check (V(check)); the directory V(extract) returned, or the checkout itself.
    type: path
  remove_tree:
    description: Remove O(tree) after the check (a temporary tree from V(extract)).
    type: bool
    default: false
  source_dest:
    description: Where the checkout lives on the host; paths below it are looked up in O(tree).
    type: path
    required: true
  selfhost_rel:
    description: The compose project directory, relative to the release root.
    type: str
    default: infra/selfhost
  compose_file:
    description: The compose file, relative to O(selfhost_rel).
    type: str
    default: docker-compose.yaml
  compose:
    description: The compose file, parsed (V(check)); omitted when the release has none.
    type: dict
  yaml_files:
    description: The YAML files of O(selfhost_rel) parsed, keyed by their path relative to the release (V(check)).
    type: dict
    default: {}
  migrations_dir:
    description:
      - The migrations directory on the host (C(paycraft_migrations_dir)).
      - Below O(source_dest) it is read in O(tree).
    type: path
    required: true
  fill_rest:
    description: C(paycraft_stack_fill_rest) - V(auto) fills the C(rest) service when the release lacks it.
    type: str
    default: auto
  fill_main:
    description: C(paycraft_stack_fill_main) - V(auto) mounts the collection's router when the release lacks C(main).
    type: str
    default: auto
  compose_config:
    description:
      - Run C(docker compose config) on the compose file.
      - Needs docker on the host; skipped with a note otherwise.
    type: bool
    default: true
  compose_project:
    description: The compose project name used by C(docker compose config).
    type: str
    default: selfhost
  env_file:
    description: The rendered env file; its values are used by C(docker compose config) and never returned.
    type: path
  env_keys:
    description:
      - Variables the config role writes into O(env_file).
      - Placeholders stand in for those it does not hold yet.
    type: list
    elements: str
    default: []
  fail_on_findings:
    description: Fail with all findings in one message (V(check)).
    type: bool
    default: true
  label:
    description: How the failure message names the host and release.
    type: str
    default: this release
  hint:
    description:
      - A sentence added to the failure when V(extract) cannot read the version (for example the repository's tags).
    type: str
    default: ""
attributes:
  check_mode:
    support: full
    description: Both stages only read the release; V(extract) writes a temporary directory that V(check) removes.
  diff_mode:
    support: none
    description: Nothing is changed.
"""

EXAMPLES = r"""
- name: Export v1.2.0 of PayCraft into a temporary tree
  paycraft.selfhost.paycraft_release_check:
    stage: extract
    repo: https://github.com/MobileByteLabs/PayCraft.git
    version: v1.2.0
    checkout: /opt/paycraft/src
    source_dest: /opt/paycraft/src
    migrations_dir: /opt/paycraft/src/server/migrations
  register: release

- name: Validate it before the checkout moves
  paycraft.selfhost.paycraft_release_check:
    tree: "{{ release.tree }}"
    remove_tree: true
    source_dest: /opt/paycraft/src
    migrations_dir: /opt/paycraft/src/server/migrations
    compose: "{{ release.files['infra/selfhost/docker-compose.yaml'] | from_yaml }}"
    yaml_files: {infra/selfhost/kong.yml: "{{ release.files['infra/selfhost/kong.yml'] | from_yaml }}"}
    env_file: /etc/paycraft/paycraft.env
    env_keys: [PAYCRAFT_DB_PASSWORD, PAYCRAFT_JWT_SECRET]
"""

RETURN = r"""
tree:
  description: The temporary release tree (V(extract)).
  returned: stage is extract
  type: str
commit:
  description: The commit O(version) names (V(extract)).
  returned: stage is extract
  type: str
files:
  description: Text of each C(*.yml)/C(*.yaml) file of O(selfhost_rel), keyed by its release path (V(extract)).
  returned: stage is extract
  type: dict
findings:
  description: One entry per problem - C(file), C(problem), C(fix) and C(line) (the three in one sentence).
  returned: stage is check
  type: list
  elements: dict
gaps:
  description: >-
    C(rest) and C(main): C(present) (the release has it), C(setting), C(variable) and C(fill) (the stack role
    fills it); C(main) also has C(service), C(path) and C(command) (the edge runtime command pointed at the
    collection's router).
  returned: stage is check
  type: dict
kong_file:
  description: The release path of the Kong declarative file the kong service reads.
  returned: stage is check
  type: str
kong_filled:
  description: Kong's declarative config with its C(/rest/v1/) route pointed at the collection's C(rest) service.
  returned: stage is check and gaps.rest.fill
  type: dict
kong_config:
  description: >-
    The Kong declarative config the gateway should run (before the stack role's API-key check): O(yaml_files)'
    kong file, with its C(/rest/v1/) route pointed at the collection's C(rest) service when that gap is filled.
  returned: stage is check and the release has a Kong file
  type: dict
kong_target:
  description: The compose service that reads the Kong file (C(service)) and its path in the container (C(path)).
  returned: stage is check and a compose service sets KONG_DECLARATIVE_CONFIG
  type: dict
  sample: {service: kong, path: /home/kong/kong.yml}
filled:
  description: One sentence per gap the stack role fills, naming the variable and its setting.
  returned: stage is check
  type: list
  elements: str
report:
  description: All findings in one message (the label, the count, one line per finding), as the failure says it.
  returned: stage is check and there are findings
  type: str
notes:
  description: Checks that could not run, and why.
  returned: stage is check
  type: list
  elements: str
"""

import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.paycraft.selfhost.plugins.module_utils import _cli, release_check
from ansible_collections.paycraft.selfhost.plugins.module_utils.envfile import EnvFile, EnvFileError


def _extract(module, run):
    p = module.params
    for name in ("repo", "version"):
        if not p[name]:
            module.fail_json(msg=f"stage=extract needs {name}.")
    dest = tempfile.mkdtemp(prefix="paycraft-release-")
    try:
        commit = release_check.extract_release(run, p["repo"], p["version"], dest, checkout=p["checkout"])
    except release_check.ReleaseError as exc:
        shutil.rmtree(dest, ignore_errors=True)
        hint = f" {p['hint']}" if p["hint"] else ""
        module.fail_json(msg=f"{p['label']}: cannot read {p['version']} of {p['repo']}: {exc}. "
                             f"Nothing was changed.{hint}")
    files = {}
    selfhost = os.path.join(dest, p["selfhost_rel"].strip("/"))
    if os.path.isdir(selfhost):
        for name in sorted(os.listdir(selfhost)):
            if name.endswith((".yml", ".yaml")):
                text = release_check.read_text(os.path.join(selfhost, name))
                if text is not None:
                    files[f"{p['selfhost_rel'].strip('/')}/{name}"] = text
    module.exit_json(changed=False, tree=dest, commit=commit, files=files)


def _check(module, run):
    p = module.params
    if not p["tree"] or not os.path.isdir(p["tree"]):
        module.fail_json(msg=f"stage=check needs tree, an existing directory (got {p['tree']!r}).")
    try:
        release_check.normalize_fill(p["fill_rest"])
        release_check.normalize_fill(p["fill_main"])
    except ValueError as exc:
        module.fail_json(msg=f"paycraft_stack_fill_rest / paycraft_stack_fill_main: {exc}.")
    tree = release_check.Tree(p["tree"], p["selfhost_rel"], p["source_dest"])
    compose = p["compose"] if isinstance(p["compose"], dict) else None
    kong_rel = release_check.kong_file_of(tree, compose) or f"{tree.selfhost_rel}/kong.yml"
    kong = p["yaml_files"].get(kong_rel)
    kong = kong if isinstance(kong, dict) else None
    findings, gaps = release_check.check_release(
        tree, compose, kong, compose_file=p["compose_file"], kong_rel=kong_rel,
        migrations_dir=p["migrations_dir"], fill_rest=p["fill_rest"], fill_main=p["fill_main"])
    notes = []
    if compose is not None and p["compose_config"]:
        docker = module.get_bin_path("docker")
        if docker is None:
            notes.append("docker compose config was not run: docker is not installed on the host yet")
        elif run([docker, "compose", "version"], timeout=60)[0] != 0:
            notes.append("docker compose config was not run: the Compose v2 plugin is not installed on the host yet")
        else:
            existing = {}
            if p["env_file"] and os.path.isfile(p["env_file"]):
                try:
                    existing = EnvFile.read(p["env_file"]).as_dict()
                except (OSError, EnvFileError) as exc:
                    notes.append(f"{p['env_file']} could not be read ({exc}); placeholders stand in for it")
            env = release_check.validation_env(existing, p["env_keys"])
            error = release_check.compose_config_error(run, docker, tree, p["compose_file"], p["compose_project"],
                                                       env, p["tree"])
            if error:
                findings.append(release_check.Finding(
                    f"{tree.selfhost_rel}/{p['compose_file']}",
                    f"docker compose config refuses it with the rendered env file: {error}",
                    "set the variable it names through paycraft_config_extra_env (or the matching paycraft_* "
                    "variable), or pin paycraft_version to a release whose compose file is valid"))
    result = {
        "changed": False,
        "findings": [f.as_dict() for f in findings],
        "gaps": gaps,
        "kong_file": kong_rel,
        "notes": notes,
        "filled": [f"{name} filled ({gap['variable']}={gap['setting']})" for name, gap in gaps.items() if gap["fill"]],
    }
    if gaps["rest"]["fill"] and kong is not None:
        result["kong_filled"] = release_check.kong_with_rest(kong)
    if kong is not None:
        result["kong_config"] = result.get("kong_filled", kong)
    target = release_check.kong_mount_target(compose)
    if target:
        result["kong_target"] = target
    if p["remove_tree"]:
        shutil.rmtree(p["tree"], ignore_errors=True)
    if findings:
        lines = "\n".join(f"- {f.line()}" for f in findings)
        result["report"] = (f"{p['label']} cannot run as it is: {len(findings)} finding(s); nothing was changed.\n"
                            f"{lines}")
        if p["fail_on_findings"]:
            module.fail_json(msg=result["report"], **result)
    module.exit_json(**result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            stage=dict(type="str", default="check", choices=["extract", "check"]),
            repo=dict(type="str"),
            version=dict(type="str"),
            checkout=dict(type="path"),
            tree=dict(type="path"),
            remove_tree=dict(type="bool", default=False),
            source_dest=dict(type="path", required=True),
            selfhost_rel=dict(type="str", default="infra/selfhost"),
            compose_file=dict(type="str", default="docker-compose.yaml"),
            compose=dict(type="dict"),
            yaml_files=dict(type="dict", default={}),
            migrations_dir=dict(type="path", required=True),
            fill_rest=dict(type="str", default="auto"),
            fill_main=dict(type="str", default="auto"),
            compose_config=dict(type="bool", default=True),
            compose_project=dict(type="str", default="selfhost"),
            env_file=dict(type="path"),
            env_keys=dict(type="list", elements="str", default=[], no_log=False),
            fail_on_findings=dict(type="bool", default=True),
            label=dict(type="str", default="this release"),
            hint=dict(type="str", default=""),
        ),
        supports_check_mode=True,
    )
    run = _cli.module_runner(module, default_timeout=300)
    if module.params["stage"] == "extract":
        _extract(module, run)
    else:
        _check(module, run)


if __name__ == "__main__":
    main()
