"""Viscous Burgers: ``u_t + (u²/2)_x = ν u_xx`` on the periodic unit interval, ``0 < t ≤ T``.

The operator maps the initial condition ``u0`` on the s-point grid ``x_k = k / s`` to ``u(·, T)``
on the same grid (the FNO and DeepONet papers' benchmark: ν = 0.1, T = 1,
``u0 ~ N(0, 625 (-Δ + 25)^(-2))``, :func:`~pinn_lsr.data.grf.periodic_random_field`).

FEM (:class:`~pinn_lsr.fem.evolution.PeriodicEvolution`): P1 on the closed chain of
``s · refinement`` cells (:func:`~pinn_lsr.fem.mesh.periodic_interval`), Crank–Nicolson in time by
default, Newton by SNES at every step. The conservative weak form keeps ``∫ u`` constant to the
solver's tolerance. Dimensionless throughout.

Physics LSR is not defined for this time-dependent problem (data LSR only): with the physics
stage requested the command line exits with status 2.
"""

from dataclasses import dataclass

import numpy as np
import ufl

from pinn_lsr.data.grf import periodic_random_field


@dataclass(frozen=True)
class Burgers:
    """Burgers problem parameters (dimensionless)."""

    viscosity: float = 0.1  # ν
    final_time: float = 1.0  # T
    time_steps: int = 100  # implicit steps of Δt = T / time_steps
    theta: float = 0.5  # θ-method: 0.5 Crank–Nicolson (second order), 1 backward Euler
    refinement: int = 1  # mesh cells per grid interval
    alpha: float = 2.0  # covariance σ² (-Δ + τ²)^(-α) of u0
    tau: float = 5.0
    sigma: float = 25.0

    name = "burgers"
    input_name = "initial condition"
    kind = "evolution"
    components = 1
    symmetric = False  # the Jacobian's advection part is not symmetric

    def __post_init__(self):
        for key in ("viscosity", "final_time", "tau", "sigma"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        for key in ("time_steps", "refinement"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
        if not 0.5 <= self.theta <= 1:
            raise ValueError(f"theta must be in [0.5, 1], got {self.theta}")

    def sample_inputs(self, n_samples: int, size: int, *, seed: int, first: int = 0) -> np.ndarray:
        """Initial conditions at the grid nodes, shape (n_samples, size)."""
        return periodic_random_field(
            n_samples,
            size,
            alpha=self.alpha,
            tau=self.tau,
            sigma=self.sigma,
            seed=seed,
            first=first,
        )

    def spatial_residual(self, u, v, d):
        """``R(u; v) = ∫ ν u_x v_x − (u²/2) v_x``: the weak form of ``(u²/2)_x − ν u_xx``."""
        return (self.viscosity * d(u) - u**2 / 2) * d(v) * ufl.dx
