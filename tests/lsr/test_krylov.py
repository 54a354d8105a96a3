"""Lanczos bases of Krylov spaces (single-vector and block): orthonormal, the right span, the
tridiagonal, early stop."""

import numpy as np
import pytest
import torch

from pinn_lsr.lsr.krylov import block_lanczos, factored_block_lanczos, lanczos


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


def same_span(A: torch.Tensor, B: torch.Tensor) -> float:
    """Largest sine of the principal angles between the column spans of A and B (orthonormal)."""
    return float(torch.linalg.matrix_norm(A - B @ (B.T @ A), 2))


def test_block_lanczos_with_one_column_spans_the_lanczos_space():
    H, g = spd_matrix(60, 4)
    Q = block_lanczos(g[:, None], lambda X: H @ X, 12)
    assert Q.shape == (60, 12)
    torch.testing.assert_close(Q.T @ Q, torch.eye(12, dtype=torch.float64), atol=1e-12, rtol=0)
    assert same_span(Q, lanczos(g, lambda q: H @ q, 12).Q) < 1e-8


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_block_lanczos_spans_the_block_krylov_space_in_the_order_multiplied(dtype, tol):
    H, _ = spd_matrix(80, 5)
    S = torch.from_numpy(np.random.default_rng(6).standard_normal((80, 3)))
    seen = []

    def product(X):
        seen.append(X.clone())
        return H @ X

    Q = block_lanczos(S, product, 11, dtype=dtype)
    assert Q.dtype == dtype and Q.shape == (80, 11)
    assert [X.shape[1] for X in seen] == [3, 3, 3, 2]
    torch.testing.assert_close(torch.cat(seen, dim=1).to(dtype), Q, atol=0, rtol=0)
    Qd = Q.double()
    torch.testing.assert_close(Qd.T @ Qd, torch.eye(11, dtype=torch.float64), atol=tol, rtol=0)
    krylov = torch.cat([S, H @ S, H @ H @ S], dim=1)  # the first 9 columns: 3 whole block steps
    assert same_span(torch.linalg.qr(krylov)[0], Qd[:, :9]) < 100 * tol
    # the sum of the start columns (e.g. the whole gradient) has its Krylov space inside
    assert same_span(lanczos(S.sum(dim=1), lambda q: H @ q, 3).Q, Qd[:, :9]) < 100 * tol


def test_block_lanczos_drops_dependent_columns_and_stops_when_the_space_is_invariant():
    H, g = spd_matrix(30, 7, eigenvalues=np.repeat([1.0, 2.0, 5.0], 10))
    S = torch.stack([g, 2 * g], dim=1)  # one direction twice
    Q = block_lanczos(S, lambda X: H @ X, 10)
    assert Q.shape == (30, 3)
    assert same_span(Q, lanczos(g, lambda q: H @ q, 3).Q) < 1e-8


def test_block_lanczos_refuses_a_zero_start_block_a_non_finite_product_and_rank_zero():
    H, g = spd_matrix(10, 8)
    with pytest.raises(ValueError, match="non-zero"):
        block_lanczos(torch.zeros(10, 2, dtype=torch.float64), lambda X: H @ X, 3)
    with pytest.raises(ValueError, match="non-finite"):
        block_lanczos(g[:, None], lambda X: X * float("nan"), 3)
    with pytest.raises(ValueError, match="at least 1"):
        block_lanczos(g[:, None], lambda X: H @ X, 0)


def test_block_lanczos_deflated_by_a_basis_adds_only_directions_orthogonal_to_it():
    H, g = spd_matrix(60, 9)
    old = lanczos(g, lambda q: H @ q, 8).Q
    h = torch.from_numpy(np.random.default_rng(10).standard_normal(60))
    new = block_lanczos(h[:, None], lambda X: H @ X, 6, deflate=old)
    assert new.shape == (60, 6)
    both = torch.cat([old, new], dim=1)
    torch.testing.assert_close(
        both.T @ both, torch.eye(14, dtype=torch.float64), atol=1e-12, rtol=0
    )
    # the first new direction is the start's part outside the old basis
    rest = h - old @ (old.T @ h)
    torch.testing.assert_close(new[:, 0] * torch.dot(new[:, 0], rest), rest, atol=1e-12, rtol=0)
    # a start inside the old basis adds nothing, and nothing is multiplied
    calls = []
    empty = block_lanczos(g[:, None], lambda X: calls.append(X) or H @ X, 6, deflate=old)
    assert empty.shape == (60, 0) and not calls


def factored_case(n=30, m=80, seed=4):
    """G (n, m) and an SPD N (n, n) with spread eigenvalues: H = Gᵀ N G on m parameters."""
    rng = np.random.default_rng(seed)
    G = torch.from_numpy(rng.standard_normal((n, m)))
    N, _ = spd_matrix(n, seed + 1, eigenvalues=np.geomspace(1e-2, 1e2, n))
    return G, N.numpy(), rng.standard_normal((n, 2))


def pull_with(G):
    return lambda W: G.T @ torch.from_numpy(W)


def push_with(G):
    return lambda V: (G @ V).numpy()


@pytest.mark.parametrize("b", [1, 2])
def test_the_factored_basis_spans_the_parameter_space_block_krylov_space(b):
    """Built on n-row cotangents, the basis is block_lanczos's for H = Gᵀ N G from Gᵀ C."""
    G, N, C = factored_case()
    basis = factored_block_lanczos(C[:, :b], pull_with(G), push_with(G), lambda T: N @ T, 10)
    V = basis.V
    assert V.shape == (80, 10) and basis.stopped == ""
    torch.testing.assert_close(V.T @ V, torch.eye(10, dtype=torch.float64), atol=1e-10, rtol=0)
    np.testing.assert_allclose(basis.T, (G @ V).numpy(), atol=1e-10)
    H = G.T @ torch.from_numpy(N) @ G
    Q = block_lanczos(G.T @ torch.from_numpy(C[:, :b]), lambda X: H @ X, 10)
    torch.testing.assert_close(V @ (V.T @ Q), Q, atol=1e-8, rtol=0)  # the same span


def test_the_factored_basis_stops_when_the_space_is_invariant_and_refuses_a_zero_start():
    G, N, C = factored_case()
    G3 = G[:, :3] @ G[:, :3].T @ G / 100  # rank 3: the Krylov space has at most 3 dimensions
    basis = factored_block_lanczos(C[:, :1], pull_with(G3), push_with(G3), lambda T: N @ T, 8)
    assert basis.V.shape[1] == 3 and basis.stopped
    with pytest.raises(ValueError, match="non-zero"):
        factored_block_lanczos(np.zeros((30, 1)), pull_with(G), push_with(G), lambda T: N @ T, 3)
    with pytest.raises(ValueError, match="rank"):
        factored_block_lanczos(C[:, :1], pull_with(G), push_with(G), lambda T: N @ T, 0)
    with pytest.raises(ValueError, match="non-finite"):
        factored_block_lanczos(
            C[:, :1], pull_with(G * float("nan")), push_with(G), lambda T: N @ T, 3
        )


def test_an_ill_conditioned_factor_in_single_precision_is_repaired_in_parameter_space():
    """Float32 products of a G whose G Gᵀ spreads over 12 decades: the cotangent-space inner
    products lose orthogonality, the basis switches to parameter-space projections and still
    spans the parameter-space Krylov space (to float32 accuracy amplified by the
    conditioning)."""
    rng = np.random.default_rng(7)
    U, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    W, _ = np.linalg.qr(rng.standard_normal((100, 40)))
    G = torch.from_numpy(U @ np.diag(np.geomspace(1.0, 1e-6, 40)) @ W.T)
    N, _ = spd_matrix(40, 8, eigenvalues=np.geomspace(1e-2, 1e2, 40))
    C = rng.standard_normal((40, 1))
    G32 = G.float()

    def pull(W):
        return G32.T @ torch.from_numpy(W).float()

    basis = factored_block_lanczos(
        C, pull, lambda V: (G32 @ V.float()).double().numpy(), lambda T: N.numpy() @ T, 38
    )
    k = basis.V.shape[1]
    assert basis.repaired > 0 and k >= 20 and basis.V.dtype == torch.float32
    V = basis.V.double()
    # orthonormal up to the first repair (the cotangent-space accuracy, 4e-4 measured); past it
    # the columns can be float32 rounding noise in the span (the docstring's caveat)
    first = 20
    torch.testing.assert_close(
        V[:, :first].T @ V[:, :first], torch.eye(first, dtype=torch.float64), atol=2e-3, rtol=0
    )
    H = G.T @ N @ G
    Q = block_lanczos(G.T @ torch.from_numpy(C), lambda X: H @ X, 25)
    P = torch.linalg.qr(V[:, :first])[0]
    torch.testing.assert_close(P @ (P.T @ Q[:, :6]), Q[:, :6], atol=1e-3, rtol=0)
