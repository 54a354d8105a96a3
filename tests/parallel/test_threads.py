import os

import torch
from mpi4py import MPI

from pinn_lsr.parallel import threads
from pinn_lsr.parallel.threads import THREAD_VARIABLES, share_cores, threads_per_rank


def test_a_serial_process_uses_the_cores_of_its_affinity_mask(monkeypatch):
    assert threads_per_rank(MPI.COMM_SELF) == (len(os.sched_getaffinity(0)),) * 2 + (1,)
    monkeypatch.setattr(threads, "available_cores", lambda: {0, 2, 5})  # taskset -c 0,2,5
    assert threads_per_rank(MPI.COMM_SELF) == (3, 3, 1)


def test_share_cores_sets_every_pool_and_says_so_unless_the_user_chose(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "available_cores", lambda: {0, 1, 2})
    for variable in THREAD_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    try:
        note = share_cores(MPI.COMM_SELF)
        assert note == (
            "threads per rank: 3 (3 core(s) available to this process, shared by 1 MPI rank(s) "
            "on this node)"
        )
        assert all(os.environ[v] == "3" for v in THREAD_VARIABLES)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert share_cores(MPI.COMM_SELF) == "threads per rank: OMP_NUM_THREADS=1 (environment)"
