"""Threads per MPI rank from the cores this process may actually use.

``os.cpu_count()`` counts the machine's cores, but a process may be confined to fewer (taskset,
a batch scheduler's cpuset, the launcher's binding) and the ranks on one node share them.
Oversubscription is expensive: a serial run on a loaded 2-core machine took 146-222 s with the
default thread count and 14.6 s with one thread. Only the standard library is imported here, so
the count can be set before numpy and torch start their thread pools.
"""

import os
import sys

from mpi4py import MPI

#: the thread pools of OpenMP (torch, MUMPS), OpenBLAS and MKL read these when first loaded
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def available_cores() -> set[int]:
    """The CPUs this process may run on (its affinity mask; all of them where the platform has
    no affinity). Local."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def threads_per_rank(comm: MPI.Comm) -> tuple[int, int, int]:
    """``(threads, cores, ranks)``: this rank's CPUs (``cores``) divided among the ``ranks`` on
    its node whose CPUs overlap them (itself included), at least one thread. Collective."""
    mine = available_cores()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        sharing = sum(1 for other in node.allgather(mine) if other & mine)
    finally:
        node.Free()
    return max(1, len(mine) // sharing), len(mine), sharing


def share_cores(comm: MPI.Comm) -> str:
    """Give each rank its share of the available cores for OpenMP, BLAS and torch, unless the
    user set ``OMP_NUM_THREADS``; return a sentence saying what was chosen, for the log.
    Collective. Call it before numpy and torch are imported where possible: libraries loaded
    later read the variables; torch, if already loaded, is told directly."""
    if "OMP_NUM_THREADS" in os.environ:
        return f"threads per rank: OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} (environment)"
    threads, cores, ranks = threads_per_rank(comm)
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, str(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return (
        f"threads per rank: {threads} ({cores} core(s) available to this process, shared by "
        f"{ranks} MPI rank(s) on this node)"
    )
