"""Gaussian random fields with the FNO papers' convention.

Covariance ``(-Δ + τ² I)^(-α)`` with Neumann boundary conditions on the unit square, sampled
by a cosine series (Li et al., "Fourier Neural Operator for Parametric PDEs", ICLR 2021; their
MATLAB ``GRF.m``): ``U = idct2(s · λ ⊙ ξ)``, ``λ_k = τ^(α-1) (π²|k|² + τ²)^(-α/2)``,
``ξ ~ N(0, I)``, mean mode set to zero.
"""

import numpy as np
import scipy.fft


def sample_seed_sequence(seed: int, index: int) -> np.random.Generator:
    """The generator of sample ``index``: the same whatever rank or batch draws it."""
    return np.random.default_rng([int(seed), int(index)])


def gaussian_random_field(
    n_samples: int,
    size: int,
    *,
    alpha: float = 2.0,
    tau: float = 3.0,
    seed: int = 0,
    first: int = 0,
) -> np.ndarray:
    """Samples ``first .. first + n_samples - 1`` of the field, shape (n_samples, size, size),
    float64.

    Sample ``k`` depends only on ``(seed, k)``, so any split of the indices over ranks or
    batches draws the same fields.
    """
    if size < 2 or n_samples < 0:
        raise ValueError(
            f"need size >= 2 and n_samples >= 0, got size={size}, n_samples={n_samples}"
        )
    k = np.arange(size)
    K1, K2 = np.meshgrid(k, k, indexing="ij")
    sqrt_eig = size * tau ** (alpha - 1) * (np.pi**2 * (K1**2 + K2**2) + tau**2) ** (-alpha / 2)
    sqrt_eig[0, 0] = 0.0
    fields = np.empty((n_samples, size, size))
    for i in range(n_samples):
        xi = sample_seed_sequence(seed, first + i).standard_normal((size, size))
        fields[i] = scipy.fft.idctn(sqrt_eig * xi, type=2, norm="ortho")
    return fields


def threshold(field: np.ndarray, *, high: float = 12.0, low: float = 3.0) -> np.ndarray:
    """``high`` where ``field > 0`` and ``low`` elsewhere (the FNO Darcy coefficient)."""
    return np.where(field > 0, high, low)
