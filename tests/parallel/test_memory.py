import subprocess
import sys

from mpi4py import MPI

from pinn_lsr.parallel.memory import local_peak_memory_mb, peak_memory_mb

# in a fresh process: in the test session freed memory may stay resident (retain_freed_memory),
# and a new allocation then reuses it without raising the peak
ALLOCATE_AND_RESET = """
import numpy as np
from pinn_lsr.parallel.memory import local_peak_memory_mb, reset_peak_memory
if not reset_peak_memory():
    raise SystemExit(3)
before = local_peak_memory_mb()  # the resident memory now
block = np.ones(50 * 2**20 // 8)  # 50 MB, touched
assert local_peak_memory_mb() >= before + 40, (local_peak_memory_mb(), before)
del block
assert reset_peak_memory() and local_peak_memory_mb() < before + 40
"""


def test_peak_counts_an_allocation_and_a_reset_forgets_it():
    result = subprocess.run([sys.executable, "-c", ALLOCATE_AND_RESET], capture_output=True)
    assert result.returncode in (0, 3), result.stderr.decode()[-2000:]  # 3: cannot reset here


def test_the_communicator_peak_is_the_largest_rank_peak():
    local = local_peak_memory_mb()
    assert peak_memory_mb(MPI.COMM_WORLD) >= local
