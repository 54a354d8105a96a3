"""The validation scan (pinn_lsr.lsr.scan): the ranks scanned, the held-out errors of the linear
predictor for any rank, and one entry per rank from one factorisation."""

import numpy as np
import pytest
import torch
from mpi4py import MPI

from pinn_lsr.lsr.jacobian import ModelJacobian
from pinn_lsr.lsr.reduced import solve_dense
from pinn_lsr.lsr.residual import DataResidual
from pinn_lsr.lsr.scan import Probe, probe_residuals, ranks_to_scan, scan
from pinn_lsr.lsr.settings import LSRSettings
from pinn_lsr.models import build_model
from pinn_lsr.models.parameters import set_precision

COMM = MPI.COMM_SELF


def model_and_data(n=80, seed=0):
    torch.manual_seed(seed)
    model = set_precision(
        build_model("mlp", in_features=2, out_features=3, width=8, depth=2, activation="tanh"),
        torch.float64,
    )
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1
    y = torch.cat([torch.sin(3 * x[:, :1]), x[:, 1:] ** 2 + 1, x.sum(dim=1, keepdim=True)], 1)
    return model, x, y


def test_ranks_to_scan_are_sorted_unique_and_end_at_the_rank():
    ranks = ranks_to_scan(500)
    assert ranks[0] == 1 and ranks[-1] == 500 and len(ranks) <= 20
    assert ranks == sorted(set(ranks))
    assert ranks_to_scan(3) == [1, 2, 3]
    assert ranks_to_scan(40, [10, 5, 10]) == [5, 10, 40]


def test_scan_ranks_beyond_the_basis_are_skipped_with_a_warning(caplog):
    # a Krylov basis that stopped at 27 columns, scan ranks asked for up to 3000
    with caplog.at_level("WARNING", logger="pinn_lsr.lsr.scan"):
        assert ranks_to_scan(27, [10, 100, 3000]) == [10, 27]
    assert "[100, 3000] skipped: the basis has 27 columns" in caplog.text


@pytest.mark.parametrize("relative", [False, True])
def test_probe_errors_are_those_of_the_linear_predictor(relative):
    model, x, y = model_and_data()
    residual = DataResidual.create(ModelJacobian(model, x), y, relative=relative, comm=COMM)
    V = torch.randn(residual.jacobian.n_params, 6, dtype=torch.float64)
    probe = Probe(residual, V, COMM)
    c = torch.randn(4, dtype=torch.float64)
    J = residual.jacobian.full()
    prediction = (residual.jacobian.outputs() + J @ (V[:, :4] @ c)).reshape(len(x), -1)
    error = prediction - y
    weights = 1 / torch.linalg.vector_norm(y, dim=1, keepdim=True) if relative else 1.0
    errors = probe.errors(c)
    assert errors["objective"] == pytest.approx(float((error * weights).pow(2).sum()) / len(x))
    rel = torch.linalg.vector_norm(error, dim=1) / torch.linalg.vector_norm(y, dim=1)
    assert errors["rel_l2"] == pytest.approx(float(rel.mean()))


def test_scan_gives_one_entry_per_rank_from_one_factorisation():
    model, x, y = model_and_data()
    residual = DataResidual.create(ModelJacobian(model, x[:60]), y[:60], comm=COMM)
    V = torch.linalg.qr(torch.randn(residual.jacobian.n_params, 10, dtype=torch.float64))[0]
    GV, f = residual.G(V).numpy(), residual.value().numpy()
    reduced = solve_dense(GV, f, COMM)
    held_out = probe_residuals(
        model,
        {"validation": (x[60:], y[60:])},
        index=residual.jacobian.index,
        forward=None,
        chunks=residual.jacobian.chunks,
        settings=LSRSettings(rank=10, relative=False),
        comm=COMM,
    )
    probes = {name: Probe(r, V, COMM) for name, r in held_out.items()}
    entries = scan(reduced, probes, [1, 4, 10], 60)
    assert [e["rank"] for e in entries] == [1, 4, 10]
    for entry in entries:
        r = entry["rank"]
        c = np.linalg.lstsq(GV[:, :r], -f, rcond=None)[0]
        assert entry["train_objective"] == pytest.approx(np.sum((GV[:, :r] @ c + f) ** 2) / 60)
        expected = probes["validation"].errors(torch.from_numpy(c))
        assert entry["validation_objective"] == pytest.approx(expected["objective"], rel=1e-8)
        assert entry["validation_rel_l2"] == pytest.approx(expected["rel_l2"], rel=1e-8)
    assert entries[-1]["train_objective"] <= entries[0]["train_objective"]


def test_probe_residuals_refuse_bad_held_out_data():
    model, x, y = model_and_data()
    jacobian = ModelJacobian(model, x)
    options = dict(
        index=jacobian.index,
        forward=None,
        chunks=jacobian.chunks,
        comm=COMM,
        settings=LSRSettings(rank=3),
    )
    with pytest.raises(ValueError, match="differ in length: 10 vs 9"):
        probe_residuals(model, {"test": (x[:10], y[:9])}, **options)
    assert probe_residuals(model, {}, **options) == {}
