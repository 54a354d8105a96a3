"""The MPI helpers of pinn_lsr.parallel.device on CPU tensors: in place through a NumPy view
(contiguous) and through a host copy (non-contiguous: the path device tensors take)."""

import pytest
import torch
from mpi4py import MPI

from pinn_lsr.parallel.device import allgather_rows_, allreduce_, broadcast_

COMM = MPI.COMM_WORLD


def layouts(t: torch.Tensor) -> dict:
    """``t`` contiguous, and a non-contiguous tensor with the same values."""
    return {"view": t.clone(), "host copy": t.T.contiguous().T}


@pytest.mark.parametrize("layout", ["view", "host copy"])
def test_allreduce_and_broadcast_in_place(layout):
    values = torch.arange(12.0, dtype=torch.float64).reshape(3, 4) * (COMM.rank + 1)
    t = layouts(values)[layout]
    assert t.is_contiguous() == (layout == "view")
    assert allreduce_(t, COMM) is t
    total = sum(range(1, COMM.size + 1))
    torch.testing.assert_close(t, torch.arange(12.0, dtype=torch.float64).reshape(3, 4) * total)
    t = layouts(values.float())[layout]
    broadcast_(t, COMM)
    torch.testing.assert_close(t, torch.arange(12.0).reshape(3, 4))


@pytest.mark.parametrize("layout", ["view", "host copy"])
def test_allgather_rows_fills_every_ranks_rows(layout):
    counts = [2 + r for r in range(COMM.size)]
    first = sum(counts[: COMM.rank])
    expected = torch.arange(sum(counts) * 3, dtype=torch.float32).reshape(-1, 3)
    t = torch.zeros_like(expected)
    t[first : first + counts[COMM.rank]] = expected[first : first + counts[COMM.rank]]
    t = layouts(t)[layout]
    allgather_rows_(t, counts, COMM)
    torch.testing.assert_close(t, expected)
