#!/usr/bin/env bash
# Tests must pass alone and in any order (no state left by one test for another: peak RSS, RNGs,
# Hydra's global state, the working folder). This runs the suite in reverse order, in two random
# orders (pytest-randomly), and every test file alone, each in a fresh process; it stops at the
# first failure. About 20 minutes on 2 cores. Usage: scripts/check_test_isolation.sh [python]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
run() { echo "== $*"; "$PY" -m pytest -q -p no:cacheprovider "$@" | tail -n 1; }
run -p no:randomly --reverse-order
for seed in 1 2; do run -p randomly --randomly-seed="$seed"; done
for file in $(find tests -name 'test_*.py' | sort); do run -p no:randomly "$file"; done
echo "all orders passed"
