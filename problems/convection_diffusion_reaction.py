"""Convection–diffusion–reaction: ``-div(κ ∇u) + β·∇u + c u = f`` in the unit square, ``u = 0``
on the boundary.

The input is the diffusivity ``κ(x) = kappa · exp(sigma · ψ(x)) > 0``, a log-normal field with
``ψ ~ N(0, (-Δ + τ²)^(-α))`` (:func:`~pinn_lsr.data.grf.gaussian_random_field`; with the default
α = 2, τ = 3 the pointwise standard deviation of ψ is about 0.29 and ``|ψ| < 1.7`` on 32 × 32
grids, so κ lies in about [0.18, 5] · kappa, 98 % of values in [0.5, 2.1] · kappa). The velocity
``β = (velocity_x, velocity_y)`` (constant, so divergence-free), the reaction ``c ≥ 0`` and the
source ``f`` are constant parameters, the same for every sample.

All quantities are dimensionless (unit length; κ, β and c relative to a reference diffusivity).
With the defaults (``|β| = 6.7``, κ ≳ 0.2) the global Péclet number ``|β| L / κ`` is about 7 for
κ = 1, and on the default grid (resolution 32, mesh size ``h = 1/31``) the cell Péclet number
``Pe_h = |β| h / (2 κ)`` is 0.11 for κ = 1 and at most about 0.6 at the smallest κ: below 1,
so plain Galerkin P1 (no SUPG, none is added) is stable, with no spurious oscillations. Coarse
grids raise it (resolution 12: ``Pe_h ≈ 0.3/κ``).

The bilinear form is not symmetric. The FEM solve uses the configured direct LU (MUMPS), valid for
any invertible matrix (a symmetric-only ``fem.petsc_options`` choice such as CG is a usage error);
physics LSR cannot use the energy norm of ``A`` and minimises the residual in
the dual norm of the symmetric part ``S = -div(κ ∇·) + c`` (``β`` being divergence-free, the
convection part is skew on ``H¹₀``): ``forms`` returns that weighting as a third form and the
problem declares ``symmetric = False`` (``physics.norm=auto`` then picks ``dual``).
"""

from dataclasses import dataclass

import numpy as np
import ufl

from pinn_lsr.data.grf import gaussian_random_field


@dataclass(frozen=True)
class ConvectionDiffusionReaction:
    """Convection–diffusion–reaction problem parameters (dimensionless)."""

    alpha: float = 2.0  # smoothness exponent of the covariance of log κ
    tau: float = 3.0  # inverse length scale of the covariance of log κ
    sigma: float = 1.0  # amplitude of log κ
    kappa: float = 1.0  # geometric-mean diffusivity (κ = kappa where ψ = 0)
    velocity_x: float = 6.0  # β_x
    velocity_y: float = 3.0  # β_y
    reaction: float = 1.0  # c >= 0
    source: float = 1.0  # constant right-hand side f

    name = "cdr"
    input_name = "diffusivity"
    kind = "linear"
    components = 1
    symmetric = False  # convection: forms() adds the SPD part s for the dual norm

    def __post_init__(self):
        if not self.kappa > 0:
            raise ValueError(f"kappa must be positive, got {self.kappa}")
        if not self.reaction >= 0:
            raise ValueError(f"reaction must be >= 0 (coercivity), got {self.reaction}")

    def sample_inputs(self, n_samples: int, size: int, *, seed: int, first: int = 0) -> np.ndarray:
        """Diffusivity samples on the grid, shape (n_samples, size, size), all positive."""
        psi = gaussian_random_field(
            n_samples, size, alpha=self.alpha, tau=self.tau, seed=seed, first=first
        )
        return self.kappa * np.exp(self.sigma * psi)

    def velocity(self):
        """β as a UFL vector."""
        return ufl.as_vector((self.velocity_x, self.velocity_y))

    def forms(self, u, v, w, x):
        """``a(u, v) = ∫ w ∇u·∇v + (β·∇u) v + c u v``, ``L(v) = ∫ f v`` and the SPD weighting
        ``s(u, v) = ∫ w ∇u·∇v + c u v`` (the symmetric part of ``a``)."""
        dx = ufl.dx(
            domain=ufl.domain.extract_unique_domain(x)
        )  # on the mesh: β = 0 or c = 0 stay valid forms
        diffusion_reaction = (
            ufl.inner(w * ufl.grad(u), ufl.grad(v)) * dx + self.reaction * u * v * dx
        )
        a = diffusion_reaction + ufl.dot(self.velocity(), ufl.grad(u)) * v * dx
        return a, self.source * v * dx, diffusion_reaction
