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

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import torch
from mpi4py import MPI
from tqdm import tqdm

from pinn_lsr.lsr.krylov import lanczos
from pinn_lsr.lsr.residual import DataResidual
from pinn_lsr.parallel.device import allreduce_
from pinn_lsr.parallel.tsqr import tsqr

log = logging.getLogger(__name__)

DISTRIBUTIONS = ("gaussian", "uniform")
SINGLE_PRODUCT_ROWS = (
    32768  # rows per chunk of a one-tangent Jacobian product (bounds its temporaries)
)


@dataclass
class Subspace:
    """A basis V of the parameter correction and how it was found."""

    V: torch.Tensor  # (m, r), the dtype of the model's parameters
    sketch_singular_values: np.ndarray  # (r + p,), estimates of G's leading singular values
    seconds: dict = field(default_factory=dict)  # per phase

    def correction(self, c: torch.Tensor, *, rows: int = 8192) -> torch.Tensor:
        """``δ = V[:, :len(c)] c`` (m,) in V's dtype, accumulated in float64 row block by row block
        (never a float64 copy of V: at m = 4e5, r = 2000 that copy alone is 6 GB). Local."""
        c = c.to(self.V.device, torch.float64)
        delta = torch.empty(self.V.shape[0], dtype=self.V.dtype, device=self.V.device)
        for first in range(0, len(delta), rows):
            delta[first : first + rows] = (self.V[first : first + rows, : len(c)].double() @ c).to(
                self.V.dtype
            )
        return delta


OMEGA_BLOCK = (
    64  # columns of Ω drawn from one seed: Ω[:, j] depends only on (seed, j // OMEGA_BLOCK)
)


def random_matrix(
    m: int,
    k: int,
    *,
    distribution: str,
    seed: int,
    dtype: torch.dtype,
    first: int = 0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Columns ``first .. first + k - 1`` of Ω (m, ∞): standard normal or uniform on [-1, 1],
    on ``device``.

    Every group of ``OMEGA_BLOCK`` columns is drawn from its own seed ``(seed, group)``, so any
    column block can be regenerated on its own (the lean engine never stores Ω whole) and Ω is
    the same on every rank and for every way of splitting it into blocks. Drawn on the CPU
    whatever the device, so Ω is also the same on every device.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; choose one of {DISTRIBUTIONS}")
    groups = range(first // OMEGA_BLOCK, (first + k - 1) // OMEGA_BLOCK + 1) if k > 0 else range(0)
    pieces = []
    for group in groups:
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([seed, group]).generate_state(1)[0])
        )
        if distribution == "gaussian":
            pieces.append(torch.randn(m, OMEGA_BLOCK, generator=generator, dtype=dtype))
        else:
            pieces.append(2 * torch.rand(m, OMEGA_BLOCK, generator=generator, dtype=dtype) - 1)
    if not pieces:
        return torch.zeros(m, 0, dtype=dtype, device=device)
    offset = first - groups[0] * OMEGA_BLOCK
    return torch.cat(pieces, dim=1)[:, offset : offset + k].to(device)


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
    algebra (QR, SVD) is done in float64 whatever the model's dtype; the TSQR of the sketch on
    the host.
    """
    m, dtype, device = residual.jacobian.n_params, residual.jacobian.dtype, residual.jacobian.device
    k = min(rank + oversampling, m)
    seconds = {}
    start = time.perf_counter()
    Omega = random_matrix(m, k, distribution=distribution, seed=seed, dtype=dtype, device=device)
    Y = residual.G(Omega)
    for _ in range(power_iterations):
        Q, _ = tsqr(Y.double().cpu().numpy(), comm)
        Z = allreduce_(residual.Gt(torch.from_numpy(Q).to(device, dtype)), comm)
        Y = residual.G(torch.linalg.qr(Z.double())[0].to(dtype))
    Q, _ = tsqr(Y.double().cpu().numpy(), comm)
    seconds["sketch"] = time.perf_counter() - start
    start = time.perf_counter()
    Bt = allreduce_(residual.Gt(torch.from_numpy(Q).to(device, dtype)), comm)  # (m, k) = (Qᵀ G)ᵀ
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
    return Subspace(V.to(dtype), S.cpu().numpy(), seconds)


MIN_EXTRA_VECTORS = 20  # early stopping looks at least this many vectors past the best rank


class _HeldOutStopping:
    """Early stopping of a Krylov basis on held-out samples: after every new vector q_k, the
    held-out objective ``||f_v + G_v Q_k c_k||²`` of the LSR solution in the basis so far (from
    the Lanczos tridiagonal, ``T_k c_k = −||g|| e_1``: the normal equations in K_k), and a stop
    once the rank has grown ``patience`` times past the best one. Collective (one allreduce)."""

    def __init__(
        self,
        held_out: DataResidual,
        gradient_norm: float,
        rank: int,
        patience: float,
        comm: MPI.Comm,
    ):
        chunk = max(
            1,
            min(len(held_out.jacobian.inputs), SINGLE_PRODUCT_ROWS // held_out.jacobian.n_outputs),
        )
        self.residual = held_out.rechunked(chunk_samples=chunk, chunk_tangents=1)
        self.f = held_out.value()
        self.GQ = torch.empty(
            len(self.f), rank, dtype=self.f.dtype, device=self.f.device
        )  # held-out G_v Q, one column per vector
        self.gradient_norm, self.patience, self.comm = gradient_norm, patience, comm
        self.best_objective, self.best_rank = float("inf"), 0

    def __call__(self, q: torch.Tensor, alphas: np.ndarray, betas: np.ndarray) -> bool:
        k = len(alphas)
        self.GQ[:, k - 1] = self.residual.G(q[:, None].to(self.GQ.dtype))[:, 0]
        banded = np.zeros((3, k))
        banded[0, 1:], banded[1], banded[2, :-1] = betas[: k - 1], alphas, betas[: k - 1]
        rhs = np.zeros(k)
        rhs[0] = -self.gradient_norm
        try:
            c = scipy.linalg.solve_banded((1, 1), banded, rhs)
        except np.linalg.LinAlgError:  # a singular T_k (rounding): no estimate at this rank
            return False
        error = self.f + self.GQ[:, :k] @ torch.from_numpy(c).to(self.GQ)
        objective = self.comm.allreduce(float(error.double().pow(2).sum()))
        if objective < self.best_objective:
            self.best_objective, self.best_rank = objective, k
        return k >= max(self.patience * self.best_rank, self.best_rank + MIN_EXTRA_VECTORS)


def krylov_subspace(
    residual: DataResidual,
    rank: int,
    *,
    comm: MPI.Comm = MPI.COMM_WORLD,
    held_out: DataResidual | None = None,
    patience: float | None = 2.0,
    progress: bool = False,
) -> Subspace:
    """Orthonormal basis of ``K_rank(GᵀG, Gᵀf)`` at θ0 (module docstring). Collective on ``comm``.

    One product with G and one with Gᵀ per vector (one tangent each, in chunks of
    ``SINGLE_PRODUCT_ROWS`` rows), full reorthogonalisation of the float32/64 basis in float64.
    With ``held_out`` (this rank's share of held-out samples) and ``patience``, the basis stops
    early once it has grown ``patience`` times (and by at least ``MIN_EXTRA_VECTORS``) past the
    rank whose LSR solution fits the held-out samples best: past that point the Krylov
    directions fit the training samples only, and each costs more than the last. Fewer than
    ``rank`` vectors also when the space becomes invariant (logged either way).
    ``sketch_singular_values`` holds the Ritz estimates of G's leading singular values.

    Raises:
        ValueError: the gradient ``Gᵀ f`` is zero (θ0 is already a least-squares solution), or
            ``patience`` < 1.
    """
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be at least 1 (or None), got {patience}")
    dtype, n_outputs = residual.jacobian.dtype, residual.jacobian.n_outputs
    chunk = max(1, min(len(residual.jacobian.inputs), SINGLE_PRODUCT_ROWS // n_outputs))
    single = residual.rechunked(chunk_samples=chunk, vjp_chunk_samples=chunk, chunk_tangents=1)
    start = time.perf_counter()
    gradient = allreduce_(single.Gt(single.value()[:, None]).contiguous(), comm)[:, 0]
    gradient_norm = float(torch.linalg.vector_norm(gradient))
    if gradient_norm == 0.0:
        raise ValueError(
            "the residual's gradient is zero at θ0: there is no Krylov space to refine in"
        )
    stopping = None
    if held_out is not None and patience is not None:
        stopping = _HeldOutStopping(held_out, gradient_norm, rank, patience, comm)

    def normal_product(q: torch.Tensor) -> torch.Tensor:
        return allreduce_(single.Gt(single.G(q[:, None].to(dtype))).contiguous(), comm)[:, 0]

    with tqdm(
        total=rank, desc="LSR Krylov basis", unit="vec", disable=not progress or comm.rank != 0
    ) as bar:
        basis = lanczos(
            gradient,
            normal_product,
            rank,
            dtype=dtype,
            stop=stopping,
            progress=lambda done, _: bar.update(done - bar.n),
        )
    k = basis.Q.shape[1]
    if k < rank and stopping is not None and k >= stopping.best_rank + MIN_EXTRA_VECTORS:
        log.info(
            "Krylov basis stopped at %d vectors of %d: the held-out error was lowest at %d",
            k,
            rank,
            stopping.best_rank,
        )
    elif k < rank:
        log.warning("the Krylov space became invariant after %d vectors (asked for %d)", k, rank)
    S = np.sqrt(np.clip(basis.ritz_values(), 0.0, None))
    return Subspace(basis.Q, S, {"krylov": time.perf_counter() - start})


def random_subspace(
    m: int,
    rank: int,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Subspace:
    """A plain random subspace (orthonormal columns) on ``device``, for comparison. Local (same
    on every rank)."""
    Omega = random_matrix(m, rank, distribution="gaussian", seed=seed, dtype=torch.float64)
    return Subspace(torch.linalg.qr(Omega)[0].to(device, dtype), np.array([]), {})
