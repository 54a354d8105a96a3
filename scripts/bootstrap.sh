#!/usr/bin/env bash
# Create or refresh .venv with a Python >= 3.12 and install pinn_lsr with its dev and bench extras.
#
# The venv is rebuilt when it is missing, broken, or older than pyproject.toml (stale).
# Python is searched in this order: $PINN_LSR_PYTHON, python3.12 and python3.13 on PATH,
# then every interpreter pyenv knows (`pyenv prefix`), oldest first: 3.12 is the version checked with dolfinx-solver-real.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP="$VENV/.installed"

python_ok() {  # $1: interpreter; succeeds when it runs and is >= 3.12
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
    local tried=()
    local candidates=()
    [[ -n "${PINN_LSR_PYTHON:-}" ]] && candidates+=("$PINN_LSR_PYTHON")
    candidates+=(python3.12 python3.13)
    if command -v pyenv >/dev/null 2>&1; then
        local v
        for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[2-9]|[2-9][0-9])' | sort -V); do
            candidates+=("$(pyenv prefix "$v" 2>/dev/null)/bin/python")
        done
    fi
    local c
    for c in "${candidates[@]}"; do
        tried+=("$c")
        if python_ok "$c"; then echo "$c"; return 0; fi
    done
    {
        echo "error: no Python >= 3.12 found (dolfinx-solver-real needs it)."
        echo "looked for: \$PINN_LSR_PYTHON, python3.12 and python3.13 on PATH, and pyenv versions >= 3.12"
        echo "tried: ${tried[*]}"
        echo "install one (e.g. 'pyenv install 3.12') or set PINN_LSR_PYTHON=/path/to/python3.12"
    } >&2
    return 1
}

if [[ -f "$STAMP" && "$STAMP" -nt pyproject.toml ]] && python_ok "$VENV/bin/python"; then
    exit 0
fi

PY=$(find_python)
echo "bootstrap: creating $VENV with $PY ($("$PY" --version 2>&1))"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
# Some machines' pip configuration names local index folders that lack most packages; pip
# then prints one "Location ... is ignored" warning per package. Those lines are dropped.
quiet_pip() { "$VENV/bin/python" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }; }
quiet_pip install --quiet --upgrade pip
quiet_pip install --quiet -e '.[dev,bench]'
touch "$STAMP"
echo "bootstrap: $VENV ready"
