"""Lanczos bases of Krylov spaces of a Gauss–Newton matrix ``H = Gᵀ G`` (or a weighted one).

``K_r(H, g) = span{g, H g, ..., H^{r-1} g}`` started at the gradient ``g = Gᵀ f`` is the space
in which CG on the Gauss–Newton normal equations (LSQR on ``min ||G δ + f||``, Paige & Saunders,
ACM TOMS 1982) finds its ``r``-th iterate: the correction adapted to this residual, where a
randomized range basis is residual-independent. Used by data LSR
(:func:`pinn_lsr.lsr.subspace.krylov_subspace`) and physics LSR
(:func:`pinn_lsr.physics.refine.krylov_physics_subspace`); the caller supplies ``q -> H q``, so rows
may be split over MPI ranks (the product then sums over them and every rank builds the same
basis).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

REORTHOGONALIZE_BELOW = (
    0.7  # a pass that keeps less of ||w|| is repeated; if the second one does too, w ∈ span(Q)
)
# a block direction this small next to the block's largest is dropped (the Gram matrix that finds
# it resolves singular values down to ~1e-8 of the largest)
DEPENDENT_BELOW = 1e-7
ROWS = 65536  # rows per block of the reorthogonalisation products (bounded float64 temporaries)


@dataclass
class LanczosBasis:
    """An orthonormal basis of ``K_k(H, g)`` and the Lanczos tridiagonal ``T = Qᵀ H Q``."""

    Q: torch.Tensor  # (m, k), k ≤ the rank asked for (smaller when the space became invariant)
    alphas: np.ndarray  # (k,), diagonal of T
    betas: np.ndarray  # (k - 1,), off-diagonal of T

    def ritz_values(self) -> np.ndarray:
        """Eigenvalues of T, descending: estimates of H's extreme eigenvalues (σ² of G)."""
        if len(self.alphas) == 1:
            return self.alphas.copy()
        return scipy.linalg.eigvalsh_tridiagonal(self.alphas, self.betas)[::-1]


def _project_out(Q: torch.Tensor, w: torch.Tensor) -> None:
    """``w -= Q (Qᵀ w)`` for Q (m, j) and w (m,) float64: matrix-vector products in Q's dtype (no
    copy of Q; they are memory-bound), the coefficients summed in float64 over row blocks."""
    c = torch.zeros(Q.shape[1], dtype=torch.float64, device=Q.device)
    for first in range(0, Q.shape[0], ROWS):
        c += (Q[first : first + ROWS].T @ w[first : first + ROWS].to(Q.dtype)).double()
    c = c.to(Q.dtype)
    for first in range(0, Q.shape[0], ROWS):
        w[first : first + ROWS] -= (Q[first : first + ROWS] @ c).double()


def lanczos(
    start: torch.Tensor,
    normal_product: Callable[[torch.Tensor], torch.Tensor],
    rank: int,
    *,
    dtype: torch.dtype = torch.float64,
    breakdown: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    stop: Callable[[torch.Tensor, np.ndarray, np.ndarray], bool] | None = None,
) -> LanczosBasis:
    """Orthonormal basis of ``K_rank(H, start)`` by Lanczos with full reorthogonalisation.

    Local arithmetic: collective only if ``normal_product`` is (it must then return the same
    vector on every rank, which makes the basis identical everywhere).

    Args:
        start: (m,) the first direction (normalised here), e.g. the residual's gradient.
        normal_product: ``q (m,) float64 -> H q (m,)`` for the symmetric positive semidefinite H.
        rank: the number of basis vectors wanted.
        dtype: storage and matrix-vector products of the basis (float32 halves the memory and
            time of large bases; the recurrence itself is float64).
        breakdown: stop when the new direction's norm falls to this (the space is invariant);
            default ``1e-10 · ||start||``. The basis also stops when a new direction loses most
            of its norm in both Gram–Schmidt passes: it is then rounding noise in span(Q), and
            normalising it would break the basis's orthogonality (this is what ends float32
            bases of ill-conditioned Jacobians).
        progress: called as ``progress(vectors_done, rank)`` after every product.
        stop: called as ``stop(q_j, alphas, betas)`` after every product (``T``'s coefficients
            so far: j + 1 and j); returning True ends the basis at ``q_j`` (early stopping).

    Returns:
        The basis (fewer than ``rank`` vectors if the space became invariant: the caller decides
        whether to warn) and the tridiagonal's coefficients.

    Raises:
        ValueError: a zero or non-finite start vector, or a rank < 1.
    """
    start = start.double()
    norm = float(torch.linalg.vector_norm(start))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError(f"the Krylov start vector must be finite and non-zero, got norm {norm}")
    if rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    breakdown = 1e-10 * norm if breakdown is None else breakdown
    Q = torch.zeros(len(start), rank, dtype=dtype, device=start.device)
    Q[:, 0] = (start / norm).to(dtype)
    alphas, betas = [], []
    for j in range(rank):
        q = Q[:, j].double()
        w = normal_product(q).double()
        alphas.append(float(q @ w))
        if progress is not None:
            progress(j + 1, rank)
        if j + 1 == rank:
            break
        if stop is not None and stop(q, np.array(alphas), np.array(betas)):
            Q = Q[:, : j + 1]
            break
        norm_before = float(torch.linalg.vector_norm(w))
        invariant = True
        for _ in range(2):  # full Gram–Schmidt, "twice is enough" (Giraud, Langou & Rozložník 2005)
            _project_out(Q[:, : j + 1], w)
            norm_after = float(torch.linalg.vector_norm(w))
            if not np.isfinite(norm_after):
                raise ValueError(f"the Krylov product gave non-finite values after {j + 1} vectors")
            if norm_after > REORTHOGONALIZE_BELOW * norm_before:
                invariant = False
                break
            norm_before = norm_after
        # a vector that lost most of its norm in both passes lies in span(Q) to working precision
        beta = norm_after
        if invariant or beta <= breakdown:
            Q = Q[:, : j + 1]
            break
        betas.append(beta)
        Q[:, j + 1] = (w / beta).to(dtype)
    return LanczosBasis(Q, np.array(alphas), np.array(betas[: len(alphas) - 1]))


def _orthonormal_columns(W: torch.Tensor, tolerance: float, limit: int) -> torch.Tensor:
    """An orthonormal basis (m, ≤ limit) of the leading singular directions of W (m, b) float64
    whose singular values exceed ``tolerance`` and ``DEPENDENT_BELOW`` times the largest: the
    deflation of a block Krylov step (directions already in the space, or dependent within the
    block, are dropped).

    From the b × b Gram matrix (its eigenvectors give W's right singular vectors), then one
    Cholesky re-orthonormalisation (CholeskyQR2): two passes over W where a Householder QR or an
    SVD of the tall W took 20 ms at m = 2e5, b = 8.
    """
    lam, V = torch.linalg.eigh(W.T @ W)
    sigma = lam.flip(0).clamp_min(0.0).sqrt()
    keep = min(int((sigma > max(tolerance, DEPENDENT_BELOW * float(sigma[0]))).sum()), limit)
    U = W @ (V.flip(1)[:, :keep] / sigma[:keep])
    if keep:
        L = torch.linalg.cholesky(U.T @ U)
        U = torch.linalg.solve_triangular(L, U.T, upper=False).T
    return U


def _project_out_rows(basis: torch.Tensor, W: torch.Tensor, dtype: torch.dtype) -> None:
    """``W -= Bᵀ (B W)`` in place for a basis given by its rows B (k, m) and W (m, b) float64:
    full block Gram–Schmidt in the basis' dtype (memory-bound: it reads the whole basis), a second
    pass only for a column that lost most of its norm in the first ("twice is enough")."""
    before = torch.linalg.vector_norm(W, dim=0)
    for _ in range(2):
        W -= (basis.T @ (basis @ W.to(dtype))).double()
        after = torch.linalg.vector_norm(W, dim=0)
        if bool((after > REORTHOGONALIZE_BELOW * before).all()):
            break
        before = after


def block_lanczos(
    start: torch.Tensor,
    normal_product: Callable[[torch.Tensor], torch.Tensor],
    rank: int,
    *,
    dtype: torch.dtype = torch.float64,
    breakdown: float = 1e-10,
    progress: Callable[[int, int], None] | None = None,
    deflate: torch.Tensor | None = None,
    stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Orthonormal basis of the block Krylov space ``span{S, H S, H² S, ...}`` (``rank``
    columns) by block Lanczos with full reorthogonalisation: ``rank / b`` products with blocks of
    ``b`` columns instead of ``rank`` products with single vectors.

    With ``deflate`` (D, orthonormal columns) the space is that of the deflated operator
    ``(I − D Dᵀ) H (I − D Dᵀ)`` from ``(I − D Dᵀ) S``: new directions orthogonal to D (augmented
    Krylov, as in recycled CG), none when S lies in span(D).

    For ``b = 1`` the space is :func:`lanczos`'s. The space contains ``K_s(H, g)`` for every
    ``g`` in span(S) and ``s`` block steps; the rest of it is what the other start columns add.

    Local arithmetic: collective only if ``normal_product`` is (it must then return the same
    block on every rank, which makes the basis identical everywhere).

    Args:
        start: (m, b) the start block (orthonormalised here; dependent columns dropped).
        normal_product: ``Q (m, k) float64 -> H Q (m, k)`` for the symmetric positive
            semidefinite H; it is called with every basis block once, in order, so the caller may
            keep what it computed for each column (the basis is the concatenation of the blocks).
        rank: the number of basis vectors wanted (the last block may be narrower).
        dtype: storage of the basis (the recurrence itself is float64).
        breakdown: a new direction whose norm after reorthogonalisation is below ``breakdown``
            times the norm of its product is dropped (it lies in the space); the basis ends,
            smaller than ``rank``, when a whole block is dropped (the space is invariant).
        progress: called as ``progress(vectors_done, rank)`` after every block product.
        deflate: (m, p) orthonormal columns (in ``dtype``) the basis is kept orthogonal to; they
            are not multiplied and not returned.
        stop: called after every block product (after ``progress``); True ends the basis there
            (a time limit; it must answer alike on every rank when the product is collective).

    Returns:
        Q (m, k), k ≤ rank, orthonormal columns in the order they were multiplied (orthogonal to
        ``deflate``; k = 0 when the start lies in its span).

    Raises:
        ValueError: a zero or non-finite start block, or a rank < 1.
    """
    if rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    start = start.double().reshape(start.shape[0], -1)
    scale = float(torch.linalg.matrix_norm(start))
    if not np.isfinite(scale) or scale == 0.0:
        raise ValueError(f"the Krylov start block must be finite and non-zero, got norm {scale}")
    p = 0 if deflate is None else deflate.shape[1]
    # Qᵀ: the leading rows are contiguous
    Qt = torch.zeros(p + rank, start.shape[0], dtype=dtype, device=start.device)
    if p:
        Qt[:p] = deflate.T.to(dtype)
        _project_out_rows(Qt[:p], start, dtype)
    block = _orthonormal_columns(start, breakdown * scale, rank)
    done = p
    while block.shape[1] > 0:
        Qt[done : done + block.shape[1]] = block.T.to(dtype)
        W = normal_product(block).double()
        done += block.shape[1]
        if progress is not None:
            progress(done - p, rank)
        if done == p + rank or (stop is not None and stop()):
            break
        size = float(torch.linalg.matrix_norm(W))
        if not np.isfinite(size):
            raise ValueError(f"the Krylov product gave non-finite values after {done - p} vectors")
        _project_out_rows(Qt[:done], W, dtype)
        block = _orthonormal_columns(W, breakdown * size, p + rank - done)
    return Qt[p:done].T


#: a new block of :func:`factored_block_lanczos` whose images are this far from orthogonal to the
#: basis's cotangents (``|Zᵀ T_new|``; 1 is the block's own) is re-orthogonalised in parameter space
REPAIR_ABOVE = 1e-3
#: a direction that keeps less than this fraction of its norm in that projection is rounding noise
NOISE_BELOW = 1e-3


@dataclass
class FactoredBasis:
    """A basis of a Krylov space of ``H = Gᵀ N G`` kept through its factor ``G``.

    ``V`` (m, k) are the parameter-space columns, orthonormal, and ``T = G V`` (n, k) their
    images. ``repaired``: the blocks that needed the parameter-space projection; ``stopped`` says
    why the basis ended short of the rank asked for (``""`` when it did not); ``interrupted``:
    it ended because the caller's ``stop`` said so."""

    V: torch.Tensor
    T: np.ndarray
    repaired: int = 0
    stopped: str = ""
    interrupted: bool = False


def factored_block_lanczos(
    start: np.ndarray,
    pull: Callable[[np.ndarray], torch.Tensor],
    push: Callable[[torch.Tensor], np.ndarray],
    normal: Callable[[np.ndarray], np.ndarray],
    rank: int,
    *,
    inner: Callable[[np.ndarray, np.ndarray], np.ndarray] = lambda X, Y: X.T @ Y,
    breakdown: float = 1e-10,
    progress: Callable[[int, int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> FactoredBasis:
    """:func:`block_lanczos`'s space for ``H = Gᵀ N G`` started at ``S = Gᵀ C``, built in the n-row
    cotangent space of the factor ``G`` (n × m, n ≪ m) instead of parameter space.

    ``H^j Gᵀ C = Gᵀ (N G Gᵀ)^j C``, so every basis column is ``Gᵀ z`` for a cotangent ``z`` and
    the parameter-space inner products are ``(Gᵀ z_i)ᵀ (Gᵀ z_j) = z_iᵀ t_j`` with the image
    ``t_j = G Gᵀ z_j``: the full Gram–Schmidt runs on n-vectors (against Z with the stored images
    T) and never reads the m-row basis. One pull ``Gᵀ W``, one push ``G V`` and one ``N``
    product per block, as in parameter space. In the energy norm with ``G = J`` this is the
    conjugate-gradient method on the FEM system preconditioned by ``J Jᵀ`` (the network's
    tangent kernel).

    Rounding: ``Z`` grows where ``G Gᵀ`` is small, so the cotangent-space inner products hold only
    to about the products' precision times the kernel's conditioning in the space. A new block
    whose images are not orthogonal to the old cotangents (:data:`REPAIR_ABOVE`) is projected in
    parameter space instead (twice, against the stored basis, its images and cotangents updated
    alike, images afresh by ``push``): that reads the m-row basis, as :func:`block_lanczos` does
    every step, but only where the cheap projection failed. The basis ends (with ``stopped``)
    when a direction is rounding noise there (:data:`NOISE_BELOW`). In single precision with a
    kernel spread over many decades the late columns can still be rounding noise that passes these
    tests (tests/lsr/test_krylov.py): their Galerkin system is then singular to working precision
    and needs a direct reduced solve.

    Args:
        start: C (n, b) start cotangents (the block Krylov start ``Gᵀ C``; dependent columns
            dropped).
        pull: ``W (n, k) float64 -> Gᵀ W (m, k)`` (torch); the basis is stored in its dtype.
        push: ``V (m, k) float64 -> G V (n, k) float64``.
        normal: ``T (n, k) -> N T (n, k)`` for the symmetric positive semidefinite N.
        rank: the number of columns wanted (the last block may be narrower).
        inner: ``(X, Y) -> Xᵀ Y`` over the whole cotangent space (a sum over ranks when the rows
            are split; every rank must then get the same matrix).
        breakdown: a new direction whose norm before normalisation is below ``breakdown`` times
            the largest curvature ``vᵀ H v`` seen so far (the scale of ``||H v||``; for the start
            block: its largest column) is dropped; a whole block dropped ends the basis (the
            space is invariant).
        progress: called as ``progress(columns_done, rank)`` after every block's ``N`` product.
        stop: called after ``progress``; True ends the basis there (``interrupted``; a time
            limit: it must answer alike on every rank when ``inner`` sums over ranks).

    Returns:
        The basis, k ≤ rank columns.

    Raises:
        ValueError: a zero or non-finite start, a rank < 1, or non-finite products.
    """
    if rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    start = np.asarray(start, dtype=np.float64).reshape(start.shape[0], -1)
    Vt = None  # (rank, m): the parameter columns of columns :done, as rows
    Tall = np.empty((start.shape[0], rank))  # their images and cotangents
    Zall = np.empty((start.shape[0], rank))
    W, done, repaired, stopped, interrupted = start, 0, 0, "", False
    curvature = 0.0  # the largest Rayleigh quotient vᵀ H v seen: the scale of ||H v||
    while True:
        V = pull(W)
        if Vt is None:  # stored in the pull's dtype
            Vt = torch.empty(rank, V.shape[0], dtype=V.dtype, device=V.device)
        V = V.double()
        # = inner(W, U) in exact arithmetic; accurate where G Gᵀ is small. (The products with V
        # are einsums: for a single column, V.T @ V took 0.31 ms at m = 192k, the einsum 0.04.)
        gram = torch.einsum("ij,ik->jk", V, V).numpy()
        if not np.isfinite(gram).all():  # (cheaper than a check of the m-row block)
            raise ValueError(f"the Krylov product gave non-finite values after {done} vectors")
        U = np.asarray(push(V), dtype=np.float64)
        lam, E = np.linalg.eigh(0.5 * (gram + gram.T))
        lam, E = lam[::-1], E[:, ::-1]
        floor = max(lam[0], 0.0) if done == 0 else curvature**2  # the product's scale
        keep = min(int((lam > breakdown**2 * floor).sum()), rank - done)
        scale = E[:, :keep] / np.sqrt(lam[:keep])
        Z, T = W @ scale, U @ scale
        V = torch.einsum("ij,jk->ik", V, torch.from_numpy(scale.copy()))
        if keep and done and not np.abs(inner(Zall[:, :done], T)).max() < REPAIR_ABOVE:
            V, Z = _project_in_parameters(Vt[:done], Zall[:, :done], V, Z, NOISE_BELOW, keep)
            T = np.asarray(push(V), dtype=np.float64)  # afresh: differences carry cancellation
            repaired += 1
        keep = V.shape[1]
        if keep == 0:
            break
        _store_rows(Vt[done : done + keep], V)
        Tall[:, done : done + keep], Zall[:, done : done + keep] = T, Z
        N = np.asarray(normal(T), dtype=np.float64)
        curvature = max(curvature, float(np.abs(np.diag(inner(T, N))).max()))
        done += keep
        if progress is not None:
            progress(done, rank)
        if done == rank:
            break
        if stop is not None and stop():
            stopped, interrupted = f"stopped by the caller after {done} vectors", True
            break
        for _ in range(2):  # classical Gram–Schmidt twice, in the n-row cotangent space
            N = N - Zall[:, :done] @ inner(Tall[:, :done], N)
        W = N
    if done == 0:
        raise ValueError("the Krylov start must be finite and non-zero in the factor's range")
    if done < rank and not stopped:
        stopped = f"the Krylov space became invariant after {done} vectors"
    return FactoredBasis(Vt[:done].T, Tall[:, :done].copy(), repaired, stopped, interrupted)


def _store_rows(rows: torch.Tensor, V: torch.Tensor) -> None:
    """``rows`` (k, m) = Vᵀ for V (m, k) in rows' dtype. A single column is copied as a vector:
    the transposed copy of an (m, 1) column took 0.8 ms at m = 192k, 13× longer; for blocks the
    transposed conversion is the faster one (b = 8: 2.4 ms against 3.9 for ``copy_``)."""
    if V.shape[1] == 1:
        rows[0].copy_(V[:, 0])
    else:
        rows[:] = V.T.to(rows.dtype)


def _project_in_parameters(basis_rows, Z_basis, V, Z, noise, limit):
    """New columns V (m, k) float64 with cotangents Z (n, k), projected out of the basis (rows
    (j, m), cotangents (n, j)) in parameter space ("twice is enough") and orthonormalised; those
    kept less than ``noise`` of the block's largest norm are dropped (they lie in the basis's
    span), at most ``limit`` kept. Returns (V, Z)."""
    size = float(torch.linalg.matrix_norm(V, ord=2))
    before = torch.linalg.vector_norm(V, dim=0)
    for _ in range(2):  # a second pass only if a column lost most of its norm in the first
        C = (basis_rows @ V.to(basis_rows.dtype)).double()
        V = V - (basis_rows.T @ C.to(basis_rows.dtype)).double()
        Z = Z - Z_basis @ C.numpy()
        after = torch.linalg.vector_norm(V, dim=0)
        if bool((after > REORTHOGONALIZE_BELOW * before).all()):
            break
        before = after
    lam, E = np.linalg.eigh((V.T @ V).numpy())
    lam, E = lam[::-1], E[:, ::-1]
    keep = min(int((np.sqrt(np.maximum(lam, 0.0)) > noise * size).sum()), limit)
    scale = E[:, :keep] / np.sqrt(lam[:keep])
    return V @ torch.from_numpy(scale.copy()), Z @ scale
