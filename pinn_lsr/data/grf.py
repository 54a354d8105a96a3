"""Gaussian random fields with the FNO papers' conventions (Li et al., "Fourier Neural Operator
for Parametric PDEs", ICLR 2021).

* :func:`gaussian_random_field`: covariance ``(-Δ + τ² I)^(-α)`` with Neumann boundary conditions
  on the unit square, sampled by a cosine series (their MATLAB ``GRF.m``):
  ``U = idct2(s · λ ⊙ ξ)``, ``λ_k = τ^(α-1) (π²|k|² + τ²)^(-α/2)``, ``ξ ~ N(0, I)``, mean mode
  set to zero (Darcy and the other 2D problems).
* :func:`periodic_random_field`: covariance ``σ² (-Δ + τ² I)^(-α)`` on the periodic unit
  interval, sampled by a Fourier series (their Burgers initial conditions: σ² = 625, τ² = 25,
  α = 2).
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


def periodic_random_field(
    n_samples: int,
    size: int,
    *,
    alpha: float = 2.0,
    tau: float = 5.0,
    sigma: float = 25.0,
    seed: int = 0,
    first: int = 0,
) -> np.ndarray:
    """Samples ``first .. first + n_samples - 1`` of the periodic field at ``x_j = j / size``,
    ``j = 0 .. size-1``, shape (n_samples, size), float64 (dimensionless).

    ``u(x) = Σ_{k=1}^{K} √(2 λ_k) (ξ_k cos 2πkx + η_k sin 2πkx)``, ``λ_k = σ² (4π²k² + τ²)^(-α)``
    (the eigenvalues of the covariance on the orthonormal Fourier basis), ``ξ, η ~ N(0, 1)``,
    no mean mode, ``K = ⌈size/2⌉ − 1``: every mode below the grid's Nyquist frequency, so the
    samples are band-limited and their trigonometric interpolant is the field itself. Sample ``k``
    depends only on ``(seed, k)``, as in :func:`gaussian_random_field`.
    """
    if size < 3 or n_samples < 0:
        raise ValueError(
            f"need size >= 3 and n_samples >= 0, got size={size}, n_samples={n_samples}"
        )
    k = np.arange(1, (size + 1) // 2)
    amplitude = np.sqrt(2.0) * sigma * (4 * np.pi**2 * k**2 + tau**2) ** (-alpha / 2)
    phase = 2 * np.pi * np.outer(np.arange(size) / size, k)  # (size, K)
    basis = np.concatenate([np.cos(phase), np.sin(phase)], axis=1) * np.tile(amplitude, 2)
    fields = np.empty((n_samples, size))
    for i in range(n_samples):
        xi = sample_seed_sequence(seed, first + i).standard_normal(2 * len(k))
        fields[i] = basis @ xi
    return fields


def threshold(field: np.ndarray, *, high: float = 12.0, low: float = 3.0) -> np.ndarray:
    """``high`` where ``field > 0`` and ``low`` elsewhere (the FNO Darcy coefficient)."""
    return np.where(field > 0, high, low)
