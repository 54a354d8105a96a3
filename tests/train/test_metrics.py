import numpy as np
import pytest
import torch
from mpi4py import MPI

from pinn_lsr.train.metrics import error_summary


def test_error_summary_values():
    y = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    prediction = torch.tensor([[3.0, 5.0], [1.0, 1.0]])
    summary = error_summary(
        lambda x: prediction[x], torch.arange(2), y, MPI.COMM_SELF, batch_size=1
    )
    assert summary["mse"] == pytest.approx(2 / 4)
    assert summary["rel_l2"] == pytest.approx((1 / 5 + 1 / 1) / 2)
    assert summary["global_rel_l2"] == pytest.approx(np.sqrt(2 / 26))
