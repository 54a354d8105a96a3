"""Darcy flow: ``-div(a grad u) = f`` in the domain, ``u = 0`` on the boundary.

The permeability ``a`` is a thresholded Gaussian random field (the FNO benchmark):
``a = high`` where ``ψ > 0``, ``low`` elsewhere, ``ψ ~ N(0, (-Δ + τ²)^(-α))``; ``f`` constant.
"""

from dataclasses import dataclass

import numpy as np
import ufl

from pinn_lsr.data.grf import gaussian_random_field, threshold


@dataclass(frozen=True)
class Darcy:
    """Darcy problem parameters (dimensionless)."""

    alpha: float = 2.0  # smoothness exponent of the covariance
    tau: float = 3.0  # inverse length scale of the covariance
    high: float = 12.0  # permeability where the field is positive
    low: float = 3.0  # permeability elsewhere
    source: float = 1.0  # constant right-hand side f

    name = "darcy"
    input_name = "permeability"
    kind = "linear"
    components = 1
    symmetric = True

    def sample_inputs(self, n_samples: int, size: int, *, seed: int, first: int = 0) -> np.ndarray:
        """Permeability samples on the grid, shape (n_samples, size, size), values in
        {low, high}."""
        psi = gaussian_random_field(
            n_samples, size, alpha=self.alpha, tau=self.tau, seed=seed, first=first
        )
        return threshold(psi, high=self.high, low=self.low)

    def forms(self, u, v, w, x):
        """``a(u, v) = ∫ w ∇u·∇v``, ``L(v) = ∫ f v``."""
        return ufl.inner(w * ufl.grad(u), ufl.grad(v)) * ufl.dx, self.source * v * ufl.dx
