import numpy as np
import pytest
from mpi4py import MPI

from pinn_lsr.parallel.memory import local_peak_memory_mb, peak_memory_mb, reset_peak_memory


def test_peak_counts_an_allocation_and_a_reset_forgets_it():
    if not reset_peak_memory():
        pytest.skip("this system cannot reset the peak")
    before = local_peak_memory_mb()  # the resident memory now
    block = np.ones(50 * 2**20 // 8)  # 50 MB, touched
    assert local_peak_memory_mb() >= before + 40
    del block
    assert reset_peak_memory() and local_peak_memory_mb() < before + 40
    local = local_peak_memory_mb()
    assert peak_memory_mb(MPI.COMM_WORLD) >= local  # the largest over the ranks
