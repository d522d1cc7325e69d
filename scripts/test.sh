#!/usr/bin/env bash
# The test suite: set up, then run pytest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
cd "$repo"
# Two workers, a test file each at a time (a file's trained fixtures are made once), one thread
# each (and in the processes the tests start): the tests' small models leave a second thread of
# one process mostly idle. `-n 0` runs everything in one process.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" NUMBA_NUM_THREADS="${NUMBA_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest -q -n 2 --dist loadfile "$@"
