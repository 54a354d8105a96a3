import subprocess
import sys
import time
from pathlib import Path

MPIRUN = Path(sys.executable).parent / "mpirun"
ROOT = Path(__file__).parents[2]

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


HANGS_ON_RANK_0 = """
from mpi4py import MPI

def test_rank_0_waits_for_rank_1_forever():
    if MPI.COMM_WORLD.rank == 0:
        MPI.COMM_WORLD.Barrier()
"""


def test_a_hanging_mpi_test_fails_within_its_time_limit(tmp_path):
    (tmp_path / "test_hang.py").write_text(HANGS_ON_RANK_0)
    # the project's pytest configuration (faulthandler_exit_on_timeout), a 3 s limit
    pytest = ["-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "-o", "faulthandler_timeout=3"]
    start = time.perf_counter()
    result = subprocess.run(
        [str(MPIRUN), "-n", "2", sys.executable, *pytest, "-p", "no:cacheprovider"]
        + ["--rootdir", str(tmp_path), str(tmp_path / "test_hang.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and time.perf_counter() - start < 60
    assert "Timeout (0:00:03)!" in result.stderr and "test_hang.py" in result.stderr
