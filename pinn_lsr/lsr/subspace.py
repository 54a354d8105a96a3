"""Parameter subspaces V (m × r) for LSR.

* ``randomized``: the recipe of the LSR paper ("A universal linearized subspace refinement
  framework for neural networks"): Ω (m × (r+p)) random; ``Q = qr(G Ω)``; ``B = Qᵀ G``;
  ``B = U S Vhᵀ``; ``V = Vh[:r]ᵀ diag(1/S[:r])`` (Halko, Martinsson & Tropp, SIAM Rev. 2011 for
  the range finder and its power iterations). Residual-independent: the leading right singular
  directions of G. The lean engine (:mod:`pinn_lsr.lsr.lean`) computes the same V.
* ``krylov``: an orthonormal basis of ``K_r(GᵀG, Gᵀf)``, the space of LSQR's r-th iterate
  (:mod:`pinn_lsr.lsr.krylov`): adapted to the residual, it lowers the training residual with
  far fewer directions, and its rank (picked on held-out data) is what keeps it from overfitting.
* ``random``: orthonormal random directions, for comparison.

Rows of G are split across ranks: products with G are local, those with Gᵀ (and the TSQR of the
sketch) are summed over ranks, so every rank gets the same V.
"""

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from mpi4py import MPI
from tqdm import tqdm

from pinn_lsr.lsr.krylov import lanczos
from pinn_lsr.lsr.residual import DataResidual
from pinn_lsr.parallel.tsqr import tsqr

DISTRIBUTIONS = ("gaussian", "uniform")
SINGLE_PRODUCT_ROWS = 32768  # rows per chunk of a one-tangent Jacobian product (bounds its temporaries)


@dataclass
class Subspace:
    """A basis V of the parameter correction and how it was found."""

    V: torch.Tensor  # (m, r), the dtype of the model's parameters
    sketch_singular_values: np.ndarray  # (r + p,), estimates of G's leading singular values
    seconds: dict = field(default_factory=dict)  # per phase

    def correction(self, c: torch.Tensor, *, rows: int = 8192) -> torch.Tensor:
        """``δ = V[:, :len(c)] c`` (m,) in V's dtype, accumulated in float64 row block by row block
        (never a float64 copy of V: at m = 4e5, r = 2000 that copy alone is 6 GB). Local."""
        c = c.double()
        delta = torch.empty(self.V.shape[0], dtype=self.V.dtype)
        for first in range(0, len(delta), rows):
            delta[first : first + rows] = (self.V[first : first + rows, : len(c)].double() @ c).to(self.V.dtype)
        return delta


OMEGA_BLOCK = 64  # columns of Ω drawn from one seed: Ω[:, j] depends only on (seed, j // OMEGA_BLOCK)


def random_matrix(m: int, k: int, *, distribution: str, seed: int, dtype: torch.dtype, first: int = 0) -> torch.Tensor:
    """Columns ``first .. first + k - 1`` of Ω (m, ∞): standard normal or uniform on [-1, 1].

    Every group of ``OMEGA_BLOCK`` columns is drawn from its own seed ``(seed, group)``, so any
    column block can be regenerated on its own (the lean engine never stores Ω whole) and Ω is
    the same on every rank and for every way of splitting it into blocks.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; choose one of {DISTRIBUTIONS}")
    groups = range(first // OMEGA_BLOCK, (first + k - 1) // OMEGA_BLOCK + 1) if k > 0 else range(0)
    pieces = []
    for group in groups:
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, group]).generate_state(1)[0]))
        if distribution == "gaussian":
            pieces.append(torch.randn(m, OMEGA_BLOCK, generator=generator, dtype=dtype))
        else:
            pieces.append(2 * torch.rand(m, OMEGA_BLOCK, generator=generator, dtype=dtype) - 1)
    if not pieces:
        return torch.zeros(m, 0, dtype=dtype)
    offset = first - groups[0] * OMEGA_BLOCK
    return torch.cat(pieces, dim=1)[:, offset : offset + k]


def allreduce_(t: torch.Tensor, comm: MPI.Comm) -> torch.Tensor:
    """Sum a contiguous CPU tensor over ``comm`` in place (no copy); returns ``t``. Collective."""
    if comm.size > 1:
        comm.Allreduce(MPI.IN_PLACE, t.detach().numpy(), op=MPI.SUM)
    return t


def randomized_subspace(
    residual: DataResidual,
    rank: int,
    *,
    comm: MPI.Comm = MPI.COMM_WORLD,
    oversampling: int = 10,
    power_iterations: int = 0,
    distribution: str = "gaussian",
    scaled: bool = True,
    seed: int = 0,
) -> Subspace:
    """The paper's randomized subspace of rank ``rank`` for ``G``. Collective on ``comm``.

    ``scaled=False`` keeps the orthonormal right singular vectors (V = Vh[:r]ᵀ). The small
    algebra (QR, SVD) is done in float64 whatever the model's dtype.
    """
    m, dtype = residual.jacobian.n_params, residual.jacobian.dtype
    k = min(rank + oversampling, m)
    seconds = {}
    start = time.perf_counter()
    Omega = random_matrix(m, k, distribution=distribution, seed=seed, dtype=dtype)
    Y = residual.G(Omega)
    for _ in range(power_iterations):
        Q, _ = tsqr(Y.double().numpy(), comm)
        Z = allreduce_(residual.Gt(torch.from_numpy(Q).to(dtype)), comm)
        Y = residual.G(torch.linalg.qr(Z.double())[0].to(dtype))
    Q, _ = tsqr(Y.double().numpy(), comm)
    seconds["sketch"] = time.perf_counter() - start
    start = time.perf_counter()
    Bt = allreduce_(residual.Gt(torch.from_numpy(Q).to(dtype)), comm)  # (m, k) = (Qᵀ G)ᵀ
    seconds["projection"] = time.perf_counter() - start
    start = time.perf_counter()
    # SVD of B = Btᵀ through a QR of the tall Bt (m × k) and an SVD of its k × k factor:
    # Bt = Q_B R_B, R_Bᵀ = U S Wᵀ, so B = U S (Q_B W)ᵀ; 2.5x faster than a direct SVD here.
    Q_B, R_B = torch.linalg.qr(Bt.double())
    _, S, Wt = torch.linalg.svd(R_B.T)
    V = Q_B @ Wt[:rank].T
    if scaled:
        V = V / S[:rank].clamp_min(S[0] * np.finfo(np.float64).eps)
    seconds["svd"] = time.perf_counter() - start
    return Subspace(V.to(dtype), S.numpy(), seconds)


def krylov_subspace(residual: DataResidual, rank: int, *, comm: MPI.Comm = MPI.COMM_WORLD,
                    progress: bool = False) -> Subspace:
    """Orthonormal basis of ``K_rank(GᵀG, Gᵀf)`` at θ0 (module docstring). Collective on ``comm``.

    One product with G and one with Gᵀ per vector (one tangent each, in chunks of
    ``SINGLE_PRODUCT_ROWS`` rows), full reorthogonalisation of the float32/64 basis in float64.
    Fewer than ``rank`` vectors (with a warning by the caller) if the space becomes invariant.
    ``sketch_singular_values`` holds the Ritz estimates of G's leading singular values.

    Raises:
        ValueError: the gradient ``Gᵀ f`` is zero (θ0 is already a least-squares solution).
    """
    dtype, n_outputs = residual.jacobian.dtype, residual.jacobian.n_outputs
    chunk = max(1, min(len(residual.jacobian.inputs), SINGLE_PRODUCT_ROWS // n_outputs))
    single = residual.rechunked(chunk_samples=chunk, vjp_chunk_samples=chunk, chunk_tangents=1)
    start = time.perf_counter()
    gradient = allreduce_(single.Gt(single.value()[:, None]).contiguous(), comm)[:, 0]
    if float(torch.linalg.vector_norm(gradient)) == 0.0:
        raise ValueError("the residual's gradient is zero at θ0: there is no Krylov space to refine in")

    def normal_product(q: torch.Tensor) -> torch.Tensor:
        return allreduce_(single.Gt(single.G(q[:, None].to(dtype))).contiguous(), comm)[:, 0]

    with tqdm(total=rank, desc="LSR Krylov basis", unit="vec", disable=not progress or comm.rank != 0) as bar:
        basis = lanczos(gradient, normal_product, rank, dtype=dtype, progress=lambda done, _: bar.update(done - bar.n))
    S = np.sqrt(np.clip(basis.ritz_values(), 0.0, None))
    return Subspace(basis.Q, S, {"krylov": time.perf_counter() - start})


def random_subspace(m: int, rank: int, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> Subspace:
    """A plain random subspace (orthonormal columns), for comparison. Local (same on every rank)."""
    Omega = random_matrix(m, rank, distribution="gaussian", seed=seed, dtype=torch.float64)
    return Subspace(torch.linalg.qr(Omega)[0].to(dtype), np.array([]), {})
