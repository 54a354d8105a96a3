"""The reduction phase (pinn_lsr.lsr.reduction): the three solvers agree on a data residual, and
the streaming one resumes from a restart store with the same factor."""

import numpy as np
import pytest
import torch
from mpi4py import MPI

from pinn_lsr.lsr.jacobian import ModelJacobian
from pinn_lsr.lsr.reduction import solve_reduced
from pinn_lsr.lsr.residual import DataResidual
from pinn_lsr.lsr.restart import RestartStore
from pinn_lsr.lsr.settings import LSRSettings
from pinn_lsr.models import build_model
from pinn_lsr.models.parameters import set_precision
from pinn_lsr.parallel.tsqr import StreamingQR

COMM = MPI.COMM_SELF


@pytest.fixture
def residual_and_basis():
    torch.manual_seed(0)
    model = set_precision(
        build_model("mlp", in_features=2, out_features=2, width=8, depth=2, activation="tanh"),
        torch.float64,
    )
    g = torch.Generator().manual_seed(1)
    x = torch.rand(90, 2, generator=g, dtype=torch.float64) * 2 - 1
    y = torch.cat([torch.sin(3 * x[:, :1]), x[:, 1:] ** 2], dim=1)
    residual = DataResidual.create(ModelJacobian(model, x, chunk_samples=7), y, comm=COMM)
    V = torch.linalg.qr(torch.randn(residual.jacobian.n_params, 9, dtype=torch.float64))[0]
    return residual, V


@pytest.mark.parametrize(
    "solver, reduction", [("streaming", "gram"), ("dense", "qr"), ("lsqr", "qr")]
)
def test_the_solvers_agree_with_the_streaming_qr(residual_and_basis, solver, reduction):
    residual, V = residual_and_basis
    f0 = residual.value()
    reference = solve_reduced(residual, V, f0, LSRSettings(rank=9), comm=COMM)
    other = solve_reduced(
        residual, V, f0, LSRSettings(rank=9, solver=solver, reduction=reduction), comm=COMM
    )
    GV, f = residual.G(V).numpy(), f0.numpy()
    expected = np.linalg.lstsq(GV[:, :5], -f, rcond=None)[0]
    np.testing.assert_allclose(reference.coefficients(5), expected, rtol=1e-8)
    np.testing.assert_allclose(other.coefficients(5), expected, rtol=1e-6)
    assert reference.n_rows == other.n_rows == 180


def test_streaming_resumes_from_its_restart_store_with_the_same_factor(
    residual_and_basis, tmp_path, monkeypatch
):
    residual, V = residual_and_basis
    f0 = residual.value()
    settings = LSRSettings(rank=9, restart_dir=tmp_path, restart_seconds=0)
    reference = solve_reduced(residual, V, f0, settings, comm=COMM)

    calls, add = {"n": 0}, StreamingQR.add

    def interrupted(self, block):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return add(self, block)

    monkeypatch.setattr(StreamingQR, "add", interrupted)
    with pytest.raises(KeyboardInterrupt):
        solve_reduced(residual, V, f0, settings, store=RestartStore(tmp_path, {}, COMM), comm=COMM)
    monkeypatch.undo()
    store = RestartStore(tmp_path, {}, COMM)
    assert 0 < store.load("reduction")["rows"] < 180
    resumed = solve_reduced(residual, V, f0, settings, store=store, progress=True, comm=COMM)
    np.testing.assert_allclose(resumed.R, reference.R, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(resumed.coefficients(), reference.coefficients(), rtol=1e-10)
