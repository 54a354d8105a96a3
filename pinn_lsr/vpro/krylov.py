"""Lanczos bases for Gauss–Newton subproblems: products once, steps for any damping or radius.

From a gradient g (m,) and products with a symmetric positive semi-definite B, :func:`lanczos`
builds an orthonormal basis Q (k, m) of the Krylov space K_k(B, g) and the tridiagonal
T = Q B Qᵀ (k, k) (Lanczos with full reorthogonalisation). :meth:`KrylovBasis.solve` then
minimises the quadratic model in the basis,

    min_s q(s) + ½ λ‖s‖²  subject to ‖s‖ ≤ Δ,   q(s) = gᵀs + ½ sᵀBs,   s = Qᵀy:
    min_y −‖g‖ y₁ + ½ yᵀ(T + λI)y  subject to ‖y‖ ≤ Δ,

on the eigendecomposition of T (Moré and Sorensen 1983), for any damping λ and radius Δ and
without new products, so a rejected step is re-solved in the basis it was taken from (Gould,
Lucidi, Roma and Toint 1999, "Solving the trust-region subproblem using the Lanczos method"; the
GNvpro paper's code does the same). For Δ = ∞ the solution is the Galerkin solution of
(B + λI)s = −g in K_k, i.e. the k-th CG iterate on that system (Steihaug 1983 stops the same CG
at the sphere instead).

The damping is relative: λ = damping · unit, the unit by default T₁₁ = gᵀBg/gᵀg, the curvature
along the gradient, or one carried over from an earlier basis; so the steps do not change when B
and g (and the unit) are scaled by the same factor (as they are when the targets are).
Vectors live in θ-space and are identical on every rank, so the dot products here need no
reduction (the products with B do their own).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

#: Why :func:`lanczos` stopped.
REASONS = ("converged", "boundary", "curvature", "max_iterations")

#: Relative accuracy of ‖s‖ = Δ in the trust-region solve.
_SPHERE_RTOL = 1e-13


@dataclass(frozen=True)
class KrylovStep:
    step: torch.Tensor  # s (m,), dtype of g
    model_change: float  # q(s) = gᵀs + ½ sᵀBs (undamped; ≤ 0)
    boundary: bool  # the radius constrains the step: ‖s‖ = Δ


@dataclass(frozen=True)
class KrylovBasis:
    """Q, T and ‖g‖ of :func:`lanczos`; see the module docstring."""

    Q: torch.Tensor  # (k, m), orthonormal rows spanning K_k(B, g), dtype of g; k = 0: gᵀBg ≤ 0
    T: torch.Tensor  # (k, k), float64, tridiagonal Q B Qᵀ, T + λI positive definite
    g_norm: float  # ‖g‖
    unit: float  # of the damping: λ = damping · unit
    iterations: int  # products with B it took
    reason: str  # one of REASONS

    def solve(self, *, damping: float = 0.0, radius: float = math.inf) -> KrylovStep:
        """The minimiser in the basis of q(s) + ½ λ‖s‖² over ‖s‖ ≤ ``radius``,
        λ = ``damping`` · ``unit`` (≥ 0). Local; no products with B.

        Inside the ball the solution is the Galerkin one, (T + λI)y = ‖g‖e₁; otherwise the extra
        shift σ > 0 with ‖(T + λI + σI)⁻¹‖g‖e₁‖ = Δ comes from Newton's method on
        1/‖y(σ)‖ − 1/Δ, which rises monotonically to the root from σ = 0 (Moré–Sorensen), to a
        relative accuracy of 1e-13 in ‖s‖. T is unreduced, so the hard case does not arise.
        Eigenvalues of T + λI below ε · its largest (rounding of a singular B) are taken as that.
        """
        if len(self.T) == 0:
            return KrylovStep(torch.zeros(self.Q.shape[1], dtype=self.Q.dtype), 0.0, False)
        eigenvalues, U = torch.linalg.eigh(self.T)
        c = self.g_norm * U[0]  # Uᵀ ‖g‖e₁
        shifted = eigenvalues + damping * self.unit
        shifted = shifted.clamp_min(torch.finfo(shifted.dtype).eps * float(shifted.max()))
        z = c / shifted
        norm = float(z.norm())
        boundary = norm > radius
        if boundary:
            sigma = 0.0
            for _ in range(100):
                if norm - radius <= _SPHERE_RTOL * radius:
                    break
                slope = float((c**2 / (shifted + sigma) ** 3).sum())  # ‖y‖³ d(1/‖y‖)/dσ
                sigma += (norm - radius) * norm**2 / (radius * slope)
                z = c / (shifted + sigma)
                norm = float(z.norm())
        y = U @ z
        model_change = float(-(c @ z) + 0.5 * (eigenvalues * z**2).sum())
        return KrylovStep((y.to(self.Q.dtype) @ self.Q), model_change, boundary)


def lanczos(
    apply_B: Callable[[torch.Tensor], torch.Tensor],
    g: torch.Tensor,
    *,
    rtol: float,
    max_iterations: int,
    damping: float = 0.0,
    unit: float | None = None,
    radius: float = math.inf,
) -> KrylovBasis:
    """Lanczos on B from −g (g ≠ 0), watching the Galerkin solution y_k of
    (T_k + λI)y = ‖g‖e₁ (the CG iterate on (B + λI)s = −g, λ = ``damping`` · ``unit``, the unit
    gᵀBg/gᵀg = T₁₁ when None); stops when

    * ``converged``: the residual ‖(B + λI)s_k + g‖ = β_k |y_k,k| ≤ rtol · ‖g‖ (β_k the next
      off-diagonal entry; 0 when K_k is invariant);
    * ``boundary``: ‖s_k‖ ≥ radius (the basis holds the point where CG leaves the ball);
    * ``curvature``: T_k + λI is not positive definite (B has no positive curvature left in the
      new direction); the last vector is dropped, so k = 0 when gᵀBg ≤ 0;
    * ``max_iterations``: after ``max_iterations`` products.

    Local apart from ``apply_B``. Each product is reorthogonalised against the whole basis twice
    (classical Gram–Schmidt), which keeps Q orthonormal to rounding.

    Args:
        apply_B: v (m,) -> B v (m,).
        g: (m,) the gradient.
    """
    g_norm = float(g.norm())
    q = -g / g_norm
    vectors: list[torch.Tensor] = []
    diagonal: list[float] = []
    off_diagonal: list[float] = []
    shift = pivot = last = 0.0
    reason, iterations = "max_iterations", 0
    for iterations in range(1, max_iterations + 1):
        w = apply_B(q)
        alpha = float(q @ w)
        if iterations == 1:
            unit = alpha if unit is None else unit
            shift = damping * unit
        beta_previous = off_diagonal[-1] if off_diagonal else 0.0
        # pivots of the LDLᵀ factorisation of T_k + λI; |y_k,k| = ‖g‖ Π β_i / Π pivots
        pivot = alpha + shift - (beta_previous**2 / pivot if off_diagonal else 0.0)
        if not pivot > 0:
            reason = "curvature"
            break
        last = (last * beta_previous if off_diagonal else g_norm) / pivot
        vectors.append(q)
        diagonal.append(alpha)
        if math.isfinite(radius):
            y = torch.linalg.solve(
                _tridiagonal(diagonal, off_diagonal)
                + shift * torch.eye(len(diagonal), dtype=torch.float64),
                torch.eye(len(diagonal), dtype=torch.float64)[0] * g_norm,
            )
            if float(y.norm()) >= radius:
                reason = "boundary"
                break
        Q = torch.stack(vectors)
        for _ in range(2):
            w = w - (Q @ w) @ Q
        beta = float(w.norm())
        if beta * last <= rtol * g_norm:
            reason = "converged"
            break
        if iterations < max_iterations:
            off_diagonal.append(beta)
            q = w / beta
    k = len(vectors)
    return KrylovBasis(
        Q=torch.stack(vectors) if vectors else g.new_zeros((0, len(g))),
        T=_tridiagonal(diagonal, off_diagonal[: max(k - 1, 0)]),
        g_norm=g_norm,
        unit=unit,
        iterations=iterations,
        reason=reason,
    )


def _tridiagonal(diagonal: list[float], off_diagonal: list[float]) -> torch.Tensor:
    """The symmetric tridiagonal (k, k) float64 matrix with these entries."""
    T = torch.diag(torch.tensor(diagonal, dtype=torch.float64))
    if off_diagonal:
        beta = torch.tensor(off_diagonal, dtype=torch.float64)
        T = T + torch.diag(beta, 1) + torch.diag(beta, -1)
    return T
