"""Lanczos bases of Krylov spaces: orthonormal, the right span, the tridiagonal, early stop."""

import numpy as np
import pytest
import torch

from pinn_lsr.lsr.krylov import lanczos


def spd_matrix(n, seed, eigenvalues=None):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    values = np.geomspace(1e-3, 1e2, n) if eigenvalues is None else eigenvalues
    return torch.from_numpy(Q @ np.diag(values) @ Q.T), torch.from_numpy(rng.standard_normal(n))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_the_basis_is_orthonormal_spans_the_krylov_space_and_tridiagonalises(dtype, tol):
    H, g = spd_matrix(60, 0)
    basis = lanczos(g, lambda q: H @ q, 12, dtype=dtype)
    Q = basis.Q.double()
    assert basis.Q.dtype == dtype and Q.shape == (60, 12)
    torch.testing.assert_close(Q.T @ Q, torch.eye(12, dtype=torch.float64), atol=tol, rtol=0)
    # span(Q) = K_12(H, g): q_0 ∝ g and H maps the first 11 vectors into span(Q) (Lanczos relation)
    torch.testing.assert_close(
        Q[:, 0] * torch.dot(Q[:, 0], g), g, atol=tol * float(g.norm()), rtol=0
    )
    HQ = H @ Q[:, :11]
    assert torch.linalg.matrix_norm(HQ - Q @ (Q.T @ HQ)) < 10 * tol * float(
        torch.linalg.matrix_norm(HQ)
    )
    T = Q.T @ H @ Q
    expected = np.diag(basis.alphas) + np.diag(basis.betas, 1) + np.diag(basis.betas, -1)
    np.testing.assert_allclose(
        T.numpy(), expected, atol=1e3 * tol * float(torch.linalg.matrix_norm(H, 2))
    )


def test_ritz_values_converge_to_the_extreme_eigenvalues():
    H, g = spd_matrix(80, 1)
    basis = lanczos(g, lambda q: H @ q, 40)
    assert basis.ritz_values()[0] == pytest.approx(1e2, rel=1e-8)


def test_an_invariant_space_stops_the_basis_early():
    H, g = spd_matrix(30, 2, eigenvalues=np.repeat([1.0, 2.0, 5.0], 10))
    basis = lanczos(g, lambda q: H @ q, 10)
    assert basis.Q.shape == (30, 3) and len(basis.alphas) == 3 and len(basis.betas) == 2
    np.testing.assert_allclose(np.sort(basis.ritz_values()), [1.0, 2.0, 5.0], rtol=1e-10)


def test_a_zero_start_vector_or_non_finite_product_is_refused():
    H, g = spd_matrix(10, 3)
    with pytest.raises(ValueError, match="non-zero"):
        lanczos(torch.zeros(10, dtype=torch.float64), lambda q: H @ q, 3)
    with pytest.raises(ValueError, match="non-finite"):
        lanczos(g, lambda q: q * float("nan"), 3)
