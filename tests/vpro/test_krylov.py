"""Steihaug–Toint CG: interior solution, boundary stop, model change."""

import math

import pytest
import torch

from pinn_lsr.vpro.krylov import steihaug_cg


def _spd(n=8):
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))[0]
    return Q @ torch.diag(torch.logspace(0, 2, n, dtype=torch.float64)) @ Q.T, torch.randn(
        n, dtype=torch.float64, generator=g
    )


def test_interior_solution_converges():
    B, g = _spd()
    result = steihaug_cg(lambda v: B @ v, g, math.inf, rtol=1e-12, max_iterations=50)
    torch.testing.assert_close(result.step, torch.linalg.solve(B, -g))
    assert result.reason == "converged"
    assert result.model_change == pytest.approx(
        float(g @ result.step + 0.5 * result.step @ B @ result.step), rel=1e-12
    )


def test_boundary_step_has_the_radius():
    B, g = _spd()
    result = steihaug_cg(lambda v: B @ v, g, 1e-3, rtol=1e-12, max_iterations=50)
    assert result.reason == "boundary"
    assert abs(float(result.step.norm()) - 1e-3) < 1e-12
    assert result.model_change < 0
