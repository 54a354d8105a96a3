"""Inner Newton–Krylov solve, reduced Jacobian and bad labels of the cross-entropy problem."""

import math

import pytest
import torch
from mpi4py import MPI

from pinn_lsr.vpro.cross_entropy import CrossEntropyProblem
from pinn_lsr.vpro.problem import WorkCounter
from pinn_lsr.vpro.separable import as_separable

ALPHA_W = 1e-2


def _problem(model, x, labels, tol=1e-13):
    return CrossEntropyProblem(
        as_separable(model),
        x,
        labels,
        alpha_W=ALPHA_W,
        alpha_theta=1e-3,
        theta_ref=None,
        comm=MPI.COMM_SELF,
        work=WorkCounter(),
        inner={"tol": tol, "krylov_rtol": 1e-3},
    )


def test_inner_solve_reaches_its_tolerance_and_is_optimal(classification):
    model, x, labels = classification
    for tol in (1e-6, 1e-12):
        point = _problem(model, x, labels, tol=tol).evaluate(as_separable(model).theta())
        assert point.info["w_converged"] and point.info["w_gradient_norm"] <= tol
    W = point.weights.W.clone().requires_grad_(True)
    logits = point.A @ W.T
    objective = torch.nn.functional.cross_entropy(logits, labels) + 0.5 * ALPHA_W * W.pow(2).sum()
    (grad,) = torch.autograd.grad(objective, W)
    assert float(grad.norm()) < 1e-11


def test_reduced_jacobian_and_gradient_match_finite_differences(classification):
    model, x, labels = classification
    problem = _problem(model, x, labels)
    theta = as_separable(model).theta()
    point = problem.evaluate(theta)

    def residual(t):
        p = problem.evaluate(t, start=point)
        return torch.cat(
            [(p.A @ p.Wt).reshape(-1), math.sqrt(ALPHA_W) * p.Wt.reshape(-1)]
        ), p.objective

    v = torch.randn(theta.shape, dtype=theta.dtype, generator=torch.Generator().manual_seed(5))
    eps = 1e-5
    (plus, f_plus), (minus, f_minus) = residual(theta + eps * v), residual(theta - eps * v)
    dO, dW = problem.reduced_jvp(point, v)
    torch.testing.assert_close(
        torch.cat([dO.reshape(-1), dW.reshape(-1)]),
        (plus - minus) / (2 * eps),
        rtol=1e-5,
        atol=1e-7,
    )
    assert float(problem.gradient(point) @ v) == pytest.approx(
        (f_plus - f_minus) / (2 * eps), rel=1e-6
    )
    U = torch.randn(dO.shape, dtype=dO.dtype, generator=torch.Generator().manual_seed(6))
    V = torch.randn(dW.shape, dtype=dW.dtype, generator=torch.Generator().manual_seed(7))
    lhs = float((dO * U).sum() + (dW * V).sum())
    assert float(problem.reduced_vjp(point, U, V) @ v) == pytest.approx(lhs, rel=1e-10)


def test_bad_labels_raise(classification):
    model, x, labels = classification
    with pytest.raises(ValueError, match=r"class indices must lie in \[0, 4\)"):
        _problem(model, x, labels + 1)
    with pytest.raises(ValueError, match="integer class indices"):
        _problem(model, x, labels.double())
