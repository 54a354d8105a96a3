"""Closed-form W, reduced Jacobian and gradient of the squared-loss problem."""

import math

import pytest
import torch
from mpi4py import MPI

from pinn_lsr.vpro.problem import WorkCounter
from pinn_lsr.vpro.separable import as_separable
from pinn_lsr.vpro.squared import SquaredProblem

ALPHA_W = 1e-3


def _problem(regression, alpha_theta=1e-4):
    model, x, y = regression(50, 3)
    separable = as_separable(model)
    problem = SquaredProblem(
        separable,
        x,
        y,
        alpha_W=ALPHA_W,
        alpha_theta=alpha_theta,
        theta_ref=None,
        comm=MPI.COMM_SELF,
        work=WorkCounter(),
    )
    return separable, problem, x, y


def test_closed_form_W_matches_a_direct_least_squares_solve(regression):
    separable, problem, x, y = _problem(regression)
    theta = separable.theta()
    point = problem.evaluate(theta)
    Z = separable.features(theta, problem.prepared).detach()
    A = (
        separable.scale
        * torch.cat([Z, torch.ones(len(Z), 1, dtype=Z.dtype)], dim=1)
        / math.sqrt(y.numel())
    )
    B = (y - separable.shift) / math.sqrt(y.numel())
    stacked = torch.cat([A, math.sqrt(ALPHA_W) * torch.eye(A.shape[1], dtype=A.dtype)])
    rhs = torch.cat([B, torch.zeros(A.shape[1], B.shape[1], dtype=B.dtype)])
    direct = torch.linalg.lstsq(stacked, rhs).solution
    torch.testing.assert_close(point.W, direct.T, rtol=1e-10, atol=1e-12)
    assert point.loss == pytest.approx(float(((A @ direct - B) ** 2).sum()), rel=1e-12)


def _reduced_residual(problem, theta):
    point = problem.evaluate(theta)
    return torch.cat(
        [point.E.reshape(-1), math.sqrt(ALPHA_W) * point.Wt.reshape(-1)]
    ), point.objective


def test_reduced_jacobian_matches_finite_differences(regression):
    separable, problem, _, _ = _problem(regression)
    theta = separable.theta()
    point = problem.evaluate(theta)
    v = torch.randn(theta.shape, dtype=theta.dtype, generator=torch.Generator().manual_seed(3))
    eps = 1e-6
    fd = (
        _reduced_residual(problem, theta + eps * v)[0]
        - _reduced_residual(problem, theta - eps * v)[0]
    ) / (2 * eps)
    dE, dW = problem.reduced_jvp(point, v)
    torch.testing.assert_close(
        torch.cat([dE.reshape(-1), dW.reshape(-1)]), fd, rtol=1e-6, atol=1e-8
    )
    fd_objective = (
        _reduced_residual(problem, theta + eps * v)[1]
        - _reduced_residual(problem, theta - eps * v)[1]
    ) / (2 * eps)
    assert float(problem.gradient(point) @ v) == pytest.approx(fd_objective, rel=1e-6)


def test_reduced_vjp_is_the_adjoint_and_work_is_counted(regression):
    separable, problem, _, _ = _problem(regression)
    theta = separable.theta()
    point = problem.evaluate(theta)
    g = torch.Generator().manual_seed(4)
    v = torch.randn(theta.shape, dtype=theta.dtype, generator=g)
    dE, dW = problem.reduced_jvp(point, v)
    U, V = (
        torch.randn(dE.shape, dtype=dE.dtype, generator=g),
        torch.randn(dW.shape, dtype=dW.dtype, generator=g),
    )
    lhs = float((dE * U).sum() + (dW * V).sum())
    assert float(problem.reduced_vjp(point, U, V) @ v) == pytest.approx(lhs, rel=1e-12)
    problem.gn_product(point, v)
    assert problem.work.units == 1 + 2
