import numpy as np
import pytest

from pinn_lsr.data.grf import gaussian_random_field, periodic_random_field, threshold
from problems.darcy import Darcy


def test_reproducible_by_seed_and_independent_of_batching():
    whole = gaussian_random_field(6, 16, seed=7)
    np.testing.assert_array_equal(whole, gaussian_random_field(6, 16, seed=7))
    parts = np.concatenate(
        [gaussian_random_field(2, 16, seed=7), gaussian_random_field(4, 16, seed=7, first=2)]
    )
    np.testing.assert_array_equal(whole, parts)
    assert not np.allclose(whole, gaussian_random_field(6, 16, seed=8))


def test_field_has_zero_mean_and_decaying_spectrum():
    fields = gaussian_random_field(200, 32, seed=0)
    np.testing.assert_allclose(fields.mean(axis=(1, 2)), 0.0, atol=1e-12)  # mean mode removed
    # smooth: neighbouring values are strongly correlated (covariance (-Δ + 9)^-2)
    correlation = np.corrcoef(fields[:, :-1, :].ravel(), fields[:, 1:, :].ravel())[0, 1]
    assert correlation > 0.9


def test_darcy_threshold_fractions_are_plausible():
    a = Darcy().sample_inputs(200, 32, seed=1)
    assert set(np.unique(a)) == {3.0, 12.0}
    fractions = (a == 12.0).mean(axis=(1, 2))
    assert (
        0.4 < fractions.mean() < 0.6
    )  # a symmetric field is positive on half the domain on average
    assert fractions.min() > 0.0 and fractions.max() < 1.0  # both phases in every sample at this τ
    np.testing.assert_array_equal(threshold(np.array([-1.0, 0.0, 2.0])), [3.0, 3.0, 12.0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="size >= 2"):
        gaussian_random_field(1, 1, seed=0)


def test_periodic_field_is_reproducible_band_limited_and_has_its_covariance():
    whole = periodic_random_field(400, 32, seed=3)
    parts = np.concatenate(
        [periodic_random_field(1, 32, seed=3), periodic_random_field(399, 32, seed=3, first=1)]
    )
    np.testing.assert_array_equal(whole, parts)
    assert not np.allclose(whole[0], periodic_random_field(1, 32, seed=4)[0])
    spectrum = np.fft.rfft(whole, axis=1) / 32
    np.testing.assert_allclose(spectrum[:, [0, 16]], 0.0, atol=1e-12)  # no mean, no Nyquist mode
    # E|û_k|² = λ_k for the complex coefficient û_k = √(2λ_k) (ξ_k − iη_k) / 2; the mean of 400
    # exponential variables is within 20 % (4 standard deviations)
    k = np.arange(1, 16)
    expected = 625.0 * (4 * np.pi**2 * k**2 + 25.0) ** -2.0
    np.testing.assert_allclose((np.abs(spectrum[:, 1:16]) ** 2).mean(axis=0), expected, rtol=0.2)
    with pytest.raises(ValueError, match="size >= 3"):
        periodic_random_field(1, 2, seed=0)
