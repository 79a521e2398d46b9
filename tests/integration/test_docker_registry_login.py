"""The docker role's registry trust and login, against a real registry that wants both.

A private registry (Debian's docker-registry, paycraft-local/registry:2) serving
TLS with a certificate from a throwaway CA, with htpasswd authentication, and a
disposable host with its own Docker engine (paycraft-local/dind-host:bookworm,
the engine started by the docker role), on a network of their own. The
controller pushes a tiny image with a login of its own (a throw-away
DOCKER_CONFIG, never the controller's). Then the docker role runs on the host,
trusting the registry through its CA file (paycraft_docker_registry_ca_certs,
written to /etc/docker/certs.d/; no insecure-registries), as an air-gapped
fleet's operator would set it up:

1. with a wrong password the role stops, naming the host, the registry and the
   user, never the password;
2. the host's engine (started and configured by that run) trusts the registry's
   certificate but is refused a pull without credentials: the registry really
   wants them;
3. with the credentials from an Ansible Vault file, at -vvv, the role logs in,
   the host pulls the image, and the password is nowhere in the output;
4. without the CA file the role wrote, the same engine refuses the registry's
   certificate: the CA file is what made it trusted.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import textwrap
import uuid
import warnings
from pathlib import Path

import pytest
from paycraft_dind import install_pyc_cache
from paycraft_testlib import ThrowawayCA, free_port, missing, wait_for

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # bcrypt through libxcrypt; Python < 3.13 (the test skips without it)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HOST_IMAGE = "paycraft-local/dind-host:bookworm"
REGISTRY_IMAGE = "paycraft-local/registry:2"
USER = "fleet-user"
PASSWORD = "s3cret-" + uuid.uuid4().hex
WRONG = "wrong-" + uuid.uuid4().hex
IMAGE = "fleet-registry:5000/fleet-login/tiny:1"


def _docker(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, **kw)


@pytest.fixture(scope="module")
def lab(docker_engine, tmp_path_factory):
    for image in (HOST_IMAGE, REGISTRY_IMAGE):
        if _docker("image", "inspect", image, check=False).returncode != 0:
            missing(f"image {image} (tests/hosts/build.sh)")
    tag = uuid.uuid4().hex[:8]
    work = tmp_path_factory.mktemp("login")
    net = f"paycraft-fleet-login-{tag}"
    registry, host = f"{net}-registry", f"{net}-host"
    htpasswd = work / "htpasswd"
    # bcrypt: the only hash the registry's htpasswd accepts
    hashed = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))  # noqa: S324
    htpasswd.write_text(f"{USER}:{hashed}\n")
    # the registry's certificate, for its name on the hosts' network and the controller's loopback
    ca = ThrowawayCA("paycraft fleet registry test CA")
    tls = work / "tls"
    tls.mkdir()
    cert_pem, key_pem = ca.issue(["fleet-registry", "127.0.0.1"])
    (tls / "registry.crt").write_bytes(cert_pem)
    (tls / "registry.key").write_bytes(key_pem)
    (work / "ca.pem").write_bytes(ca.pem)
    config = work / "registry.yml"
    config.write_text(textwrap.dedent("""\
        version: 0.1
        log: {level: warn}
        storage: {filesystem: {rootdirectory: /var/lib/registry}}
        http:
          addr: ":5000"
          tls: {certificate: /etc/registry-tls/registry.crt, key: /etc/registry-tls/registry.key}
        auth:
          htpasswd:
            realm: paycraft-fleet-test
            path: /etc/registry-htpasswd
        """))
    port = free_port()
    cleanup = [("rm", "-f", "-v", host), ("rm", "-f", "-v", registry), ("volume", "rm", "-f", f"{host}-docker"),
               ("network", "rm", net)]
    try:
        _docker("network", "create", "--label", "owner=paycraft-tests", net)
        _docker("run", "-d", "--name", registry, "--network", net, "--network-alias", "fleet-registry",
                "--label", "owner=paycraft-tests", "-p", f"127.0.0.1:{port}:5000",
                "-v", f"{config}:/etc/paycraft-registry.yml:ro", "-v", f"{htpasswd}:/etc/registry-htpasswd:ro",
                "-v", f"{tls}:/etc/registry-tls:ro", REGISTRY_IMAGE)
        _docker("run", "-d", "--name", host, "--hostname", host, "--network", net, "--label", "owner=paycraft-tests",
                "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
                "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
                "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "-v", f"{host}-docker:/var/lib/docker",
                HOST_IMAGE, "sleep", "infinity")
        install_pyc_cache(host)
        # a tiny image, pushed with a login (the controller's engine takes 127.0.0.1 as insecure: it does not
        # check the certificate there) of the test's own (never the controller's docker config)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            data = b"paycraft fleet login test\n"
            info = tarfile.TarInfo("hello.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        image = f"127.0.0.1:{port}/fleet-login/tiny:1"
        subprocess.run(["docker", "import", "-", image], input=buf.getvalue(), capture_output=True, check=True)
        cleanup.append(("image", "rm", "-f", image))
        env = dict(os.environ, DOCKER_CONFIG=str(work / "docker-config"))
        login = ["login", "-u", USER, "--password-stdin", f"127.0.0.1:{port}"]
        wait_for(lambda: _docker(*login, input=PASSWORD, env=env, check=False).returncode == 0,
                 timeout=30, what="the registry to accept a login")
        _docker("push", "-q", image, env=env)
        inventory = work / "hosts.yml"
        inventory.write_text(textwrap.dedent(f"""\
            all:
              hosts:
                {host}:
                  ansible_connection: community.docker.docker
                  ansible_python_interpreter: /usr/bin/python3
            """))
        vault_pass = work / "vault-pass"
        vault_pass.write_text(uuid.uuid4().hex + "\n")
        secrets = work / "registry-vault.yml"
        secrets.write_text(f"vault_registry_username: {USER}\nvault_registry_password: {PASSWORD}\n")
        res = subprocess.run([str(BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(vault_pass),
                              str(secrets)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert PASSWORD not in secrets.read_text()
        compose_plugin = BIN.parent / "libexec" / "docker-compose"
        playbook = work / "login.yml"
        playbook.write_text(textwrap.dedent(f"""\
            - name: Docker with a registry login on the host
              hosts: all
              gather_facts: true
              gather_subset: [min]
              vars_files: [{secrets}]
              vars:
                paycraft_docker_install_method: distribution
                paycraft_docker_min_version: "20.10"
                paycraft_docker_compose_plugin_src: "{compose_plugin}"
                # trust through the registry's CA, not insecure-registries
                paycraft_docker_registry_ca_certs:
                  "fleet-registry:5000": "{{{{ lookup('file', '{work / "ca.pem"}') }}}}"
                fleet_logins:
                  - registry: fleet-registry:5000
                    username: "{{{{ vault_registry_username }}}}"
                    password: "{{{{ fleet_password | default(vault_registry_password) }}}}"
                paycraft_docker_registry_logins: "{{{{ fleet_logins }}}}"
              roles:
                - paycraft.selfhost.docker
              tasks:
                - name: Pull the image from the registry
                  ansible.builtin.command:
                    argv: [docker, pull, -q, {IMAGE}]
                  register: fleet_pull
                  changed_when: false
                  failed_when: false

                - name: Report the pull
                  ansible.builtin.debug:
                    msg: "PULL rc={{{{ fleet_pull.rc }}}} {{{{ fleet_pull.stdout }}}} {{{{ fleet_pull.stderr }}}}"
            """))
        yield {"inventory": inventory, "playbook": playbook, "vault_pass": vault_pass, "host": host}
    finally:
        for args in cleanup:
            _docker(*args, check=False)


def _play(lab, *args: str) -> tuple[int, str]:
    res = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(lab["inventory"]), "--vault-password-file",
                          str(lab["vault_pass"]), str(lab["playbook"]), *args],
                         capture_output=True, text=True, cwd=REPO, env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    return res.returncode, res.stdout + res.stderr


def test_login_from_vault(lab):
    # 1. a wrong password stops the role, naming host, registry and user, never the password
    rc, out = _play(lab, "-e", f"fleet_password={WRONG}")
    assert rc != 0, out
    assert f"{lab['host']}: docker login failed for 1 registry" in out, out
    assert f"- fleet-registry:5000 as {USER}:" in out, out
    assert WRONG not in out

    # 2. the engine runs and trusts the registry's certificate, but without a login the registry refuses the pull
    pull = _docker("exec", lab["host"], "docker", "pull", "-q", IMAGE, check=False)
    assert pull.returncode != 0, pull.stdout
    assert "no basic auth credentials" in pull.stderr or "unauthorized" in pull.stderr.lower(), pull.stderr
    assert "x509" not in pull.stderr, pull.stderr

    # 3. the Vault's credentials, at -vvv: logged in, the image pulls, the password never shows
    rc, out = _play(lab, "-vvv")
    assert rc == 0, out
    assert "PULL rc=0" in out, out
    assert PASSWORD not in out

    # 4. the CA file the role wrote is what the engine trusts: without it, the registry's certificate is refused
    ca_file = "/etc/docker/certs.d/fleet-registry:5000/ca.crt"
    assert _docker("exec", lab["host"], "rm", ca_file, check=False).returncode == 0, f"{ca_file} is not on the host"
    _docker("exec", lab["host"], "docker", "rmi", IMAGE)
    pull = _docker("exec", lab["host"], "docker", "pull", "-q", IMAGE, check=False)
    assert pull.returncode != 0, pull.stdout
    assert "x509" in pull.stderr or "certificate signed by unknown authority" in pull.stderr, pull.stderr
