"""Outer Gauss–Newton iterations: one step on a linear problem, globalisations, failures."""

import math

import pytest
import torch
from mpi4py import MPI
from torch import nn

from pinn_lsr.vpro import GNSettings, minimize, run_gnvpro, train_gnvpro
from pinn_lsr.vpro.api import build_problem


def _linear_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, dtype=torch.float64, generator=g)
    y = x @ torch.randn(3, 2, dtype=torch.float64, generator=g) + 0.01 * torch.randn(
        40, 2, dtype=torch.float64, generator=g
    )
    return model, x, y


@pytest.mark.parametrize("globalization", ["trust_region", "levenberg_marquardt", "armijo"])
def test_problem_linear_in_theta_converges_in_one_step(globalization):
    model, x, y = _linear_data()
    settings = GNSettings(
        globalization=globalization,
        damping=0.0,
        radius=1e3,
        max_iterations=1,
        krylov_rtol=1e-14,
        krylov_max_iterations=20,
    )
    result = run_gnvpro(model, x, y, settings, comm=MPI.COMM_SELF, variable_projection=False)
    A = torch.cat([x, torch.ones(40, 1, dtype=x.dtype)], dim=1)
    best = float(((A @ torch.linalg.lstsq(A, y).solution - y) ** 2).mean())
    assert result.loss == pytest.approx(best, rel=1e-10)


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"globalization": "trust_region"},
        {"globalization": "armijo"},
        {"curvature_batch_size": 30},
        {"batch_size": 40, "monitor_every": 2},
    ],
)
def test_variants_decrease_the_loss(regression, variant):
    model, x, y = regression(60, 2)
    model, history = train_gnvpro(model, x, y, max_iterations=6, comm=MPI.COMM_SELF, **variant)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["status"] == "max_iterations"
    assert float(((model(x).detach() - y) ** 2).mean()) == pytest.approx(
        min(h["loss"] for h in history), rel=1e-10
    )
    assert {"iteration", "loss", "work_units", "seconds", "radius", "inner_iterations"} <= set(
        history[-1]
    )
    assert all(a["work_units"] < b["work_units"] for a, b in zip(history, history[1:]))


def test_cross_entropy_training_fits_the_labels(classification):
    model, x, labels = classification
    model, history = train_gnvpro(
        model, x, labels, loss="cross_entropy", max_iterations=8, alpha_W=1e-4, comm=MPI.COMM_SELF
    )
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert all(h["w_converged"] for h in history)
    accuracy = float((model(x).argmax(dim=1) == labels).double().mean())
    assert accuracy > 0.9


def test_collapsed_trust_region_is_reported_and_the_best_iterate_kept(regression):
    model, x, y = regression(40, 1)
    problem = build_problem(model, x, y, GNSettings(), comm=MPI.COMM_SELF)
    problem.gn_product = lambda point, v: -1e-6 * v  # wrong curvature: every trial step is poor
    problem.gradient = lambda point: -torch.ones_like(point.theta)  # wrong sign: ascent
    theta0 = problem.separable.theta()
    start = problem.evaluate(theta0).objective
    with pytest.warns(RuntimeWarning, match="trust_region_collapsed"):
        result = minimize(
            problem,
            theta0,
            GNSettings(globalization="trust_region", min_radius=1e-3, max_iterations=50),
        )
    assert result.status == "trust_region_collapsed"
    assert result.objective == start
    torch.testing.assert_close(result.theta, theta0)


def test_bad_input_raises(regression):
    model, x, y = regression(20, 2)
    with pytest.raises(ValueError, match="same length"):
        train_gnvpro(model, x, y[:10], comm=MPI.COMM_SELF)
    bad = y.clone()
    bad[3, 1] = math.nan
    with pytest.raises(ValueError, match="finite"):
        train_gnvpro(model, x, bad, comm=MPI.COMM_SELF)
    with pytest.raises(ValueError, match="expected 2 values per sample"):
        train_gnvpro(model, x, y[:, :1], comm=MPI.COMM_SELF)
    with pytest.raises(ValueError, match="unknown GNvpro settings"):
        train_gnvpro(model, x, y, comm=MPI.COMM_SELF, max_iters=3)
    with pytest.raises(ValueError, match="unknown loss"):
        train_gnvpro(model, x, y, loss="hinge", comm=MPI.COMM_SELF)
