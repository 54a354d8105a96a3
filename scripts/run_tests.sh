#!/usr/bin/env bash
# Lint, serial tests, then tests/mpi under `mpirun -n 2`; fails if any fails.
# Under MPI rank 0 prints to the terminal and the other ranks to $LOGDIR/rank<N>.log,
# shown only when the run fails, so the report is not printed twice. A test that hangs ends its
# process after pytest's faulthandler_timeout (pyproject.toml), which ends every rank; a hang
# outside any test (collection, MPI_Finalize) ends the MPI run after $MPI_SUITE_TIMEOUT seconds.
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
LOGDIR=$(mktemp -d)
export LOGDIR

status=0
echo "== lint (ruff check, ruff format --check; configured in pyproject.toml)"
.venv/bin/ruff check --quiet . && .venv/bin/ruff format --check --quiet . || status=1
echo "== serial tests"
.venv/bin/python -m pytest tests --ignore=tests/mpi "$@" || status=$?
echo "== MPI tests (mpirun -n 2)"
timeout --kill-after=30 "${MPI_SUITE_TIMEOUT:-3600}" .venv/bin/mpirun -n 2 bash -c '
    if [[ "${PMI_RANK:-0}" == 0 ]]; then
        exec .venv/bin/python -m pytest -p no:cacheprovider tests/mpi "$@"
    else
        exec .venv/bin/python -m pytest -p no:cacheprovider tests/mpi "$@" > "$LOGDIR/rank$PMI_RANK.log" 2>&1
    fi' mpi_pytest "$@" || { status=1; cat "$LOGDIR"/rank*.log 2>/dev/null; }
rm -rf "$LOGDIR"
exit $status
