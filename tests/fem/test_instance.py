import dolfinx_solver  # noqa: F401
import numpy as np
import pytest
from mpi4py import MPI
from petsc4py import PETSc

from pinn_lsr.fem.instance import LinearInstance

COMM = MPI.COMM_SELF


def petsc_matrix(M: np.ndarray) -> PETSc.Mat:
    A = PETSc.Mat().createAIJ(M.shape, comm=COMM)
    A.setUp()
    rows, cols = np.nonzero(M)
    for i, j in zip(rows, cols):
        A.setValue(i, j, M[i, j])
    A.assemble()
    return A


@pytest.fixture
def system():
    """A 6 × 6 non-symmetric tridiagonal A, b = A 1, the SPD weighting S = tridiag(-1, 2, -1)."""
    n = 6
    A = 4 * np.eye(n) + np.diag(np.full(n - 1, -1.0), 1) + np.diag(np.full(n - 1, -2.0), -1)
    S = 2 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1)
    b = PETSc.Vec().createWithArray(A @ np.ones(n), comm=COMM)
    instance = LinearInstance(petsc_matrix(A), b, petsc_matrix(S))
    yield instance, A, S
    instance.destroy()


def test_residual_vanishes_at_the_solution_and_is_affine(system):
    instance, A, _ = system
    u = np.random.default_rng(0).standard_normal(6)
    np.testing.assert_allclose(instance.residual(np.ones(6)), 0.0, atol=1e-14)
    np.testing.assert_allclose(instance.residual(u), A @ u - A @ np.ones(6), rtol=1e-14)
    instance.linearize(u)  # A does not depend on u
    np.testing.assert_allclose(instance.residual(u), A @ u - A @ np.ones(6), rtol=1e-14)


def test_apply_and_its_transpose_are_the_dense_products(system):
    instance, A, _ = system
    X = np.random.default_rng(1).standard_normal((6, 3))
    np.testing.assert_allclose(instance.apply(X), A @ X, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(instance.apply(X, transpose=True), A.T @ X, rtol=1e-14, atol=1e-14)


def test_solve_weight_inverts_S_and_the_solver_can_be_released(system):
    instance, _, S = system
    X = np.random.default_rng(2).standard_normal((6, 2))
    # a direct solve: round-off times the condition number of S (~20 here)
    np.testing.assert_allclose(instance.solve_weight(X), np.linalg.solve(S, X), rtol=1e-12)
    instance.release_weight_solver()
    assert instance._weight_ksp is None
    instance.release_weight_solver()  # idempotent
    np.testing.assert_allclose(instance.solve_weight(X), np.linalg.solve(S, X), rtol=1e-12)


def test_solve_weight_without_a_weighting_is_a_clear_error(system):
    instance, A, _ = system
    bare = LinearInstance(instance.A, instance.b)
    with pytest.raises(ValueError, match="needs an SPD weighting operator S"):
        bare.solve_weight(np.ones((6, 1)))
