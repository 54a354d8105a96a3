"""Linear elasticity (small strain, isotropic, plane strain) of a plate: a vector-valued problem.

Find the displacement ``u: Ω → R²`` with

    -div σ(u) = 0                  in Ω,
    σ(u) = 2μ ε(u) + λ tr(ε(u)) I,  ε(u) = (∇u + ∇uᵀ) / 2,
    u = 0                          on the clamped facets (``mesh.dirichlet_tags``, default tag 2),
    σ(u) n = t                     on the facets of ``traction_tag`` (default 3),
    σ(u) n = 0                     on the rest of the boundary (traction-free),

with Lamé parameters ``μ = E / (2(1 + ν))``, ``λ = E ν / ((1 + ν)(1 − 2ν))`` from Young's modulus
``E(x)`` and a fixed Poisson ratio ν. On the default mesh ``meshes/plate_holes.msh`` (the plate
[0, 2] × [0, 1] with two circular holes; facet tags 2 "left" x = 0, 3 "right" x = 2,
4 "top_bottom", 5 "holes") the plate is clamped on the left and pulled on the right by the
constant traction ``t = (traction_x, traction_y)`` (default (1, −0.1): tension and a downward shear,
so both displacement components matter).

The input is ``E(x) = youngs_modulus · exp(sigma · ψ(x)) > 0``, a log-normal field with
``ψ ~ N(0, (-Δ + τ²)^(-α))`` on the grid of the mesh's bounding box (as the scalar problems: one
(s, s) input field). The output has ``components = 2`` values per grid node: the grid form of a
solution is (2, s, s) (u_x, u_y) and the finite-element space vector P1. The operator is symmetric
positive definite once the clamp removes the rigid motions, so physics LSR uses the energy norm.
All quantities are dimensionless.
"""

from dataclasses import dataclass

import numpy as np
import ufl

from pinn_lsr.data.grf import gaussian_random_field


@dataclass(frozen=True)
class Elasticity:
    """Linear elasticity parameters (dimensionless)."""

    alpha: float = 2.0  # smoothness exponent of the covariance of log E
    tau: float = 3.0  # inverse length scale of the covariance of log E
    sigma: float = 1.0  # amplitude of log E (E in about [0.2, 5] · youngs_modulus)
    youngs_modulus: float = 1.0  # geometric-mean Young's modulus (E where ψ = 0)
    poisson_ratio: float = 0.3  # ν, fixed
    traction_x: float = 1.0  # traction t on the facets of traction_tag
    traction_y: float = -0.1
    traction_tag: int = 3  # facet tag of the loaded boundary ("right" on the plate)

    name = "elasticity"
    input_name = "youngs_modulus"
    kind = "linear"
    components = 2  # displacement (u_x, u_y)
    symmetric = True

    def __post_init__(self):
        if not self.youngs_modulus > 0:
            raise ValueError(f"youngs_modulus must be positive, got {self.youngs_modulus}")
        if not -1.0 < self.poisson_ratio < 0.5:
            raise ValueError(f"poisson_ratio must be in (-1, 0.5), got {self.poisson_ratio}")

    def sample_inputs(self, n_samples: int, size: int, *, seed: int, first: int = 0) -> np.ndarray:
        """Young's modulus samples on the grid, shape (n_samples, size, size), all positive."""
        psi = gaussian_random_field(
            n_samples, size, alpha=self.alpha, tau=self.tau, seed=seed, first=first
        )
        return self.youngs_modulus * np.exp(self.sigma * psi)

    def stress(self, u, E):
        """``σ(u) = 2μ ε(u) + λ tr(ε(u)) I`` for Young's modulus ``E`` (UFL)."""
        nu = self.poisson_ratio
        mu, lmbda = E / (2 * (1 + nu)), E * nu / ((1 + nu) * (1 - 2 * nu))
        strain = ufl.sym(ufl.grad(u))
        return 2 * mu * strain + lmbda * ufl.tr(strain) * ufl.Identity(len(u))

    def forms(self, u, v, w, x, ds):
        """``a(u, v) = ∫ σ(u) : ε(v)``, ``L(v) = ∫_{traction_tag} t · v`` (``w`` = E, ``ds``
        tagged)."""
        traction = ufl.as_vector((self.traction_x, self.traction_y))
        a = ufl.inner(self.stress(u, w), ufl.sym(ufl.grad(v))) * ufl.dx
        return a, ufl.inner(traction, v) * ds(self.traction_tag)
