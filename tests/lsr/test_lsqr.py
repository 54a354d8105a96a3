"""The reduced problem by PETSc's KSPLSQR (pinn_lsr.lsr.lsqr), serial: it equals a dense
least-squares solve."""

import numpy as np
import pytest
import scipy.linalg
from mpi4py import MPI

from pinn_lsr.lsr.lsqr import LSQRSolution

COMM = MPI.COMM_SELF


def problem(n=50, r=8, seed=0):
    g = np.random.default_rng(seed)
    A = g.standard_normal((n, r)) @ np.diag(np.logspace(0, -4, r))  # cond(A) ~ 1e4
    return A, g.standard_normal(n)


def test_lsqr_solution_equals_dense_lstsq_at_every_rank():
    A, f = problem()
    solution = LSQRSolution(A, f, COMM)
    for r in (3, 8):
        expected = np.linalg.lstsq(A[:, :r], -f, rcond=None)[0]
        np.testing.assert_allclose(solution.coefficients(r), expected, rtol=1e-8)
        assert solution.residual_norm(r) == pytest.approx(
            np.linalg.norm(A[:, :r] @ expected + f), rel=1e-10
        )
        assert 1 <= solution.iterations[r] <= 200  # preconditioned: a few iterations
    np.testing.assert_allclose(solution.coefficients(), solution.coefficients(8))
    assert solution.rank == 8 and solution.n_rows == 50
    assert solution.initial_norm() == pytest.approx(np.linalg.norm(f), rel=1e-14)
    np.testing.assert_allclose(solution.singular_values(), scipy.linalg.svdvals(A), rtol=1e-10)
    assert solution.effective_rank() == 8


def test_lsqr_takes_petsc_options_and_refuses_a_bad_rank():
    A, f = problem(seed=1)
    options = {"ksp_type": "lsqr", "pc_type": "none", "ksp_rtol": 1e-14, "ksp_atol": 1e-16}
    solution = LSQRSolution(A, f, COMM, options=options)
    expected = np.linalg.lstsq(A, -f, rcond=None)[0]
    np.testing.assert_allclose(solution.coefficients(), expected, rtol=1e-8)
    with pytest.raises(ValueError, match=r"rank must be in \[1, 8\], got 9"):
        solution.coefficients(9)
