import numpy as np
import pytest
import torch
from mpi4py import MPI

from pinn_lsr.lsr.jacobian import ModelJacobian
from pinn_lsr.lsr.residual import DataResidual, StackedResidual, block_weights


def test_block_weights():
    np.testing.assert_allclose(
        block_weights([1.0, 0.5], [30, 10]), [np.sqrt(40 / 30), np.sqrt(0.5 * 40 / 10)]
    )


def test_stacked_residual_weights_blocks_and_keeps_products_adjoint():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
    ).double()
    x1, x2 = torch.rand(30, 2, dtype=torch.float64), torch.rand(10, 2, dtype=torch.float64)
    blocks = [
        DataResidual.create(
            ModelJacobian(model, x), torch.ones(len(x), 1, dtype=torch.float64), comm=MPI.COMM_SELF
        )
        for x in (x1, x2)
    ]
    stacked = StackedResidual(blocks, [1.0, 0.5], comm=MPI.COMM_SELF)
    w = block_weights([1.0, 0.5], [30, 10])
    torch.testing.assert_close(
        stacked.value(), torch.cat([w[0] * blocks[0].value(), w[1] * blocks[1].value()])
    )
    T = torch.randn(stacked.jacobian.n_params, 3, dtype=torch.float64)
    W = torch.randn(40, 2, dtype=torch.float64)
    torch.testing.assert_close(W.T @ stacked.G(T), stacked.Gt(W).T @ T)
    streamed = torch.cat([GT for GT, _ in stacked.G_blocks(T)])
    torch.testing.assert_close(streamed, stacked.G(T))
    with pytest.raises(ValueError, match="one λ per block"):
        StackedResidual(blocks, [1.0], comm=MPI.COMM_SELF)
