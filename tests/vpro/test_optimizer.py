"""Outer Gauss–Newton iterations: one step on a linear problem, globalisations, failures,
re-solves of rejected steps, invariance to the targets' units."""

import dataclasses
import math

import pytest
import torch
from mpi4py import MPI
from torch import nn

from scipy.optimize import brentq
from pinn_lsr.models.mlp import MLP
from pinn_lsr.models.normalization import Normalizer
from pinn_lsr.vpro import GNSettings, minimize, run_gnvpro, train_gnvpro, train_gnvpro_on_dataset
from pinn_lsr.vpro.api import build_problem

EPS = torch.finfo(torch.float64).eps


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
        max_iterations=1,
        krylov_rtol=1e-14,
        krylov_forcing=None,
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
    model, history = train_gnvpro(
        model, x, y, max_iterations=1000, max_work_units=100, comm=MPI.COMM_SELF, **variant
    )
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["status"] == "max_work_units"
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


@pytest.mark.parametrize(
    "globalization, bound",
    [("trust_region", {"min_radius": 1e-3}), ("levenberg_marquardt", {"max_damping": 1.0})],
)
def test_collapsed_trust_region_is_reported_and_the_best_iterate_kept(
    regression, globalization, bound
):
    model, x, y = regression(40, 1)
    problem = build_problem(model, x, y, GNSettings(), comm=MPI.COMM_SELF)
    evaluate = problem.evaluate

    def worse(theta, start=None):  # every trial point is worse than where it starts from
        point = evaluate(theta, start)
        if start is not None:
            point.objective = start.objective + 1.0
        return point

    problem.evaluate = worse
    theta0 = problem.separable.theta()
    start = problem.evaluate(theta0).objective
    problem.work.units = 0.0
    settings = GNSettings(globalization=globalization, max_iterations=50, damping=1e-3, **bound)
    with pytest.warns(RuntimeWarning, match="trust_region_collapsed"):
        result = minimize(problem, theta0, settings)
    assert result.status == "trust_region_collapsed"
    assert result.objective == start
    torch.testing.assert_close(result.theta, theta0)
    # Δ halves (μ doubles) per rejection: 2^-10 < 1e-3 (1e-3 · 2^10 > 1); all in the first basis
    history = result.history
    assert result.iterations == 10
    assert [h["krylov_reused"] for h in history[1:]] == [False] + [True] * 9
    products = history[1]["inner_iterations"]
    assert products > 0 and all(h["inner_iterations"] == 0 for h in history[2:])
    # work: start 1, gradient 1, products 2 each, then one forward pass per trial point
    assert result.work_units == 1 + 1 + 2 * products + 10


def test_no_curvature_along_the_gradient_stops_with_a_warning(regression):
    model, x, y = regression(40, 1)
    problem = build_problem(model, x, y, GNSettings(), comm=MPI.COMM_SELF)
    problem.gn_product = lambda point, v: -v  # not a Gauss–Newton matrix: gᵀBg < 0
    theta0 = problem.separable.theta()
    with pytest.warns(RuntimeWarning, match="no positive curvature"):
        result = minimize(problem, theta0, GNSettings(max_iterations=5))
    assert result.status == "no_curvature" and result.iterations == 0
    torch.testing.assert_close(result.theta, theta0)


def _dense_gauss_newton(problem, theta):
    """(g (m,), B (m, m)) of ``problem`` at θ from m products."""
    point = problem.evaluate(theta)
    eye = torch.eye(len(theta), dtype=theta.dtype)
    B = torch.stack([problem.gn_product(point, e) for e in eye], dim=1)
    return problem.gradient(point), 0.5 * (B + B.T)


@pytest.mark.parametrize(
    "settings",
    [
        {"globalization": "levenberg_marquardt", "damping": 1e-4},
        {"globalization": "trust_region", "radius": 1.0},
    ],
)
def test_rejected_step_is_re_solved_in_its_basis_exactly_and_for_one_work_unit(
    regression, settings
):
    """The first Gauss–Newton step is rejected; the steps after it come from the first basis
    (grown to convergence, so it holds the exact damped / trust-region steps) and equal the dense
    solutions at θ0 with the new damping or radius, for 1 WU each instead of a new gradient and
    new products. (B is singular here: the damping is small enough for a rejection and large
    enough for the damped system to be well conditioned when the step is accepted.)"""
    model, x, y = regression(60, 2)
    gn_settings = GNSettings(
        max_iterations=30,
        krylov_rtol=1e-12,
        krylov_forcing=None,
        krylov_max_iterations=200,
        **settings,
    )
    problem = build_problem(model, x, y, gn_settings, comm=MPI.COMM_SELF)
    theta0 = problem.separable.theta()
    result = minimize(problem, theta0, gn_settings)
    history = result.history
    accepted = next(k for k, h in enumerate(history) if h.get("accepted"))
    assert accepted >= 2, "the case needs a rejected first step"
    assert [h["krylov_reused"] for h in history[1 : accepted + 1]] == [False] + [True] * (
        accepted - 1
    )
    first = history[1]["work_units"] - history[0]["work_units"]
    assert first == 1 + 2 * history[1]["inner_iterations"] + 1
    for k in range(2, accepted + 1):
        assert history[k]["work_units"] - history[k - 1]["work_units"] == 1
        assert history[k]["inner_iterations"] == 0

    g, B = _dense_gauss_newton(build_problem(model, x, y, gn_settings, comm=MPI.COMM_SELF), theta0)
    eye = torch.eye(len(g), dtype=g.dtype)
    eigenvalues, U = torch.linalg.eigh(B)
    previous = history[accepted - 1]
    if settings["globalization"] == "levenberg_marquardt":
        shift = previous["damping"] * float(g @ B @ g) / float(g @ g)
    else:
        c, radius = U.T @ g, previous["radius"]
        shift = brentq(
            lambda t: float((c / (eigenvalues + t)).norm()) - radius,
            0.0,
            float(g.norm()) / radius,
            xtol=1e-300,
            rtol=4 * EPS,
        )
    step = torch.linalg.solve(B + shift * eye, -g)
    # rounding in the products and solves, amplified by the condition number of B + shift I
    kappa = float((eigenvalues.max() + shift) / (eigenvalues.min() + shift))
    until_accepted = dataclasses.replace(gn_settings, max_iterations=accepted)
    result = minimize(
        build_problem(model, x, y, until_accepted, comm=MPI.COMM_SELF), theta0, until_accepted
    )
    torch.testing.assert_close(
        result.theta, theta0 + step, rtol=0, atol=1000 * EPS * kappa * float(step.norm())
    )


@pytest.mark.parametrize("forcing", [None, 0.1])
@pytest.mark.parametrize("globalization", ["levenberg_marquardt", "trust_region", "armijo"])
@pytest.mark.parametrize("normalised", [False, True])
@pytest.mark.parametrize("network", ["mlp", "deeponet"])
def test_targets_scaled_by_powers_of_ten_give_the_same_iterates(
    globalization, normalised, network, forcing, operator
):
    """Scaling the targets by c = 10^k scales w(θ) = (W, β), Φ, g and B by c, c², c², c² (or, when
    the output normaliser is refitted to them, leaves w alone): the relative losses, the accepted
    steps and θ do not change, Tikhonov terms on w and θ included. The DeepONet has its branch's
    last layer and its bias eliminated, its trunk giving the right features."""
    if network == "mlp":
        g = torch.Generator().manual_seed(1)
        x = torch.rand(50, 2, dtype=torch.float64, generator=g) * 2 - 1
        y = torch.cat([torch.sin(3 * x[:, :1]) * x[:, 1:], torch.cos(2 * x[:, 1:]) + 0.5], dim=1)
    else:
        _, x, y = operator()
    settings = GNSettings(
        globalization=globalization,
        damping=1e-6,
        radius=3.0,
        alpha_W=1e-3,
        # relative to the targets' mean square about the output shift: for the normalised DeepONet
        # their variance, ~100× below their mean square; 1e-3 there holds θ where every step is
        # accepted
        alpha_theta=1e-5 if network == "deeponet" and normalised else 1e-3,
        max_iterations=12,
        krylov_forcing=forcing,
        krylov_max_iterations=8,
    )
    runs = []
    for k in range(-3, 4):
        if network == "deeponet":
            model = operator()[0]
            if normalised:
                result = train_gnvpro_on_dataset(model, x, 10.0**k * y, settings, MPI.COMM_SELF)
            else:  # no output normalisation (a shift fixed while the targets scale would not be)
                model.output_normalizer = Normalizer()
                result = run_gnvpro(model, x, 10.0**k * y, settings, comm=MPI.COMM_SELF)
        elif normalised:
            torch.manual_seed(0)
            model = MLP(2, 2, width=6, depth=2, activation="tanh").double()
            result = train_gnvpro_on_dataset(model, x, 10.0**k * y, settings, MPI.COMM_SELF)
        else:
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 2)).double()
            result = run_gnvpro(model, x, 10.0**k * y, settings, comm=MPI.COMM_SELF)
        runs.append(result)
    reference = runs[3]
    relative = [h["objective"] / reference.history[0]["objective"] for h in reference.history]
    steps = [(h.get("accepted"), h.get("step_length")) for h in reference.history]
    # the case has accepted and rejected steps, or backtracking; with the forcing term, Lanczos
    # stopped at its loose tolerance in some iteration (fewer products than allowed)
    assert (
        {True, False} <= {a for a, _ in steps}
        or any(t and t < 1 for _, t in steps)
        or (forcing is not None and any(0 < h["inner_iterations"] < 8 for h in reference.history))
    )
    # rounding, amplified by 12 Gauss–Newton solves, moves the relative losses by ≤ 1.3e-11 and
    # θ by ≤ 1.5e-11 (measured), the old absolute damping and α_θ by O(1)
    for result in runs:
        history = result.history
        assert [(h.get("accepted"), h.get("step_length")) for h in history] == steps
        assert [h["inner_iterations"] for h in history] == [
            h["inner_iterations"] for h in reference.history
        ]
        assert [h["objective"] / history[0]["objective"] for h in history] == pytest.approx(
            relative, rel=1e-9
        )
        assert [h["loss"] / history[0]["loss"] for h in history] == pytest.approx(
            [h["loss"] / reference.history[0]["loss"] for h in reference.history], rel=1e-9
        )
        torch.testing.assert_close(result.theta, reference.theta, rtol=0, atol=1e-10)


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
    with pytest.raises(ValueError, match="krylov_forcing must be in"):
        train_gnvpro(model, x, y, comm=MPI.COMM_SELF, krylov_forcing=1.5)
    with pytest.raises(ValueError, match="unknown loss"):
        train_gnvpro(model, x, y, loss="hinge", comm=MPI.COMM_SELF)


def test_forcing_term_loosens_the_first_solves_and_tightens_near_a_minimum(regression):
    """η_k = max(krylov_rtol, min(krylov_forcing, √(‖g_k‖/‖g_1‖))): the first Lanczos basis
    stops at the relative residual 0.1 after fewer products than the fixed tolerance needs; once
    the gradient has fallen 100-fold (η_k ≤ 0.1) the bases grow larger than the first."""
    model, x, y = regression(60, 2)
    runs = {}
    for forcing in (None, 0.1):
        settings = GNSettings(
            max_iterations=25, krylov_rtol=1e-6, krylov_max_iterations=60, krylov_forcing=forcing
        )
        problem = build_problem(model, x, y, settings, comm=MPI.COMM_SELF)
        runs[forcing] = minimize(problem, problem.separable.theta(), settings).history
    fixed, forced = runs[None][1], runs[0.1][1]
    assert forced["krylov_reason"] == "converged"
    assert 0 < forced["inner_iterations"] < fixed["inner_iterations"]
    late = [
        h["inner_iterations"]
        for h in runs[0.1][2:]
        if h["gradient_norm"] <= 1e-2 * forced["gradient_norm"]
    ]
    assert late, "the run should get the gradient 100-fold down"
    assert max(late) > forced["inner_iterations"]
    assert runs[0.1][-1]["objective"] < runs[0.1][0]["objective"]
