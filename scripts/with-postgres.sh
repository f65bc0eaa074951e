#!/usr/bin/env bash
# Run a command against a throw-away PostgreSQL server.
#
#   scripts/with-postgres.sh CMD [ARGS...]
#
# Starts a fresh cluster in a temporary directory (127.0.0.1 only, free port,
# unix sockets inside the temp dir, trust auth), creates database
# `immutrail_test`, exports IMMUTRAIL_TEST_PG_URL for CMD, and always stops the
# server and removes the directory afterwards. Exits with CMD's exit code.
#
# Without PostgreSQL binaries it installs Debian's `postgresql` (root + apt-get
# only). If they are still missing: with CI=true it fails; otherwise it warns
# and runs CMD without IMMUTRAIL_TEST_PG_URL (PostgreSQL tests then skip).
#
# Knobs:
#   IMMUTRAIL_PG_BINDIR=DIR     only look for initdb/pg_ctl in DIR
#   IMMUTRAIL_PG_NO_INSTALL=1   never try apt-get
#   IMMUTRAIL_PG_USER=NAME      system user that runs the server when we are root
#                               (default: immutrail-pg, created if missing)
set -euo pipefail

log() { printf 'with-postgres: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ $# -gt 0 ] || die "usage: $0 CMD [ARGS...]"

is_ci() { case "${CI:-}" in true | TRUE | True | 1 | yes) return 0 ;; *) return 1 ;; esac; }

# Print the first directory that holds both initdb and pg_ctl.
find_bindir() {
  local d candidates=()
  if [ -n "${IMMUTRAIL_PG_BINDIR:-}" ]; then
    candidates=("$IMMUTRAIL_PG_BINDIR")
  else
    if command -v initdb >/dev/null 2>&1; then
      candidates+=("$(dirname "$(readlink -f "$(command -v initdb)")")")
    fi
    # Debian/Ubuntu layout; newest major version first.
    while IFS= read -r d; do candidates+=("$d"); done < <(
      compgen -G '/usr/lib/postgresql/*/bin' | sort -t/ -k5,5 -rV || true
    )
  fi
  for d in "${candidates[@]}"; do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
      printf '%s\n' "$d"
      return 0
    fi
  done
  return 1
}

install_postgres() {
  [ -z "${IMMUTRAIL_PG_NO_INSTALL:-}" ] || return 1
  [ -z "${IMMUTRAIL_PG_BINDIR:-}" ] || return 1
  [ "$(id -u)" -eq 0 ] || return 1
  command -v apt-get >/dev/null 2>&1 || return 1
  log "PostgreSQL not found; installing Debian package 'postgresql'"
  apt-get update -qq </dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      postgresql </dev/null >/dev/null
}

BINDIR=$(find_bindir) || { install_postgres && BINDIR=$(find_bindir); } || BINDIR=
if [ -z "$BINDIR" ]; then
  if is_ci; then
    die "PostgreSQL (initdb, pg_ctl) not found and could not be installed; CI=true requires it" \
      "(searched: ${IMMUTRAIL_PG_BINDIR:-PATH and /usr/lib/postgresql/*/bin})"
  fi
  log "WARNING: PostgreSQL (initdb, pg_ctl) not found; running without IMMUTRAIL_TEST_PG_URL" \
    "(PostgreSQL tests will be skipped). Install it, e.g. 'apt-get install postgresql'."
  unset IMMUTRAIL_TEST_PG_URL
  exec "$@"
fi

# PostgreSQL refuses to run as root: use an unprivileged system user then.
if [ "$(id -u)" -eq 0 ]; then
  PATH=$PATH:/usr/sbin:/sbin # useradd, runuser
  PG_OS_USER=${IMMUTRAIL_PG_USER:-immutrail-pg}
  if ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
    # A concurrent run may create it first.
    useradd --system --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$PG_OS_USER" 2>/dev/null || id -u "$PG_OS_USER" >/dev/null ||
      die "cannot create system user $PG_OS_USER"
  fi
  TMPBASE=/tmp # must be traversable by $PG_OS_USER
else
  PG_OS_USER=
  TMPBASE=${TMPDIR:-/tmp}
fi

PGTMP=$(mktemp -d "$TMPBASE/immutrail-pg.XXXXXX")
PGDATA_DIR=$PGTMP/data
PGLOG=$PGTMP/server.log

# Run a PostgreSQL binary as the server's owner, from a directory it can read.
as_pg() {
  if [ -n "$PG_OS_USER" ]; then
    (cd "$PGTMP" && runuser -u "$PG_OS_USER" -- "$@")
  else
    "$@"
  fi
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -f "$PGDATA_DIR/postmaster.pid" ]; then
    as_pg "$BINDIR/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 30 stop >/dev/null 2>&1 ||
      as_pg "$BINDIR/pg_ctl" -D "$PGDATA_DIR" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
      log "WARNING: could not stop the server in $PGDATA_DIR"
  fi
  rm -rf "$PGTMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ -z "$PG_OS_USER" ] || chown "$PG_OS_USER" "$PGTMP"
chmod 700 "$PGTMP"

DB_USER=immutrail
DB_NAME=immutrail_test

if ! as_pg "$BINDIR/initdb" -D "$PGDATA_DIR" --auth=trust --username="$DB_USER" \
  --encoding=UTF8 --locale=C >"$PGTMP/initdb.log" 2>&1; then
  cat "$PGTMP/initdb.log" >&2
  die "initdb failed"
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The port is free when picked but may be taken before the server binds it: retry.
started=
for _ in 1 2 3; do
  PORT=$(free_port)
  # Appended settings override earlier ones (the last occurrence wins).
  cat >>"$PGDATA_DIR/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$PGTMP'
fsync = on
EOF
  # -w: wait until the server accepts connections (at most 60 s).
  if as_pg "$BINDIR/pg_ctl" -D "$PGDATA_DIR" -l "$PGLOG" -w -t 60 start >/dev/null; then
    started=1
    break
  fi
  log "server did not start on port $PORT; retrying"
done
if [ -z "$started" ]; then
  tail -n 30 "$PGLOG" >&2 || true
  die "could not start PostgreSQL (log above)"
fi

"$BINDIR/createdb" -h 127.0.0.1 -p "$PORT" -U "$DB_USER" "$DB_NAME"

export IMMUTRAIL_TEST_PG_URL="postgresql://$DB_USER@127.0.0.1:$PORT/$DB_NAME"
log "$("$BINDIR/pg_ctl" --version | sed "s/^pg_ctl (PostgreSQL)/PostgreSQL/") ready: $IMMUTRAIL_TEST_PG_URL"

set +e
"$@"
rc=$?
set -e
exit "$rc"
