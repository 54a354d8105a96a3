"""Poisson: ``-Δu = f`` in the domain, ``u = 0`` on the boundary.

Inputs are random smooth sources ``f`` (a Gaussian random field times ``scale``). For
convergence checks, :meth:`Poisson.manufactured_forms` uses the source of the manufactured
solution ``u = sin(πx) sin(πy)`` on the unit square, ``f = 2π² sin(πx) sin(πy)``.
"""

from dataclasses import dataclass

import numpy as np
import ufl

from pinn_lsr.data.grf import gaussian_random_field


@dataclass(frozen=True)
class Poisson:
    """Poisson problem parameters (dimensionless)."""

    alpha: float = 2.0  # smoothness exponent of the source covariance
    tau: float = 3.0  # inverse length scale of the source covariance
    scale: float = 10.0  # source amplitude

    name = "poisson"
    input_name = "source"
    kind = "linear"
    components = 1
    symmetric = True

    def sample_inputs(self, n_samples: int, size: int, *, seed: int, first: int = 0) -> np.ndarray:
        """Source samples on the grid, shape (n_samples, size, size)."""
        return self.scale * gaussian_random_field(
            n_samples, size, alpha=self.alpha, tau=self.tau, seed=seed, first=first
        )

    def forms(self, u, v, w, x):
        """``a(u, v) = ∫ ∇u·∇v``, ``L(v) = ∫ w v``."""
        return ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx, w * v * ufl.dx

    @staticmethod
    def exact_solution(x):
        """The manufactured solution ``sin(πx) sin(πy)`` (UFL)."""
        return ufl.sin(ufl.pi * x[0]) * ufl.sin(ufl.pi * x[1])

    def manufactured_forms(self, u, v, w, x):
        """Forms whose exact solution is :meth:`exact_solution` (the input ``w`` is ignored)."""
        f = 2 * ufl.pi**2 * self.exact_solution(x)
        return ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx, f * v * ufl.dx
