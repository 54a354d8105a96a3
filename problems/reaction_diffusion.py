"""Reaction–diffusion: ``-Δu + k(x) u = f`` in the unit square, ``u = 0`` on the boundary.

The input is the reaction coefficient ``k(x) = scale · exp(sigma · ψ(x)) > 0``, a log-normal field
with ``ψ ~ N(0, (-Δ + τ²)^(-α))`` (:func:`~pinn_lsr.data.grf.gaussian_random_field`; with the
default α = 2, τ = 3, ψ has a pointwise standard deviation of about 0.29 and ``|ψ| < 1.7`` on
32 × 32 grids, so k lies in about [0.2, 5] · scale). ``f`` is a constant source.

All quantities are dimensionless (unit length, unit diffusivity). The default ``scale = 30`` is
about 1.5 times the smallest Dirichlet eigenvalue of ``-Δ`` (2π² ≈ 19.7), so the reaction changes
the solution by order one (reaction length ``1/√k`` from about 0.08 to 0.4): where k is large u is
near ``f/k``, where it is small u is near the Poisson solution.

The operator is symmetric positive definite (k ≥ 0), so physics LSR uses the energy norm of ``A``.
"""

from dataclasses import dataclass

import numpy as np
import ufl

from pinn_lsr.data.grf import gaussian_random_field


@dataclass(frozen=True)
class ReactionDiffusion:
    """Reaction–diffusion problem parameters (dimensionless)."""

    alpha: float = 2.0  # smoothness exponent of the covariance of log k
    tau: float = 3.0  # inverse length scale of the covariance of log k
    sigma: float = 1.0  # amplitude of log k
    scale: float = 30.0  # geometric-mean reaction coefficient (k = scale where ψ = 0)
    source: float = 1.0  # constant right-hand side f

    name = "reaction_diffusion"
    input_name = "reaction"
    kind = "linear"
    components = 1
    symmetric = True

    def __post_init__(self):
        if not self.scale > 0:
            raise ValueError(f"scale must be positive (k >= 0), got {self.scale}")

    def sample_inputs(self, n_samples: int, size: int, *, seed: int, first: int = 0) -> np.ndarray:
        """Reaction-coefficient samples on the grid, shape (n_samples, size, size), all positive."""
        psi = gaussian_random_field(
            n_samples, size, alpha=self.alpha, tau=self.tau, seed=seed, first=first
        )
        return self.scale * np.exp(self.sigma * psi)

    def forms(self, u, v, w, x):
        """``a(u, v) = ∫ ∇u·∇v + w u v``, ``L(v) = ∫ f v``."""
        dx = ufl.dx(
            domain=ufl.domain.extract_unique_domain(x)
        )  # bound to the mesh: f = 0 stays a valid form
        return ufl.inner(ufl.grad(u), ufl.grad(v)) * dx + w * u * v * dx, self.source * v * dx
