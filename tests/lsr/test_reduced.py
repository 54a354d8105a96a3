import numpy as np
import pytest
import scipy.linalg
from mpi4py import MPI

from pinn_lsr.lsr.reduced import solve_dense, solve_streaming
from pinn_lsr.parallel.tsqr import StreamingQR


def problem(n=200, r=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, r)), rng.standard_normal(n)


def test_dense_solution_is_least_squares_and_scan_equals_separate_solves():
    GV, f = problem()
    reduced = solve_dense(GV, f, MPI.COMM_SELF)
    expected = np.linalg.lstsq(GV, -f, rcond=None)[0]
    np.testing.assert_allclose(reduced.coefficients(), expected, rtol=1e-10)
    np.testing.assert_allclose(
        reduced.residual_norm(), np.linalg.norm(GV @ expected + f), rtol=1e-10
    )
    np.testing.assert_allclose(reduced.initial_norm(), np.linalg.norm(f), rtol=1e-12)
    for r in (1, 5, 11):
        separate = solve_dense(GV[:, :r], f, MPI.COMM_SELF)
        np.testing.assert_allclose(reduced.coefficients(r), separate.coefficients(), rtol=1e-10)
        np.testing.assert_allclose(reduced.residual_norm(r), separate.residual_norm(), rtol=1e-10)


def test_streaming_equals_dense():
    GV, f = problem(n=301)
    dense = solve_dense(GV, f, MPI.COMM_SELF)
    blocks = ((GV[i : i + 37], f[i : i + 37]) for i in range(0, 301, 37))
    streamed = solve_streaming(blocks, 12, MPI.COMM_SELF)
    np.testing.assert_allclose(streamed.R, dense.R, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(streamed.coefficients(), dense.coefficients(), rtol=1e-10)
    assert streamed.n_rows == 301


def test_rank_deficient_problem_reports_effective_rank():
    GV, f = problem(r=6)
    GV = np.column_stack([GV, GV[:, :2] @ [1.0, -2.0]])  # a dependent seventh column
    reduced = solve_dense(GV, f, MPI.COMM_SELF)
    assert reduced.effective_rank() == 6
    c = reduced.coefficients()
    assert np.all(np.isfinite(c))
    np.testing.assert_allclose(
        np.linalg.norm(GV @ c + f),
        np.linalg.norm(GV[:, :6] @ np.linalg.lstsq(GV[:, :6], -f, rcond=None)[0] + f),
        rtol=1e-8,
    )


def test_too_few_rows_and_bad_values():
    GV, f = problem(n=5, r=6)
    with pytest.raises(ValueError, match="fewer than rank"):
        solve_dense(GV, f, MPI.COMM_SELF)
    GV, f = problem()
    f[3] = np.nan
    with pytest.raises(FloatingPointError):
        solve_dense(GV, f, MPI.COMM_SELF)
    with pytest.raises(FloatingPointError):
        StreamingQR(13).add(np.column_stack([GV, f]))


def test_lsqr_matches_dense_on_an_ill_conditioned_problem():
    from pinn_lsr.lsr.lsqr import LSQRSolution

    rng = np.random.default_rng(2)
    U, _ = np.linalg.qr(rng.standard_normal((300, 10)))
    GV = U * np.logspace(0, -8, 10)  # condition number 1e8
    f = rng.standard_normal(300)
    dense = solve_dense(GV, f, MPI.COMM_SELF)
    lsqr = LSQRSolution(GV, f, MPI.COMM_SELF)
    for r in (3, 10):
        np.testing.assert_allclose(lsqr.coefficients(r), dense.coefficients(r), rtol=1e-6)
        np.testing.assert_allclose(lsqr.residual_norm(r), dense.residual_norm(r), rtol=1e-10)
    assert lsqr.iterations[10] < 20  # the sketch preconditioner makes LSQR converge fast


def test_lsqr_non_convergence_names_the_prefix():
    from pinn_lsr.fem.solver import SolverError
    from pinn_lsr.lsr.lsqr import LSQRSolution

    GV, f = problem()
    lsqr = LSQRSolution(
        GV,
        f,
        MPI.COMM_SELF,
        prefix="tight_",
        options={"ksp_type": "lsqr", "ksp_max_it": 1, "ksp_rtol": 1e-30, "ksp_atol": 0},
    )
    with pytest.raises(SolverError, match="tight_"):
        lsqr.coefficients()


class _MemoryStore:
    def __init__(self):
        self.pieces = {}

    def load(self, name):
        return self.pieces.get(name)

    def save(self, name, value):
        self.pieces[name] = {k: np.copy(v) for k, v in value.items()}


def test_streaming_saves_its_accumulator_and_resumes_from_the_rows_done():
    rng = np.random.default_rng(3)
    GV, f = rng.standard_normal((120, 6)), rng.standard_normal(120)
    blocks = lambda start: [(GV[i : i + 10], f[i : i + 10]) for i in range(start, 120, 10)]  # noqa: E731
    reference = solve_streaming(blocks(0), 6, MPI.COMM_SELF)
    store = _MemoryStore()
    partial = lambda start: blocks(start)[:5]  # noqa: E731  (a run killed after 5 blocks)
    solve_streaming(partial, 6, MPI.COMM_SELF, store=store, restart_seconds=0)
    assert store.pieces["reduction"]["rows"] == 50
    resumed = solve_streaming(blocks, 6, MPI.COMM_SELF, store=store, restart_seconds=0)
    np.testing.assert_allclose(resumed.R, reference.R, rtol=1e-13, atol=1e-13)
    assert resumed.n_rows == 120
    with pytest.raises(ValueError, match="function of the rows done"):
        solve_streaming(blocks(0), 6, MPI.COMM_SELF, store=store)


def kahan(n: int, theta: float = 1.2) -> np.ndarray:
    """Kahan's upper triangular matrix: a diagonal no smaller than sin(θ)^(n-1), yet
    numerically singular (its smallest singular value is far below its smallest diagonal
    entry)."""
    s, c = np.sin(theta), np.cos(theta)
    return np.diag(s ** np.arange(n)) @ (np.eye(n) - c * np.triu(np.ones((n, n)), 1))


def test_conditioning_is_exact_up_to_the_limit_and_estimated_in_quadratic_time_above(
    monkeypatch,
):
    import pinn_lsr.lsr.reduced as reduced_module

    rng = np.random.default_rng(4)
    U, _ = np.linalg.qr(rng.standard_normal((400, 40)))
    W, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    GV = U * np.logspace(0, -6, 40) @ W  # condition number 1e6
    GV = np.column_stack([GV, GV[:, :2] @ [1.0, -2.0]])  # and one dependent column
    reduced = solve_dense(GV, rng.standard_normal(400), MPI.COMM_SELF)
    exact = reduced.conditioning()
    assert not exact.estimated and exact.effective_rank == 40
    np.testing.assert_allclose(exact.singular_values[:40], scipy.linalg.svdvals(GV)[:40], rtol=1e-8)
    monkeypatch.setattr(reduced_module, "EXACT_CONDITIONING_RANK", 10)
    estimate = reduced.conditioning()
    assert estimate.estimated and estimate.singular_values is None
    assert estimate.effective_rank == 40
    U, _ = np.linalg.qr(rng.standard_normal((600, 150)))
    W, _ = np.linalg.qr(rng.standard_normal((150, 150)))
    wide = solve_dense(U * np.logspace(0, -6, 150) @ W, rng.standard_normal(600), MPI.COMM_SELF)
    estimate = wide.conditioning()  # by Lanczos (above 100 columns)
    assert estimate.estimated and estimate.effective_rank == 150
    assert estimate.condition_number == pytest.approx(1e6, rel=1e-3)


def test_ill_conditioning_hidden_from_the_diagonal_falls_back_to_the_svd():
    from pinn_lsr.lsr.reduced import ReducedSolution

    R = kahan(120)
    assert np.abs(np.diag(R)).min() > 1e-5  # the diagonal shows nothing
    z = np.random.default_rng(5).standard_normal(120)
    reduced = ReducedSolution(R=R, z=z, rho=0.0, n_rows=500)
    c = reduced.coefficients()
    assert reduced.fallback_ranks == [120]
    U, s, Wt = np.linalg.svd(R)
    keep = s > 1e-10 * s[0]
    np.testing.assert_allclose(c, -(Wt[keep].T @ ((U[:, keep].T @ z) / s[keep])), rtol=1e-8)
    reduced.coefficients()  # kept: no second SVD
    np.testing.assert_allclose(
        reduced.coefficients(10), -scipy.linalg.solve_triangular(R[:10, :10], z[:10])
    )
    assert reduced.fallback_ranks == [120]  # the leading 10 x 10 block is well conditioned


def test_normal_equations_refuse_non_finite_blocks():
    GV, f = problem()
    GV[7, 3] = np.inf
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        solve_streaming([(GV, f)], 12, MPI.COMM_SELF, reduction="gram")


def test_condition_number_of_a_numerically_singular_factor_is_infinite():
    from pinn_lsr.lsr.reduced import condition_number

    R = kahan(400, theta=0.5)  # σ_min underflows: its inverse's products overflow
    assert condition_number(R) == float("inf")
    assert condition_number(np.triu(np.ones((150, 150)))) == pytest.approx(
        np.linalg.cond(np.triu(np.ones((150, 150)))), rel=1e-2
    )
