"""The budget-aware rank: the chooser stays inside known costs, and refine() honours a budget."""

import numpy as np
import pytest
import torch
from mpi4py import MPI

from pinn_lsr import refine
from pinn_lsr.lsr.budget import CostModel, fastest_chunks
from pinn_lsr.lsr.jacobian import ModelJacobian
from pinn_lsr.lsr.subspace import Subspace
from tests.lsr.test_lean import trained_float32  # noqa: F401 (fixture)
from tests.lsr.test_refine import fit2d_data

COMM = MPI.COMM_SELF


def known_costs(engine="lean", reduction="qr", subspace="randomized"):
    return CostModel(
        engine=engine,
        subspace=subspace,
        reduction=reduction,
        n_ranks=2,
        n_params=400_000,
        n_outputs=256,
        n_samples=250,
        n_sketch_samples=250,
        n_probe_samples=50,
        oversampling=10,
        block_columns=256,
        chunk_samples=8,
        jvp_seconds=2e-5,
        vjp_seconds=4e-5,
        gemm_flops=4e10,
        qr_flops=1.5e10,
        base_bytes=2e9,
        krylov_seconds=1e-3,
        gemv_flops=5e9,
    )


@pytest.mark.parametrize(
    "engine, subspace", [("lean", "randomized"), ("plain", "randomized"), ("lean", "krylov")]
)
@pytest.mark.parametrize("memory_gb, minutes", [(20, 30), (8, None), (None, 5), (4, 2)])
def test_the_chosen_rank_is_the_largest_inside_the_budget(engine, subspace, memory_gb, minutes):
    costs = known_costs(engine, subspace=subspace)
    memory = None if memory_gb is None else memory_gb * 2**30
    seconds = None if minutes is None else minutes * 60
    r = costs.largest_rank(memory_bytes=memory, seconds=seconds, cap=60_000)
    assert r >= 1
    assert memory is None or costs.memory_bytes(r) <= memory
    assert seconds is None or costs.seconds(r) <= seconds
    over = r + 1
    assert (memory is not None and costs.memory_bytes(over) > memory) or (
        seconds is not None and costs.seconds(over) > seconds
    )


def test_the_lean_engine_fits_a_larger_rank_than_the_plain_recipe_in_the_same_memory():
    lean, plain = known_costs("lean"), known_costs("plain")
    budget = 20 * 2**30
    assert lean.largest_rank(
        memory_bytes=budget, seconds=None, cap=100_000
    ) > 2 * plain.largest_rank(memory_bytes=budget, seconds=None, cap=100_000)


def test_a_budget_too_small_for_rank_one_is_refused():
    assert known_costs().largest_rank(memory_bytes=1e9, seconds=None, cap=1000) == 0


def test_refine_with_a_budget_predicts_and_reports(trained_float32):  # noqa: F811
    model, x, y = trained_float32
    xv, yv = (t.float() for t in fit2d_data(100, 2))
    refined, report = refine(
        model,
        x,
        y,
        rank=None,
        time_budget_minutes=0.05,
        validation=(xv, yv),
        relative=False,
        chunk_samples=100,
        comm=COMM,
    )
    assert report.predicted["seconds"] <= 3.0 and 1 <= report.max_rank
    assert report.predicted["costs"]["jvp_seconds"] > 0
    capped, capped_report = refine(
        model, x, y, rank=7, time_budget_minutes=10, relative=False, chunk_samples=100, comm=COMM
    )
    assert capped_report.max_rank == 7
    with pytest.raises(ValueError, match="too small for rank 1"):
        refine(model, x, y, rank=None, memory_budget_gb=1e-6, relative=False, comm=COMM)
    with pytest.raises(ValueError, match="give a rank"):
        refine(model, x, y, rank=None, relative=False, comm=COMM)
    torch.testing.assert_close(refined.delta.isfinite().all(), torch.tensor(True))


def test_refine_with_a_budget_predicts_the_krylov_subspace(trained_float32):  # noqa: F811
    model, x, y = trained_float32
    _, report = refine(
        model,
        x,
        y,
        rank=None,
        time_budget_minutes=0.05,
        relative=False,
        chunk_samples=100,
        subspace="krylov",
        comm=COMM,
    )
    costs = report.predicted["costs"]
    assert costs["subspace"] == "krylov" and costs["krylov_seconds"] > 0 and costs["gemv_flops"] > 0
    assert report.predicted["seconds"] <= 3.0 and report.max_rank >= 1
    with pytest.raises(ValueError, match="randomized and krylov"):
        refine(
            model,
            x,
            y,
            rank=None,
            time_budget_minutes=1,
            relative=False,
            subspace="random",
            comm=COMM,
        )


def test_auto_chunks_are_measured_within_the_limits_and_refine_the_same(trained_float32):  # noqa: F811
    model, x, y = trained_float32
    chunks = fastest_chunks(ModelJacobian(model, x, chunk_samples=1), COMM)
    assert set(chunks) == {"chunk_samples", "vjp_chunk_samples"}
    assert all(1 <= size <= len(x) for size in chunks.values())
    xv = fit2d_data(200, 2)[0].float()
    fixed, _ = refine(model, x, y, rank=30, relative=False, chunk_samples=100, comm=COMM)
    auto, report = refine(model, x, y, rank=30, relative=False, chunk_samples="auto", comm=COMM)
    assert report.chunks["chunk_samples"] >= 1 and report.chunks["vjp_chunk_samples"] >= 1
    # chunking changes only the summation order of the float32 products
    torch.testing.assert_close(
        auto.predict(xv), fixed.predict(xv), rtol=0, atol=1e-3 * float(y.abs().max())
    )
    with pytest.raises(ValueError, match="chunk_samples"):
        refine(model, x, y, rank=3, relative=False, chunk_samples=0, comm=COMM)


def test_the_correction_is_v_times_c_without_a_float64_copy_of_v():
    V = torch.randn(20_000, 12)
    c = torch.randn(7, dtype=torch.float64)
    delta = Subspace(V, np.ones(12)).correction(c, rows=3000)
    assert delta.dtype == torch.float32
    torch.testing.assert_close(delta.double(), V[:, :7].double() @ c, rtol=1e-6, atol=1e-6)
