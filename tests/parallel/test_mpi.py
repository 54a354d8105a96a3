import subprocess
import sys
from pathlib import Path

MPIRUN = Path(sys.executable).parent / "mpirun"

RAISE_ON_RANK_1 = """
from mpi4py import MPI
from pinn_lsr.parallel.mpi import abort_on_uncaught_exception
abort_on_uncaught_exception()
comm = MPI.COMM_WORLD
if comm.rank == 1:
    raise RuntimeError("only rank 1 fails")
comm.Barrier()  # rank 0 would wait here forever without the abort
"""


def test_exception_on_one_rank_aborts_the_job():
    result = subprocess.run(
        [str(MPIRUN), "-n", "2", sys.executable, "-c", RAISE_ON_RANK_1],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "only rank 1 fails" in result.stderr and "aborting all 2 ranks" in result.stderr


def test_raise_collectively_raises_the_given_error_or_nothing():
    import pytest
    from mpi4py import MPI

    from pinn_lsr.parallel.mpi import raise_collectively

    raise_collectively(MPI.COMM_SELF, None)
    with pytest.raises(TypeError, match="^bad shape$"):
        raise_collectively(MPI.COMM_SELF, "bad shape", TypeError)
