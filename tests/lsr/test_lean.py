"""The lean engine against the plain recipe, its building blocks, and resume after an
interruption."""

import numpy as np
import pytest
import torch
from mpi4py import MPI

from pinn_lsr import refine
from pinn_lsr.lsr.lean import orthonormalize_
from pinn_lsr.lsr.reduced import solve_streaming
from pinn_lsr.lsr.residual import DataResidual
from pinn_lsr.lsr.subspace import random_matrix
from pinn_lsr.models import build_model
from pinn_lsr.parallel.tsqr import StreamingQR
from pinn_lsr.train.loop import TrainSettings, train
from tests.lsr.test_refine import fit2d_data

COMM = MPI.COMM_SELF


@pytest.fixture(scope="module")
def trained_float32():
    """An MLP 2-[32x3]-1 (float32, as the engine is meant for) briefly trained on sin·sin."""
    torch.manual_seed(0)
    model = build_model("mlp", in_features=2, out_features=1, width=32, depth=3, activation="tanh")
    x, y = (t.float() for t in fit2d_data(600, 1))
    train(
        model,
        (x, y),
        None,
        TrainSettings(epochs=30, batch_size=64, lr=3e-3, loss="mse"),
        comm=COMM,
        progress=False,
    )
    return model, x, y


def test_omega_blocks_do_not_depend_on_how_omega_is_split():
    whole = random_matrix(50, 200, distribution="gaussian", seed=3, dtype=torch.float64)
    pieces = torch.cat(
        [
            random_matrix(50, 70, distribution="gaussian", seed=3, dtype=torch.float64, first=f)[
                :, : min(70, 200 - f)
            ]
            for f in range(0, 200, 70)
        ],
        dim=1,
    )
    torch.testing.assert_close(whole, pieces, rtol=0, atol=0)
    assert not torch.equal(
        whole, random_matrix(50, 200, distribution="gaussian", seed=4, dtype=torch.float64)
    )


def test_orthonormalize_keeps_the_span_of_an_ill_conditioned_float32_matrix():
    g = np.random.default_rng(0)
    U = np.linalg.qr(g.standard_normal((3000, 300)))[0]
    A = U * np.logspace(0, -12, 300)  # condition number 1e12: beyond a Gram matrix in float64
    Q = torch.from_numpy(A @ np.linalg.qr(g.standard_normal((300, 300)))[0]).float()
    householder = np.linalg.qr(Q.double().numpy())[0]  # the best one can do from the float32 matrix
    orthonormalize_(Q, None, block=64)
    Q = Q.double().numpy()
    assert np.abs(Q.T @ Q - np.eye(300)).max() < 1e-5
    lost = lambda B: np.linalg.norm(U[:, :100] - B @ (B.T @ U[:, :100]))  # noqa: E731
    assert (
        lost(Q) < 1.5 * lost(householder) + 1e-6
    )  # the leading directions are kept as well as by Householder


@pytest.mark.parametrize("rank", [60, 200])
def test_lean_and_plain_engines_give_the_same_refined_predictor(trained_float32, rank):
    model, x, y = trained_float32
    xv, yv = (t.float() for t in fit2d_data(200, 2))
    predictions, reports = [], []
    for engine in ("plain", "lean"):
        refined, report = refine(
            model, x, y, rank=rank, relative=False, engine=engine, chunk_samples=100, comm=COMM
        )
        predictions.append(refined.predict(xv).double())
        reports.append(report)
    error = [float((p - yv).pow(2).mean()) for p in predictions]
    assert error[1] < 0.1 * float(
        (model(xv) - yv).detach().pow(2).mean()
    )  # the refinement did something
    torch.testing.assert_close(
        predictions[1], predictions[0], rtol=0, atol=2e-3 * float(yv.abs().max())
    )
    assert error[1] == pytest.approx(error[0], rel=0.05)
    assert reports[1].linearized_objective == pytest.approx(
        reports[0].linearized_objective, rel=0.05
    )


def test_gram_reduction_matches_qr_on_a_well_conditioned_problem():
    g = np.random.default_rng(1)
    GV, f = g.standard_normal((500, 30)), g.standard_normal(500)
    blocks = [(GV[i : i + 37], f[i : i + 37]) for i in range(0, 500, 37)]
    qr, normal = (solve_streaming(blocks, 30, COMM, reduction=r) for r in ("qr", "gram"))
    np.testing.assert_allclose(normal.coefficients(), qr.coefficients(), rtol=1e-9)
    np.testing.assert_allclose(normal.coefficients(12), qr.coefficients(12), rtol=1e-9)
    with pytest.raises(FloatingPointError, match="reduction='qr'"):
        solve_streaming([(np.ones((40, 3)), np.ones(40))], 3, COMM, reduction="gram")


class Interrupted(Exception):
    pass


def interrupt_on_call(monkeypatch, owner, name: str, call: int) -> None:
    """Make ``owner.name`` raise Interrupted on its ``call``-th call (a killed run)."""
    original, calls = getattr(owner, name), {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise Interrupted
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, interrupted)


@pytest.mark.parametrize("where", ["projection", "reduction"])
def test_an_interrupted_run_resumes_from_its_restart_dir_with_the_same_result(
    trained_float32, tmp_path, monkeypatch, where
):
    model, x, y = trained_float32
    options = dict(rank=40, relative=False, chunk_samples=50, block_columns=16, comm=COMM)
    reference, _ = refine(model, x, y, **options)

    target, name, call = (
        (DataResidual, "Gt", 3) if where == "projection" else (StreamingQR, "add", 8)
    )
    interrupt_on_call(monkeypatch, target, name, call)
    with pytest.raises(Interrupted):
        refine(model, x, y, restart_dir=tmp_path, restart_seconds=0, **options)
    monkeypatch.undo()
    saved = sorted(p.stem for p in (tmp_path / "rank0of1").glob("*.pt"))
    assert "sketch_0" in saved and ("reduction" in saved) == (where == "reduction")

    resumed, _ = refine(model, x, y, restart_dir=tmp_path, restart_seconds=0, **options)
    torch.testing.assert_close(resumed.delta, reference.delta, rtol=1e-5, atol=1e-6)


def test_a_restart_dir_of_another_run_is_refused(trained_float32, tmp_path):
    model, x, y = trained_float32
    refine(model, x, y, rank=10, relative=False, restart_dir=tmp_path, comm=COMM)
    with pytest.raises(ValueError, match="different refinement"):
        refine(model, x, y, rank=12, relative=False, restart_dir=tmp_path, comm=COMM)
