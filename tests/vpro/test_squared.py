"""Closed-form (W, β), reduced Jacobian and gradient of the squared-loss problem, for the affine
case (an MLP's last layer) and the bilinear one (a DeepONet's branch head and bias, right features
from the trunk)."""

import math

import pytest
import torch
from mpi4py import MPI

from pinn_lsr.vpro.problem import WorkCounter
from pinn_lsr.vpro.separable import as_separable
from pinn_lsr.vpro.squared import SquaredProblem

ALPHA_W = 1e-3
# mlp: affine; deeponet: 7 samples × 16 points, W (5, 7) and β; few_points: 3 points < 5 trunk
# features (T has a null space); few_samples: 4 samples < 7 left features (so has H)
CASES = ["mlp", "deeponet", "deeponet_few_points", "deeponet_few_samples"]


@pytest.fixture(params=CASES)
def case(request, regression, operator):
    if request.param == "mlp":
        model, x, y = regression(50, 3)
        return as_separable(model), x, y
    model, a, u = operator()
    if request.param == "deeponet_few_points":
        points = torch.rand(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
        return as_separable(model, points=points), a, model(a, points).detach() + 0.1 * a[:, 0, :3]
    if request.param == "deeponet_few_samples":
        return as_separable(model), a[:4], u[:4]
    return as_separable(model), a, u


def _problem(case, alpha_theta=1e-4):
    separable, x, y = case
    return SquaredProblem(
        separable,
        x,
        y,
        alpha_W=ALPHA_W,
        alpha_theta=alpha_theta,
        theta_ref=None,
        comm=MPI.COMM_SELF,
        work=WorkCounter(),
    )


def test_eliminated_weights_match_a_dense_least_squares_solve(case):
    """The Kronecker-structured solve equals lstsq on the formed design matrix, rows (i, x),
    columns (l, j) then β: c H[i, j] T[x, l] and c, stacked on √α_W I."""
    separable = case[0]
    problem = _problem(case)
    theta = separable.theta()
    point = problem.evaluate(theta)
    values = separable.features(theta, problem.prepared)
    H = torch.cat([values[0], torch.ones(len(values[0]), 1, dtype=torch.float64)], dim=1)
    T = values[1] if separable.has_right else torch.eye(separable.n_right, dtype=torch.float64)
    design = problem.c * torch.einsum("ij,xl->ixlj", H, T).reshape(len(H) * len(T), -1)
    if separable.offset is not None:
        design = torch.cat(
            [design, torch.full((len(design), 1), problem.c, dtype=torch.float64)], dim=1
        )
    n_unknowns = design.shape[1]
    stacked = torch.cat([design, math.sqrt(ALPHA_W) * torch.eye(n_unknowns, dtype=torch.float64)])
    rhs = torch.cat([problem.B.reshape(-1), torch.zeros(n_unknowns, dtype=torch.float64)])
    direct = torch.linalg.lstsq(stacked, rhs[:, None], driver="gelsd").solution[:, 0]
    W, offset = point.weights
    torch.testing.assert_close(W.reshape(-1), direct[: W.numel()], rtol=1e-10, atol=1e-12)
    if separable.offset is not None:
        torch.testing.assert_close(offset, direct[-1], rtol=1e-10, atol=1e-12)
    else:
        assert offset is None and W.numel() == n_unknowns
    residual = design @ direct - problem.B.reshape(-1)
    assert point.loss == pytest.approx(float(residual.pow(2).sum()), rel=1e-10)
    penalty = 0.5 * ALPHA_W * float(direct.pow(2).sum())
    assert point.objective == pytest.approx(
        0.5 * point.loss + penalty + problem.theta_penalty(theta), rel=1e-10
    )


def _reduced_residual(problem, theta):
    point = problem.evaluate(theta)
    return torch.cat(
        [point.E.reshape(-1), math.sqrt(ALPHA_W) * problem._flat(*point.weights)]
    ), point.objective


def test_reduced_jacobian_and_gradient_match_finite_differences(case):
    problem = _problem(case)
    theta = case[0].theta()
    point = problem.evaluate(theta)
    v = torch.randn(theta.shape, dtype=theta.dtype, generator=torch.Generator().manual_seed(3))
    eps = 1e-6
    plus, minus = (
        _reduced_residual(problem, theta + eps * v),
        _reduced_residual(problem, theta - eps * v),
    )
    dE, dw = problem.reduced_jvp(point, v)
    torch.testing.assert_close(
        torch.cat([dE.reshape(-1), dw]), (plus[0] - minus[0]) / (2 * eps), rtol=1e-6, atol=1e-8
    )
    fd_objective = (plus[1] - minus[1]) / (2 * eps)
    assert float(problem.gradient(point) @ v) == pytest.approx(fd_objective, rel=1e-6)


def test_reduced_vjp_is_the_adjoint_and_work_is_counted(case):
    problem = _problem(case)
    theta = case[0].theta()
    point = problem.evaluate(theta)
    g = torch.Generator().manual_seed(4)
    v = torch.randn(theta.shape, dtype=theta.dtype, generator=g)
    dE, dw = problem.reduced_jvp(point, v)
    U, V = (
        torch.randn(dE.shape, dtype=dE.dtype, generator=g),
        torch.randn(dw.shape, dtype=dw.dtype, generator=g),
    )
    lhs = float((dE * U).sum() + (dw * V).sum())
    assert float(problem.reduced_vjp(point, U, V) @ v) == pytest.approx(lhs, rel=1e-12)
    problem.gn_product(point, v)
    assert problem.work.units == 1 + 2
