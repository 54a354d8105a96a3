"""Lanczos bases: CG iterates, damped and trust-region steps, re-solves, scale invariance."""

import math

import pytest
import torch
from scipy.optimize import brentq

from pinn_lsr.vpro.krylov import lanczos

EPS = torch.finfo(torch.float64).eps


def _spd(n=8):
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))[0]
    return Q @ torch.diag(torch.logspace(0, 2, n, dtype=torch.float64)) @ Q.T, torch.randn(
        n, dtype=torch.float64, generator=g
    )


def _cg(B, g, rtol, max_iterations):
    """Plain CG on B s = −g from 0: (s, iterations)."""
    s, r = torch.zeros_like(g), -g
    p, rr = r.clone(), float(r @ r)
    for iteration in range(1, max_iterations + 1):
        Bp = B @ p
        alpha = rr / float(p @ Bp)
        s, r = s + alpha * p, r - alpha * Bp
        if float(r @ r) <= rtol**2 * float(g @ g):
            break
        p, rr = r + (float(r @ r) / rr) * p, float(r @ r)
    return s, iteration


def _ball_solution(B, g, radius):
    """argmin gᵀs + ½sᵀBs over ‖s‖ ≤ radius for positive definite B, by bracketing σ."""
    eye = torch.eye(len(g), dtype=g.dtype)

    def step(sigma):
        return torch.linalg.solve(B + sigma * eye, -g)

    if float(step(0.0).norm()) <= radius:
        return step(0.0)
    sigma = brentq(
        lambda t: float(step(t).norm()) - radius,
        0.0,
        float(g.norm()) / radius,
        xtol=1e-300,
        rtol=4 * EPS,
    )
    return step(sigma)


def test_converged_basis_gives_the_newton_step_and_the_model_change():
    B, g = _spd()
    basis = lanczos(lambda v: B @ v, g, rtol=1e-12, max_iterations=50)
    result = basis.solve()
    torch.testing.assert_close(result.step, torch.linalg.solve(B, -g))
    assert basis.reason == "converged"
    assert not result.boundary
    assert result.model_change == pytest.approx(
        float(g @ result.step + 0.5 * result.step @ B @ result.step), rel=1e-12
    )
    torch.testing.assert_close(basis.Q @ basis.Q.T, torch.eye(len(basis.Q), dtype=torch.float64))


@pytest.mark.parametrize("damping", [0.0, 0.3])
def test_truncated_basis_gives_the_cg_iterate_and_stops_where_cg_stops(damping):
    B, g = _spd()
    shifted = B + damping * float(g @ B @ g) / float(g @ g) * torch.eye(len(g), dtype=g.dtype)
    for rtol, max_iterations in ((1e-1, 50), (1e-12, 3)):
        s, iterations = _cg(shifted, g, rtol, max_iterations)
        basis = lanczos(
            lambda v: B @ v, g, rtol=rtol, max_iterations=max_iterations, damping=damping
        )
        assert basis.iterations == iterations
        torch.testing.assert_close(basis.solve(damping=damping).step, s)


@pytest.mark.parametrize("unit", [None, 2.0])
def test_damped_step_is_relative_to_the_curvature_along_the_gradient_or_a_given_unit(unit):
    B, g = _spd()
    basis = lanczos(lambda v: B @ v, g, rtol=1e-14, max_iterations=50, unit=unit)
    lam = 0.1 * (float(g @ B @ g) / float(g @ g) if unit is None else unit)
    assert basis.unit == pytest.approx(lam / 0.1, rel=1e-14)
    expected = torch.linalg.solve(B + lam * torch.eye(len(g), dtype=g.dtype), -g)
    result = basis.solve(damping=0.1)
    torch.testing.assert_close(result.step, expected)
    assert result.model_change == pytest.approx(
        float(g @ expected + 0.5 * expected @ B @ expected), rel=1e-12
    )


@pytest.mark.parametrize("radius", [1e-3, 0.05, 0.3])
def test_ball_step_in_a_complete_basis_is_the_trust_region_solution(radius):
    B, g = _spd()
    basis = lanczos(lambda v: B @ v, g, rtol=1e-14, max_iterations=50)
    result = basis.solve(radius=radius)
    assert result.boundary
    assert float(result.step.norm()) == pytest.approx(radius, rel=1e-12)
    torch.testing.assert_close(result.step, _ball_solution(B, g, radius), rtol=1e-9, atol=0)


def test_basis_stops_at_the_boundary_and_its_step_beats_cg_on_the_model():
    B, g = _spd()
    radius = 0.05
    basis = lanczos(lambda v: B @ v, g, rtol=1e-12, max_iterations=50, radius=radius)
    assert basis.reason == "boundary"
    inside = lanczos(lambda v: B @ v, g, rtol=0.0, max_iterations=basis.iterations - 1)
    assert float(inside.solve().step.norm()) < radius
    result = basis.solve(radius=radius)
    assert float(result.step.norm()) == pytest.approx(radius, rel=1e-12)
    assert result.model_change <= inside.solve().model_change


def test_no_curvature_along_the_gradient_gives_an_empty_basis():
    g = torch.ones(5, dtype=torch.float64)
    basis = lanczos(lambda v: -v, g, rtol=1e-6, max_iterations=10)
    assert basis.reason == "curvature" and basis.iterations == 1 and len(basis.T) == 0
    assert float(basis.solve().step.abs().max()) == 0.0


@pytest.mark.parametrize("factor", [1e-3, 1e3])
def test_steps_do_not_change_when_B_and_g_are_scaled_together(factor):
    B, g = _spd()
    for kwargs in ({"damping": 1e-2}, {"radius": 0.05}):
        steps = [
            lanczos(lambda v: c * B @ v, c * g, rtol=1e-3, max_iterations=4, **kwargs)
            .solve(**kwargs)
            .step
            for c in (1.0, factor)
        ]
        torch.testing.assert_close(steps[1], steps[0], rtol=100 * EPS, atol=100 * EPS)


def test_re_solve_needs_no_products():
    B, g = _spd()
    calls = []
    basis = lanczos(lambda v: calls.append(1) or B @ v, g, rtol=1e-12, max_iterations=50)
    n_products = len(calls)
    for kwargs in ({"damping": 1.0}, {"radius": 1e-2}, {"damping": 0.5, "radius": 1e-3}):
        assert math.isfinite(float(basis.solve(**kwargs).step.norm()))
    assert len(calls) == n_products == basis.iterations
