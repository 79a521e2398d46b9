#!/bin/bash
# Entrypoint of the reference db image (the supabase/postgres contract).
#
# Empty data directory: initdb with POSTGRES_PASSWORD as the postgres
# password (scram for TCP, trust on the local socket), then run every
# /docker-entrypoint-initdb.d/*.sql and *.sh against POSTGRES_DB on a
# socket-only server. The password is baked in at this point only: a
# different POSTGRES_PASSWORD on a later start changes nothing, and TCP
# clients using it fail with "password authentication failed".
set -Eeuo pipefail

log() { echo "db-entrypoint: $*" >&2; }

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
SOCKET_DIR=/var/run/postgresql
# The temporary server of the first boot listens on a private socket only, so
# that "pg_isready -U postgres" (the compose healthcheck) stays false until
# the bootstrap is done and the real server is up.
INIT_SOCKET_DIR=/tmp/pcref-initdb
# Written once the first-start bootstrap has finished.
DONE_MARKER=reference-bootstrap.done

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" "$SOCKET_DIR"
    if [ "$(stat -c %U "$PGDATA")" != postgres ]; then
        chown -R postgres:postgres "$PGDATA"
    fi
    chown postgres:postgres "$SOCKET_DIR"
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

# "postgres -c ..." and bare "-c ..." both start the server with extra options;
# anything else is run as given (e.g. "bash").
if [ "$#" -eq 0 ] || [ "$1" = postgres ]; then
    [ "$#" -gt 0 ] && shift
elif [ "${1:0:1}" != - ]; then
    exec "$@"
fi

POSTGRES_DB="${POSTGRES_DB:-postgres}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        log "ERROR: the database is uninitialized and POSTGRES_PASSWORD is not set."
        log "Set POSTGRES_PASSWORD (PAYCRAFT_DB_PASSWORD in .env) and start the container again."
        exit 1
    fi
    log "empty data directory $PGDATA: running initdb"
    initdb -D "$PGDATA" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 \
        --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") >&2
    # initdb only allows loopback over TCP: open every address, password required.
    printf '%s\n' '# reference db image: any address over TCP, with the password' \
        'host all all all scram-sha-256' >> "$PGDATA/pg_hba.conf"

    mkdir -p "$INIT_SOCKET_DIR"
    pg_ctl -D "$PGDATA" -w -t 60 -o "-c listen_addresses='' -c unix_socket_directories=$INIT_SOCKET_DIR" start >&2

    if [ "$POSTGRES_DB" != postgres ]; then
        log "creating database $POSTGRES_DB"
        psql -v ON_ERROR_STOP=1 -h "$INIT_SOCKET_DIR" -U postgres -d postgres -q \
            -v db="$POSTGRES_DB" -c 'CREATE DATABASE :"db"' >&2
    fi

    export PGHOST="$INIT_SOCKET_DIR" PGUSER=postgres PGDATABASE="$POSTGRES_DB"
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sql)
                log "running $f"
                psql -v ON_ERROR_STOP=1 -q -X \
                    -v pgpass="$POSTGRES_PASSWORD" -v jwt_secret="${JWT_SECRET:-}" \
                    -v jwt_exp="${JWT_EXP:-3600}" -f "$f" >&2 ;;
            *.sh)
                log "running $f"
                # shellcheck disable=SC1090
                . "$f" ;;
            *) if [ -e "$f" ]; then log "ignoring $f"; fi ;;
        esac
    done
    unset PGHOST PGUSER PGDATABASE

    pg_ctl -D "$PGDATA" -m fast -w stop >&2
    date -u +%FT%TZ > "$PGDATA/$DONE_MARKER"
    log "initialisation complete"
else
    log "data directory $PGDATA already initialised: POSTGRES_PASSWORD is not applied again"
    if [ ! -f "$PGDATA/$DONE_MARKER" ]; then
        log "WARNING: this data directory has no record of a finished bootstrap (an earlier first start was"
        log "interrupted, or another image made it): roles and the auth schema may be missing. To start over:"
        log "docker compose down && docker volume rm selfhost_paycraft-db && docker compose up -d db"
    fi
fi

exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories="$SOCKET_DIR" "$@"
