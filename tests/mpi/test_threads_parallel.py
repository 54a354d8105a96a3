"""Threads per rank under 2 ranks on one node: the cores they share are divided between them."""

from pinn_lsr.parallel import threads
from pinn_lsr.parallel.threads import threads_per_rank


def test_ranks_sharing_cores_divide_them(comm, monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: {0, 1, 2, 3})
    assert threads_per_rank(comm) == (2, 4, 2)
    monkeypatch.setattr(threads, "available_cores", lambda: {0, 1, 2})
    assert threads_per_rank(comm) == (1, 3, 2)  # never more threads than cores in all


def test_ranks_bound_to_their_own_cores_use_all_of_them(comm, monkeypatch):
    own = {0, 1} if comm.rank == 0 else {2, 3}  # mpirun -bind-to core:2
    monkeypatch.setattr(threads, "available_cores", lambda: own)
    assert threads_per_rank(comm) == (2, 2, 1)
