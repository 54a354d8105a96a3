"""Nonlinear diffusion: ``-div((1 + u²) grad u) = f`` in the domain, ``u = 0`` on the boundary.

The source ``f`` is a Gaussian random field times ``scale`` (large enough that the nonlinearity
matters: ``max |u|`` is about 1, so the diffusivity doubles). Solved by Newton's method; physics
LSR linearizes at the network's field (one Gauss–Newton step per I-LSR iteration) and measures
the residual in the dual norm of the SPD part ``S(u) = -div((1 + u²) grad ·)`` of the Jacobian.
"""

from dataclasses import dataclass

import numpy as np
import ufl

from pinn_lsr.data.grf import gaussian_random_field


@dataclass(frozen=True)
class NonlinearDiffusion:
    """Nonlinear diffusion problem parameters (dimensionless)."""

    alpha: float = 2.0  # smoothness exponent of the source covariance
    tau: float = 3.0  # inverse length scale of the source covariance
    scale: float = 200.0  # source amplitude

    name = "nonlinear_diffusion"
    input_name = "source"
    kind = "nonlinear"
    components = 1
    symmetric = False  # the Jacobian has the non-symmetric term div(2u du grad u)

    def sample_inputs(self, n_samples: int, size: int, *, seed: int, first: int = 0) -> np.ndarray:
        """Source samples on the grid, shape (n_samples, size, size)."""
        return self.scale * gaussian_random_field(
            n_samples, size, alpha=self.alpha, tau=self.tau, seed=seed, first=first
        )

    def residual(self, u, v, w, x):
        """``F(u; v) = ∫ (1 + u²) ∇u·∇v − ∫ w v``."""
        return (1 + u**2) * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - w * v * ufl.dx

    def weight(self, u, du, v, w, x):
        """The SPD part of the Jacobian at ``u``: ``∫ (1 + u²) ∇du·∇v``."""
        return (1 + u**2) * ufl.inner(ufl.grad(du), ufl.grad(v)) * ufl.dx
