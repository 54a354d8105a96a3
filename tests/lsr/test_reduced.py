import numpy as np
import pytest
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
