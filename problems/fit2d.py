"""Function fitting, the LSR paper's experiment: learn ``g(x, y)`` on [-1, 1]² from random points.

Not a PDE: the model (an MLP, ``model=mlp``) maps points (n, 2) to values (n, 1); the training
points are drawn at random (the last ``method.validation_fraction`` of them pick the LSR rank),
and the test set is the ``resolution × resolution`` grid. Targets: ``sin_sin`` =
sin(πx) sin(πy) (the paper's), ``peaks`` (MATLAB's peaks function scaled to [-1, 1]²).
"""

from dataclasses import dataclass

import numpy as np

from pinn_lsr.data.functions import TARGETS, grid_points, random_points, target_values


@dataclass(frozen=True)
class Fit2D:
    """Function-fitting problem parameters."""

    target: str = "sin_sin"  # a key of pinn_lsr.data.functions.TARGETS

    name = "fit2d"
    kind = "function"

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; choose one of {sorted(TARGETS)}")

    def training_data(self, n_points: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Random points (n, 2) and target values (n, 1)."""
        points = random_points(n_points, seed=seed)
        return points, target_values(self.target, points)

    def test_data(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The size × size grid (size², 2) and target values (size², 1)."""
        points = grid_points(size)
        return points, target_values(self.target, points)
