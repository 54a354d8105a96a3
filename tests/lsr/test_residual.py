import pytest
import torch
from mpi4py import MPI

from pinn_lsr.lsr.jacobian import ModelJacobian
from pinn_lsr.lsr.residual import DataResidual


def small_residual(relative: bool) -> tuple:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    ).double()
    x = torch.rand(20, 2, dtype=torch.float64)
    y = torch.rand(20, 3, dtype=torch.float64) + 0.5
    jacobian = ModelJacobian(model, x, chunk_samples=7)
    return DataResidual.create(jacobian, y, relative=relative, comm=MPI.COMM_SELF), model, x, y


@pytest.mark.parametrize("relative", [False, True])
def test_value_weights_rows_and_products_are_adjoint(relative):
    residual, model, x, y = small_residual(relative)
    with torch.no_grad():
        error = model(x) - y
    if relative:  # squared residual = sum of squared relative errors per sample
        error = error / torch.linalg.vector_norm(y, dim=1, keepdim=True)
    torch.testing.assert_close(residual.value(), error.reshape(-1))
    T = torch.randn(residual.jacobian.n_params, 4, dtype=torch.float64)
    W = torch.randn(residual.jacobian.n_rows, 5, dtype=torch.float64)
    torch.testing.assert_close(W.T @ residual.G(T), residual.Gt(W).T @ T)
    streamed = torch.cat([GT for GT, _ in residual.G_blocks(T)])
    torch.testing.assert_close(streamed, residual.G(T))
