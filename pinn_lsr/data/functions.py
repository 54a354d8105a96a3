"""Function-fitting data (the LSR paper's experiment): random points in [-1, 1]² and a target.

The paper fits ``sin(πx) sin(πy)`` from 10 000 random points (20 % held out for validation) and
tests on a 100 × 100 grid.
"""

import numpy as np

TARGETS = {
    "sin_sin": lambda x, y: np.sin(np.pi * x) * np.sin(np.pi * y),
    "peaks": lambda x, y: (
        3 * (1 - 3 * x) ** 2 * np.exp(-9 * x**2 - (3 * y + 1) ** 2)
        - 10 * (3 * x / 5 - 27 * x**3 - 243 * y**5) * np.exp(-9 * x**2 - 9 * y**2)
        - np.exp(-((3 * x + 1) ** 2) - 9 * y**2) / 3
    ),
}


def target_values(name: str, points: np.ndarray) -> np.ndarray:
    """Target at ``points`` (n, 2) -> (n, 1)."""
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; choose one of {sorted(TARGETS)}")
    return TARGETS[name](points[:, 0], points[:, 1])[:, None]


def random_points(n: int, *, seed: int) -> np.ndarray:
    """``n`` uniform points in [-1, 1]², shape (n, 2)."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(n, 2))


def grid_points(size: int = 100) -> np.ndarray:
    """The ``size × size`` test grid on [-1, 1]², shape (size², 2)."""
    t = np.linspace(-1.0, 1.0, size)
    X, Y = np.meshgrid(t, t, indexing="ij")
    return np.column_stack([X.ravel(), Y.ravel()])
