#!/usr/bin/env bash
# Create the project's virtualenv with Python 3.11+, installing Debian's venv support if needed.
set -euo pipefail
python="${1:-python3}"
venv="${2:-.venv}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "Jobplane needs Python 3.11 or newer; '$python' is $("$python" --version 2>&1 || echo missing)." >&2
    echo "Install it (Debian: apt-get install python3) or run: make PYTHON=/path/to/python3.11 ..." >&2
    exit 1
fi
if ! "$python" -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing python3-venv (Debian ships venv separately)" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        "$python" -m venv "$venv"
    else
        echo "'$python -m venv' failed: install the venv module (Debian: sudo apt-get install python3-venv)" >&2
        exit 1
    fi
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip setuptools wheel
