"""A disposable Docker engine for tests: a Docker-in-Docker host container.

Tests that need the production names of a PayCraft install (compose project
``selfhost``, containers ``paycraft_*``, volume ``selfhost_paycraft-db``, ports
54321/54322/3000) run them inside this host, never on the controller's own
engine, where the demo's or an operator's install lives.

The host runs ``paycraft-local/dind-host:bookworm`` (tests/hosts/dind-host) in
the DinD shape of ENVIRONMENT.md (explicit capabilities, never --privileged)
with its own dockerd. The inner engine's API and the stack's ports are
published on 127.0.0.1 random ports; the controller's docker CLI and
``docker compose`` drive the inner engine with ``DOCKER_HOST`` (``host.env()``).
The host sits alone on a network of its own, so other containers on the
controller's bridge cannot reach its unauthenticated API.
A directory (the pytest basetemp) is bind-mounted at the same path, so the
compose file's bind mounts (``../../dashboard``, ``./kong.yml``) resolve in the host.

Images reach the inner engine by ``docker save | docker load``; the saved tar is
cached under /var/tmp, keyed by the image ids, so later sessions load without
saving again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import subprocess
import time
from pathlib import Path

from paycraft_testlib import missing, wait_for

HOST_IMAGE = os.environ.get("PAYCRAFT_DIND_IMAGE", "paycraft-local/dind-host:bookworm")
PREFIX = "paycraft-pytest"
LABEL = "paycraft.pytest.dind"
# The runbook's host ports: published inside the host, reached on random controller ports.
STACK_PORTS = (54321, 54322, 3000)
API_PORT = 2375
# the bytecode cache of Ansible's module payloads, copied into each host (see its module's docstring)
PYC_CACHE_INSTALL = Path(__file__).resolve().parent / "hosts" / "pyc_cache" / "install.sh"
IMAGE_CACHE = Path(os.environ.get("PAYCRAFT_IMAGE_CACHE", "/var/tmp/paycraft-pytest-images"))
DIND_FLAGS = (
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined",
    "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
)


def _docker(*args: str, env: dict | None = None, check: bool = True, timeout: float = 600,
            **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, env=env, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


def _controller_env() -> dict:
    """The environment for commands on the controller's engine (no DOCKER_HOST of a test)."""
    return {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}


class DindHost:
    """One Docker-in-Docker host; ``start()``/``remove()`` or use as a context manager."""

    def __init__(self, shared_dir: Path, name: str | None = None, image: str = HOST_IMAGE,
                 run_args: tuple[str, ...] = ()) -> None:
        self.name = name or f"{PREFIX}-{secrets.token_hex(4)}"
        self.volume = f"{self.name}-docker"
        self.network = self.name
        self.shared_dir = Path(shared_dir).resolve()
        self.image = image
        # more `docker run` arguments for the host container (a --mount of a small filesystem, ...)
        self.run_args = tuple(run_args)
        self.ports: dict[int, int] = {}
        self.loaded: set[str] = set()
        self.started_in: float | None = None

    # --- lifecycle ------------------------------------------------------------

    def start(self, timeout: float = 90) -> DindHost:
        t0 = time.monotonic()
        publish = []
        for port in (API_PORT, *STACK_PORTS):
            publish += ["-p", f"127.0.0.1::{port}"]
        _docker("network", "create", "--label", f"{LABEL}=1", self.network, env=_controller_env())
        _docker(
            "run", "-d", "--name", self.name, "--hostname", self.name, "--label", f"{LABEL}=1",
            "--network", self.network, *DIND_FLAGS, *self.run_args, "-v", f"{self.volume}:/var/lib/docker",
            "-v", f"{self.shared_dir}:{self.shared_dir}", *publish,
            self.image, "dockerd", "-H", "unix:///var/run/docker.sock", "-H", f"tcp://0.0.0.0:{API_PORT}",
            "--tls=false",
            env=_controller_env(),
        )
        for port in (API_PORT, *STACK_PORTS):
            out = _docker("port", self.name, f"{port}/tcp", env=_controller_env()).stdout.split()
            self.ports[port] = int(out[0].rsplit(":", 1)[1])

        def answers() -> bool:
            if not self.running():
                raise RuntimeError(f"the DinD host {self.name} stopped:\n{self.host_logs()}")
            return self.docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=10).returncode == 0

        try:
            wait_for(answers, timeout=timeout, interval=0.3, what=f"the inner engine of {self.name}")
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"{exc}\n--- docker logs {self.name}\n{self.host_logs()}") from exc
        install_pyc_cache(self.name)
        self.started_in = time.monotonic() - t0
        return self

    def running(self) -> bool:
        out = _docker("inspect", "--format", "{{.State.Running}}", self.name, check=False, env=_controller_env())
        return out.stdout.strip() == "true"

    def host_logs(self, tail: int = 60) -> str:
        out = _docker("logs", "--tail", str(tail), self.name, check=False, env=_controller_env())
        return out.stdout + out.stderr

    def remove(self) -> None:
        """Remove the host container, its network and its /var/lib/docker volume (and all inside)."""
        for args, timeout in ((("rm", "-f", "-v", self.name), 180), (("network", "rm", self.network), 60),
                              (("volume", "rm", "-f", self.volume), 900)):
            with contextlib.suppress(subprocess.TimeoutExpired):
                _docker(*args, check=False, env=_controller_env(), timeout=timeout)

    def __enter__(self) -> DindHost:
        try:
            return self.start()
        except BaseException:
            self.remove()
            raise

    def __exit__(self, *exc) -> None:
        self.remove()

    # --- driving the inner engine -----------------------------------------------

    @property
    def docker_host(self) -> str:
        return f"tcp://127.0.0.1:{self.ports[API_PORT]}"

    def env(self, base: dict | None = None) -> dict:
        """An environment whose docker CLI and `docker compose` talk to the inner engine."""
        env = dict(os.environ if base is None else base)
        env.pop("DOCKER_CONTEXT", None)
        env["DOCKER_HOST"] = self.docker_host
        return env

    def docker(self, *args: str, check: bool = True, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
        """`docker ARGS` against the inner engine."""
        return _docker(*args, env=self.env(), check=check, timeout=timeout, **kw)

    def port(self, inner: int) -> int:
        """The controller's 127.0.0.1 port that reaches the host's port `inner`."""
        return self.ports[inner]

    def url(self, inner: int) -> str:
        return f"http://127.0.0.1:{self.ports[inner]}"

    # --- images -------------------------------------------------------------------

    def load(self, *images: str) -> float:
        """Load controller images into the inner engine (cached tar); returns the seconds it took."""
        todo = sorted(set(images) - self.loaded)
        if not todo:
            return 0.0
        t0 = time.monotonic()
        tar = saved_images(todo)
        self.docker("load", "-i", str(tar), timeout=1800)
        self.loaded.update(todo)
        return time.monotonic() - t0


def install_pyc_cache(container: str, env: dict | None = None) -> None:
    """The test hosts' bytecode cache for Ansible's module payloads (tests/hosts/pyc_cache) into a container
    of the controller's engine (``env``: another engine's)."""
    proc = subprocess.run(["bash", str(PYC_CACHE_INSTALL), container], capture_output=True, text=True,
                          env=_controller_env() if env is None else env, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{PYC_CACHE_INSTALL} {container} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")


def image_ids(images: list[str]) -> list[str]:
    ids = []
    for img in images:
        out = _docker("image", "inspect", "--format", "{{.Id}}", img, check=False, env=_controller_env())
        if out.returncode != 0:
            missing(f"the image {img} on the controller's engine")
        ids.append(out.stdout.strip())
    return ids


def saved_images(images: list[str]) -> Path:
    """`docker save` of images, cached under IMAGE_CACHE by their names and ids."""
    ids = image_ids(images)
    named = "\n".join(f"{name} {ident}" for name, ident in zip(images, ids, strict=True))
    key = hashlib.sha256(named.encode()).hexdigest()[:24]
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
    tar = IMAGE_CACHE / f"{key}.tar"
    if tar.is_file():
        os.utime(tar)
        return tar
    part = IMAGE_CACHE / f".{key}.{os.getpid()}.{secrets.token_hex(3)}.part"
    try:
        _docker("save", "-o", str(part), *images, env=_controller_env(), timeout=1800)
        os.replace(part, tar)
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    _prune_cache(keep=tar)
    return tar


def _prune_cache(keep: Path, max_age_days: float = 2.0) -> None:
    """Drop cached tars unused for a while (older image ids); keep the one just written."""
    cutoff = time.time() - max_age_days * 86400
    for old in IMAGE_CACHE.glob("*.tar"):
        with contextlib.suppress(OSError):
            if old != keep and old.stat().st_mtime < cutoff:
                old.unlink()


def prerequisites() -> None:
    """Skip (or fail under PAYCRAFT_STRICT=1) when a DinD host cannot be made here."""
    if _docker("version", "--format", "{{.Server.Version}}", check=False, env=_controller_env()).returncode != 0:
        missing("a running Docker engine")
    if _docker("compose", "version", check=False, env=_controller_env()).returncode != 0:
        missing("Docker Compose v2 plugin")
    if _docker("image", "inspect", HOST_IMAGE, check=False, env=_controller_env()).returncode != 0:
        missing(f"the test host image {HOST_IMAGE} (bash tests/hosts/build.sh)")
