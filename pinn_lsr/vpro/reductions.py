"""Sums over MPI ranks of torch tensors, and this rank's share of globally indexed samples."""

import numpy as np
import torch
from mpi4py import MPI


def allreduce_sum(tensor: torch.Tensor, comm: MPI.Comm) -> torch.Tensor:
    """Sum of ``tensor`` (any shape, float64 or float32) over the ranks of ``comm``. Collective.

    Returns a new tensor, identical on every rank; serial communicators return ``tensor`` itself.
    """
    if comm.size == 1:
        return tensor
    buffer = np.ascontiguousarray(tensor.detach().numpy())
    total = np.empty_like(buffer)
    comm.Allreduce(buffer, total, op=MPI.SUM)
    return torch.from_numpy(total)


def sample_offset(n_local: int, comm: MPI.Comm) -> int:
    """Global index of this rank's first sample when samples are numbered rank by rank.
    Collective."""
    return int(comm.exscan(n_local) or 0) if comm.size > 1 else 0
