#!/bin/sh
# Installs nx-27017 (a MongoDB wire-protocol server backed by SQLite, from
# PyPI) into .venv/ at the repository root, for the MongoDB store tests.
# Idempotent: does nothing when it is already installed.
#
# The tests start the server themselves (tests/src/mongo.rs); set
# SQLARENA_TEST_MONGODB_URI to run them against a real mongod instead.
set -eu

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"

if [ -x "$venv/bin/nx-27017" ]; then
    echo "nx-27017 already installed in $venv"
    exit 0
fi

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else return 1; fi
}

# A fresh Debian/Ubuntu has python3 but not always its venv module.
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "python3 with venv is missing: installing it with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null \
        || {
            echo "could not install python3-venv; run as root: apt-get install -y python3 python3-venv" >&2
            exit 1
        }
fi

if [ ! -x "$venv/bin/pip" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" || {
        echo "python3 -m venv failed: install python3-venv (apt-get install python3-venv)" >&2
        exit 1
    }
fi

"$venv/bin/pip" install --quiet --disable-pip-version-check nx-27017
"$venv/bin/nx-27017" --help >/dev/null
echo "nx-27017 installed in $venv"
