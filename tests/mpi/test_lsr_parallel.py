"""LSR with rows split over 2 ranks gives the 1-rank answer."""

import math

import numpy as np
import pytest
import torch
from mpi4py import MPI

from pinn_lsr import refine
from pinn_lsr.lsr.lsqr import LSQRSolution
from pinn_lsr.lsr.reduced import solve_dense, solve_streaming
from pinn_lsr.models import build_model
from pinn_lsr.models.parameters import set_precision
from pinn_lsr.parallel.tsqr import tsqr
from tests.lsr.test_reduced import kahan


def test_tsqr_two_ranks_equal_one(comm):
    A = np.random.default_rng(0).standard_normal((41, 6))
    rows = np.array_split(np.arange(41), 2)[comm.rank]
    Q_local, R = tsqr(A[rows], comm)
    Q_serial, R_serial = tsqr(A, MPI.COMM_SELF)
    np.testing.assert_allclose(R, R_serial, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Q_local, Q_serial[rows], atol=1e-12)


@pytest.mark.parametrize("solver", ["streaming", "dense", "lsqr"])
def test_reduced_solve_two_ranks_equal_one(comm, solver):
    rng = np.random.default_rng(1)
    GV, f = rng.standard_normal((90, 8)), rng.standard_normal(90)
    rows = np.array_split(np.arange(90), 2)[comm.rank]
    if solver == "streaming":
        parallel = solve_streaming(
            [(GV[rows][i : i + 10], f[rows][i : i + 10]) for i in range(0, len(rows), 10)], 8, comm
        )
    elif solver == "dense":
        parallel = solve_dense(GV[rows], f[rows], comm)
    else:
        parallel = LSQRSolution(GV[rows], f[rows], comm)
    serial = solve_dense(GV, f, MPI.COMM_SELF)
    np.testing.assert_allclose(parallel.coefficients(), serial.coefficients(), rtol=1e-8)
    assert parallel.n_rows == 90


@pytest.mark.parametrize(
    "engine, subspace, rank",
    [("lean", "randomized", 40), ("plain", "randomized", 40), ("lean", "krylov", 12)],
)
def test_refine_two_ranks_equal_one(comm, engine, subspace, rank):
    """(The Krylov rank stays below 22, where this MLP's Krylov space becomes numerically invariant
    and the reduced problem so ill-conditioned that summation order shows in δ.)"""
    torch.manual_seed(0)
    model = set_precision(
        build_model("mlp", in_features=2, out_features=1, width=16, depth=2, activation="tanh"),
        torch.float64,
    )
    g = torch.Generator().manual_seed(3)
    x = torch.rand(300, 2, generator=g, dtype=torch.float64) * 2 - 1
    y = (torch.sin(math.pi * x[:, 0]) * torch.sin(math.pi * x[:, 1]))[:, None]
    share = torch.from_numpy(np.array_split(np.arange(300), 2)[comm.rank])
    val = torch.arange(250, 300)
    val_share = torch.from_numpy(np.array_split(np.arange(250, 300), 2)[comm.rank])
    train_share = share[share < 250]
    serial, serial_report = refine(
        model,
        x[:250],
        y[:250],
        rank=rank,
        validation=(x[val], y[val]),
        chunk_samples=32,
        engine=engine,
        subspace=subspace,
        comm=MPI.COMM_SELF,
    )
    parallel, parallel_report = refine(
        model,
        x[train_share],
        y[train_share],
        rank=rank,
        validation=(x[val_share], y[val_share]),
        chunk_samples=32,
        engine=engine,
        subspace=subspace,
        comm=comm,
    )
    assert parallel_report.rank == serial_report.rank and parallel_report.n_rows == 250
    torch.testing.assert_close(
        parallel.delta, serial.delta, rtol=1e-8, atol=1e-8 * serial.delta.abs().max().item()
    )
    gathered = comm.allgather(parallel.delta.numpy())
    np.testing.assert_array_equal(gathered[0], gathered[1])


def test_lean_refinement_resumes_on_two_ranks(comm, shared_tmp_path, monkeypatch):
    from pinn_lsr.lsr.residual import DataResidual
    from tests.lsr.test_lean import Interrupted, interrupt_on_call

    torch.manual_seed(0)
    model = build_model("mlp", in_features=2, out_features=1, width=16, depth=2, activation="tanh")
    g = torch.Generator().manual_seed(3)
    x = torch.rand(300, 2, generator=g) * 2 - 1
    y = (torch.sin(math.pi * x[:, 0]) * torch.sin(math.pi * x[:, 1]))[:, None]
    share = torch.from_numpy(np.array_split(np.arange(300), 2)[comm.rank])
    options = dict(rank=30, chunk_samples=40, block_columns=8, comm=comm)
    reference, _ = refine(model, x[share], y[share], **options)
    interrupt_on_call(
        monkeypatch, DataResidual, "Gt", 3
    )  # the same call on both ranks: a collective stop
    with pytest.raises(Interrupted):
        refine(model, x[share], y[share], restart_dir=shared_tmp_path / "lsr", **options)
    monkeypatch.undo()
    resumed, _ = refine(model, x[share], y[share], restart_dir=shared_tmp_path / "lsr", **options)
    torch.testing.assert_close(resumed.delta, reference.delta, rtol=1e-5, atol=1e-6)
    assert (shared_tmp_path / "lsr" / f"rank{comm.rank}of2" / "projection_0.pt").exists()


@pytest.mark.parametrize("empty", ["training", "validation"])
def test_a_rank_without_samples_raises_on_every_rank_instead_of_hanging(comm, empty):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    n = 40 if comm.rank == 0 else 0
    x, y = torch.rand(40, 2), torch.rand(40, 1)
    data = {"training": (x, y), "validation": (x[:8], y[:8])}
    data[empty] = (data[empty][0][:n], data[empty][1][:n])
    with pytest.raises(ValueError, match=f"the {empty} samples leave rank 1 of 2 without any"):
        refine(model, *data["training"], rank=5, validation=data["validation"], comm=comm)


def test_svd_fallback_runs_on_rank_0_and_every_rank_gets_its_solution(comm, monkeypatch):
    from pinn_lsr.lsr import reduced as reduced_module
    from pinn_lsr.lsr.reduced import ReducedSolution

    n = 120
    R = kahan(n)  # numerically singular behind a harmless diagonal
    z = np.random.default_rng(5).standard_normal(n)
    U, sigma, Wt = np.linalg.svd(R)
    keep = sigma > 1e-10 * sigma[0]
    expected = -(Wt[keep].T @ ((U[:, keep].T @ z) / sigma[keep]))
    calls = []
    svd = reduced_module._truncated_svd_solution
    monkeypatch.setattr(
        reduced_module, "_truncated_svd_solution", lambda *a: calls.append(1) or svd(*a)
    )
    solution = ReducedSolution(R=R, z=z, rho=0.0, n_rows=500, comm=comm)
    coefficients = solution.coefficients()
    assert solution.fallback_ranks == [n]
    assert len(calls) == (1 if comm.rank == 0 else 0)
    np.testing.assert_allclose(coefficients, expected, rtol=1e-8)
    everywhere = comm.allgather(coefficients)
    assert all(np.array_equal(everywhere[0], other) for other in everywhere)
