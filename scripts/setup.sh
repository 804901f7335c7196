#!/usr/bin/env bash
# Installs and starts what sqlarena's tests and demo need on a fresh
# Debian/Ubuntu machine with Rust: PostgreSQL (system package, as root) and
# the MongoDB wire-protocol test server nx-27017 and schemathesis, which
# checks the API against its OpenAPI document (PyPI, into .venv/), and
# Chromium with chromedriver for the web console's browser tests (apt-get).
#
# Writes .sqlarena.env with SQLARENA_TEST_POSTGRES_URL, the PostgreSQL admin
# URL the tests and the demo use. Idempotent.
#
# PostgreSQL: uses the server at 127.0.0.1:5432 when user `postgres` can log
# in without a password; otherwise starts a private cluster under .pg/ on
# port 55432 (trust auth on loopback, owned by this repository).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
env_file="$root/.sqlarena.env"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo is missing: install Rust from https://rustup.rs"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

pg_bin_dir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] && echo "$dir"
}

# --- PostgreSQL -------------------------------------------------------------
if [ -z "$(pg_bin_dir)" ] || ! command -v psql >/dev/null; then
    say "PostgreSQL is missing: installing it with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client \
        || die "could not install PostgreSQL; run as root: apt-get install -y postgresql postgresql-client"
fi

system_url="postgres://postgres@127.0.0.1:5432/postgres"
pg_ok() { psql "$1" -Atqc 'select 1' >/dev/null 2>&1; }

if ! pg_ok "$system_url" && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    for version in $(ls /etc/postgresql); do
        say "starting the system PostgreSQL cluster $version/main"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
    done
    for _ in $(seq 1 20); do pg_ok "$system_url" && break; sleep 0.5; done
fi

if pg_ok "$system_url"; then
    postgres_url="$system_url"
    say "using PostgreSQL at 127.0.0.1:5432"
else
    bin="$(pg_bin_dir)" || die "PostgreSQL binaries not found under /usr/lib/postgresql"
    data="$root/.pg/data"
    port=55432
    postgres_url="postgres://postgres@127.0.0.1:$port/postgres"
    run_pg() {
        # initdb and postgres refuse to run as root: use the postgres user then.
        if [ "$(id -u)" = 0 ]; then
            mkdir -p "$root/.pg" && chown postgres "$root/.pg"
            su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
        else
            "$@"
        fi
    }
    if [ ! -f "$data/PG_VERSION" ]; then
        say "starting a private PostgreSQL cluster in .pg/ on port $port"
        run_pg "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    if ! pg_ok "$postgres_url"; then
        run_pg "$bin/pg_ctl" -D "$data" -l "$root/.pg/server.log" -w \
            -o "-c listen_addresses=127.0.0.1 -p $port -k /tmp -c max_connections=300" start >/dev/null
    fi
    pg_ok "$postgres_url" || die "PostgreSQL did not start; see .pg/server.log"
fi

# Enough connections for parallel tests and two graders.
max_connections=$(psql "$postgres_url" -Atqc 'show max_connections')
if [ "$max_connections" -lt 100 ]; then
    say "warning: max_connections is $max_connections; tests may need 100 or more"
fi

# --- MongoDB wire-protocol test server ---------------------------------------
"$root/scripts/mongo-test-server.sh"

# --- schemathesis (tests/tests/openapi.rs) -----------------------------------
# Pinned: its checks and CLI change between releases. The venv exists now
# (mongo-test-server.sh made it).
schemathesis_version=4.32.5
if [ "$("$root/.venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $schemathesis_version" ]; then
    say "installing schemathesis $schemathesis_version into .venv"
    "$root/.venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version" \
        || die "could not install schemathesis from PyPI"
fi

# --- Chromium and chromedriver (tests/tests/console.rs) -----------------------
# The web console's tests drive a real headless Chromium through
# chromedriver: Debian's packages, never a browser downloaded by a crate.
if ! command -v chromedriver >/dev/null || ! { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }; then
    say "Chromium or chromedriver is missing: installing chromium and chromium-driver with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
        || die "could not install Chromium; run as root: apt-get install -y chromium chromium-driver"
fi

cat > "$env_file" <<ENV
export SQLARENA_TEST_POSTGRES_URL=$postgres_url
ENV
say "ready: wrote $env_file"
