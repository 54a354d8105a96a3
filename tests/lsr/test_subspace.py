"""The subspaces of pinn_lsr.lsr.subspace: randomized (the paper's recipe), Krylov and random:
shapes, orthogonality or scaling, and determinism by seed."""

import numpy as np
import pytest
import torch
from mpi4py import MPI

from pinn_lsr.lsr.jacobian import ModelJacobian
from pinn_lsr.lsr.residual import DataResidual
from pinn_lsr.lsr.subspace import (
    OMEGA_BLOCK,
    krylov_subspace,
    random_matrix,
    random_subspace,
    randomized_subspace,
)
from pinn_lsr.models import build_model
from pinn_lsr.models.parameters import set_precision

COMM = MPI.COMM_SELF
EPS = 100 * np.finfo(np.float64).eps


def mlp_residual(n=120, seed=0):
    torch.manual_seed(seed)
    model = set_precision(
        build_model("mlp", in_features=2, out_features=1, width=8, depth=2, activation="tanh"),
        torch.float64,
    )
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1
    y = torch.sin(3 * x[:, :1]) * x[:, 1:]
    return DataResidual.create(ModelJacobian(model, x), y, comm=COMM)


def linear_residual(n=60, features=5):
    """A linear model: G is the design matrix [X 1] (n × 6), of full column rank."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, features, generator=g, dtype=torch.float64)
    model = torch.nn.Linear(features, 1).double()
    return DataResidual.create(ModelJacobian(model, x), x.sum(dim=1, keepdim=True), comm=COMM)


def test_random_matrix_is_the_same_for_any_block_split_and_differs_by_seed():
    whole = random_matrix(30, 3 * OMEGA_BLOCK, distribution="gaussian", seed=4, dtype=torch.float64)
    part = random_matrix(
        30, 70, distribution="gaussian", seed=4, dtype=torch.float64, first=OMEGA_BLOCK - 5
    )
    torch.testing.assert_close(part, whole[:, OMEGA_BLOCK - 5 : OMEGA_BLOCK + 65])
    other = random_matrix(30, 10, distribution="gaussian", seed=5, dtype=torch.float64)
    assert not torch.equal(other, whole[:, :10])
    uniform = random_matrix(200, 100, distribution="uniform", seed=0, dtype=torch.float32)
    assert uniform.dtype == torch.float32 and uniform.abs().max() <= 1 and uniform.min() < -0.9
    assert random_matrix(5, 0, distribution="gaussian", seed=0, dtype=torch.float64).shape == (5, 0)
    with pytest.raises(ValueError, match="unknown distribution"):
        random_matrix(5, 2, distribution="normal", seed=0, dtype=torch.float64)


@pytest.mark.parametrize("power_iterations", [0, 1])
def test_randomized_subspace_has_rank_columns_and_unscaled_ones_are_orthonormal(power_iterations):
    residual = mlp_residual()
    m = residual.jacobian.n_params
    basis = randomized_subspace(
        residual, 12, comm=COMM, scaled=False, power_iterations=power_iterations
    )
    assert basis.V.shape == (m, 12) and basis.V.dtype == torch.float64
    assert len(basis.sketch_singular_values) == 12 + 10
    assert {"sketch", "projection", "svd"} <= set(basis.seconds)
    V = basis.V.numpy()
    np.testing.assert_allclose(V.T @ V, np.eye(12), atol=EPS * m)


def test_scaled_randomized_subspace_makes_g_v_orthonormal_when_the_sketch_holds_g():
    """With r + p >= m the sketch spans G's row space, so V = Vh[:r]ᵀ / S[:r] gives G V = U[:, :r]
    and the sketch's singular values are G's."""
    residual = linear_residual()
    G = residual.jacobian.full().numpy()
    basis = randomized_subspace(residual, 4, comm=COMM)  # k = min(4 + 10, 6) = 6 = m
    GV = G @ basis.V.numpy()
    np.testing.assert_allclose(GV.T @ GV, np.eye(4), atol=1e-10)
    np.testing.assert_allclose(
        basis.sketch_singular_values, np.linalg.svd(G, compute_uv=False), rtol=1e-10
    )


def test_randomized_subspace_is_determined_by_its_seed():
    residual = mlp_residual()
    first, again = (randomized_subspace(residual, 8, comm=COMM, seed=3) for _ in range(2))
    other = randomized_subspace(residual, 8, comm=COMM, seed=4)
    assert torch.equal(first.V, again.V)
    assert not torch.allclose(first.V, other.V)


def test_krylov_subspace_is_orthonormal_and_starts_from_the_gradient():
    residual = mlp_residual()
    G, f = residual.jacobian.full().numpy(), residual.value().numpy()
    basis = krylov_subspace(residual, 6, comm=COMM)
    Q = basis.V.numpy()
    assert Q.shape == (residual.jacobian.n_params, 6) and len(basis.sketch_singular_values) == 6
    np.testing.assert_allclose(Q.T @ Q, np.eye(6), atol=1e-10)
    gradient = G.T @ f
    np.testing.assert_allclose(
        np.abs(Q[:, 0]), np.abs(gradient) / np.linalg.norm(gradient), atol=1e-10
    )
    # the columns span K_6(GᵀG, Gᵀf): each Krylov vector lies in span(Q)
    krylov = np.column_stack([np.linalg.matrix_power(G.T @ G, k) @ gradient for k in range(6)])
    krylov /= np.linalg.norm(krylov, axis=0)
    np.testing.assert_allclose(Q @ (Q.T @ krylov[:, :3]), krylov[:, :3], atol=1e-8)
    again = krylov_subspace(residual, 6, comm=COMM)
    assert torch.equal(basis.V, again.V)  # no randomness at all


def test_random_subspace_is_orthonormal_typed_and_determined_by_its_seed():
    basis = random_subspace(50, 7, seed=1, dtype=torch.float32)
    assert basis.V.shape == (50, 7) and basis.V.dtype == torch.float32 and basis.seconds == {}
    V = basis.V.double().numpy()
    np.testing.assert_allclose(V.T @ V, np.eye(7), atol=1e-6)
    assert torch.equal(basis.V, random_subspace(50, 7, seed=1, dtype=torch.float32).V)
    assert not torch.equal(basis.V, random_subspace(50, 7, seed=2, dtype=torch.float32).V)
