"""Truncated conjugate gradients for the trust-region subproblem (Steihaug 1983, Toint 1981).

Approximately solves ``min_s q(s) = gᵀs + ½ sᵀBs`` subject to ``‖s‖ ≤ radius`` for a symmetric
positive semi-definite B given by its products. Vectors live in θ-space and are identical on
every rank, so the dot products here need no reduction (the products with B do their own).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

#: Why the iteration stopped.
REASONS = ("converged", "boundary", "curvature", "max_iterations")


@dataclass(frozen=True)
class KrylovResult:
    step: torch.Tensor  # s (m,)
    model_change: float  # q(s) = gᵀs + ½ sᵀBs (≤ 0)
    iterations: int  # products with B
    reason: str  # one of REASONS


def steihaug_cg(
    apply_B: Callable[[torch.Tensor], torch.Tensor],
    g: torch.Tensor,
    radius: float,
    *,
    rtol: float,
    max_iterations: int,
) -> KrylovResult:
    """CG on ``B s = −g`` from s = 0, stopped when

    * ``converged``: ‖B s + g‖ ≤ rtol · ‖g‖;
    * ``boundary``: the next iterate would leave the ball ‖s‖ ≤ radius (the step is cut at the
      sphere);
    * ``curvature``: pᵀBp ≤ 0 along a direction p (step to the sphere along p, or s kept when
      radius is infinite);
    * ``max_iterations``: after ``max_iterations`` products.

    Every iterate decreases q, so any stopping point is a descent step. Local apart from
    ``apply_B``.
    """
    s = torch.zeros_like(g)
    Bs = torch.zeros_like(g)
    r = -g
    p = r.clone()
    rr = float(r @ r)
    target = rtol**2 * rr
    reason = "max_iterations"
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        Bp = apply_B(p)
        curvature = float(p @ Bp)
        if curvature <= 0 or not math.isfinite(curvature):
            if math.isfinite(radius) or iterations == 1:
                tau = _to_sphere(s, p, radius if math.isfinite(radius) else 1.0)
                s, Bs = s + tau * p, Bs + tau * Bp
            reason = "curvature"
            break
        alpha = rr / curvature
        if float((s + alpha * p).norm()) >= radius:
            tau = _to_sphere(s, p, radius)
            s, Bs = s + tau * p, Bs + tau * Bp
            reason = "boundary"
            break
        s, Bs = s + alpha * p, Bs + alpha * Bp
        r = r - alpha * Bp
        rr_next = float(r @ r)
        if rr_next <= target:
            reason = "converged"
            break
        p = r + (rr_next / rr) * p
        rr = rr_next
    return KrylovResult(s, float(g @ s + 0.5 * (s @ Bs)), iterations, reason)


def _to_sphere(s: torch.Tensor, p: torch.Tensor, radius: float) -> float:
    """τ ≥ 0 with ‖s + τ p‖ = radius (for ‖s‖ ≤ radius)."""
    pp, sp, ss = float(p @ p), float(s @ p), float(s @ s)
    return (-sp + math.sqrt(max(sp * sp + pp * (radius**2 - ss), 0.0))) / pp
