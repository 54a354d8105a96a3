"""The reduced least-squares problem ``min_c ||G V c + f||₂`` (G V: n × r, rows across ranks).

Every solver here produces the R factor of the augmented matrix ``[G V | f]``,
``[[R, z], [0, ρ]]`` with ``z = Qᵀ f``: then ``c = -R⁻¹ z`` and the residual norm is
``sqrt(ρ² + ||z_{r'..}||²)``. Because Householder QR is nested, the leading ``r' × r'`` block of
``R`` is the R factor of the first ``r'`` columns, so one factorisation gives the solution for
every rank ``r' ≤ r`` (the scan of :mod:`pinn_lsr.lsr.scan`).
"""

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import scipy.linalg
import torch
from mpi4py import MPI
from scipy.sparse.linalg import ArpackError, LinearOperator, eigsh
from tqdm import tqdm

from pinn_lsr.parallel.device import allreduce_, gram_product
from pinn_lsr.parallel.tsqr import StreamingQR, tsqr_r

log = logging.getLogger(__name__)


#: up to this many columns the conditioning of G V is exact (the singular values of its R factor:
#: 4 s at 2000 columns, ~10 min at 10⁴ on 2 cores); above, it is estimated in O(r²)
EXACT_CONDITIONING_RANK = 2000


@dataclass(frozen=True)
class Conditioning:
    """How well ``G V`` (through its R factor) is conditioned."""

    condition_number: float  # σ_max / σ_min (exact, or by Lanczos to LANCZOS_TOLERANCE)
    effective_rank: int  # singular values (exact) or diagonal entries of R (estimated) above
    #   rtol times the largest
    singular_values: np.ndarray | None  # (r,) descending; None when estimated
    estimated: bool


def triangular_conditioning(R: np.ndarray, rtol: float = 1e-10, *, estimate=None) -> Conditioning:
    """The :class:`Conditioning` of the upper triangular R (r, r). Local.

    Exact up to ``EXACT_CONDITIONING_RANK`` columns. Above, in O(r²) per product: the condition
    number by ``estimate(R)`` (default :func:`condition_number`), the effective rank from R's
    diagonal (exact for a rank-revealing factor; nearly so for a scaled LSR basis, whose columns
    come in order of decreasing singular value of G).
    """
    if len(R) <= EXACT_CONDITIONING_RANK:
        s = scipy.linalg.svdvals(R)
        positive = len(s) and s[0] > 0
        return Conditioning(
            condition_number=float(s[0] / s[-1]) if positive and s[-1] > 0 else float("inf"),
            effective_rank=int(np.sum(s > rtol * s[0])) if positive else 0,
            singular_values=s,
            estimated=False,
        )
    d = np.abs(np.diag(R))
    return Conditioning(
        condition_number=(estimate or condition_number)(R),
        effective_rank=int(np.sum(d > rtol * d.max())) if d.max() > 0 else 0,
        singular_values=None,
        estimated=True,
    )


LANCZOS_TOLERANCE = 1e-3  # relative accuracy of the extreme eigenvalues of Rᵀ R (ARPACK's tol)


def condition_number(R: np.ndarray) -> float:
    """The 2-norm condition number of the upper triangular R (r, r), inf if singular. Local.

    Exact (singular values) up to 100 columns; above, ``sqrt(λ_max(RᵀR) · λ_max((RᵀR)⁻¹))`` by
    Lanczos (ARPACK, relative tolerance ``LANCZOS_TOLERANCE``, a fixed start vector: the same
    result on every MPI rank), products with R, Rᵀ and triangular solves only: O(r²) each, a few
    dozen of them (measured 2 s at r = 4000, where the singular values took 56 s).
    """
    r = len(R)
    if r <= 100:
        s = scipy.linalg.svdvals(R)
        return float(s[0] / s[-1]) if s[-1] > 0 else float("inf")
    if not np.all(np.diag(R) != 0):
        return float("inf")

    def solve(x: np.ndarray, trans: str = "N") -> np.ndarray:
        return scipy.linalg.solve_triangular(R, x, trans=trans, check_finite=False)

    def largest(product) -> float:
        operator = LinearOperator((r, r), matvec=product, dtype=np.float64)
        return float(eigsh(operator, k=1, which="LA", v0=np.ones(r), tol=LANCZOS_TOLERANCE)[0][0])

    with np.errstate(over="ignore", invalid="ignore"):
        try:
            ratio = largest(lambda x: R.T @ (R @ x)) * largest(lambda x: solve(solve(x, "T")))
        except ArpackError:  # no convergence, or products that overflowed: numerically singular
            return float("inf")
    return float(np.sqrt(ratio)) if np.isfinite(ratio) and ratio > 0 else float("inf")


def leading_rank(diagonal: np.ndarray, rtol: float) -> int:
    """The number of leading entries of R's |diagonal| before the first one at or below
    ``rtol`` times the largest before it: the leading block that is not numerically singular
    by its diagonal. Local."""
    small = diagonal <= rtol * np.maximum.accumulate(diagonal)
    return int(np.argmax(small)) if small.any() else len(diagonal)


@dataclass(frozen=True)
class ReducedSolution:
    """Factorised reduced problem, identical on every rank.

    With ``comm`` (the ranks that hold it), :meth:`coefficients` is collective over it: a
    truncated-SVD fallback is computed on its rank 0 alone and broadcast (at r = 10⁴ the SVD's
    factors and workspace take 3.3 GB and ~11 min per rank). Without, every call is local."""

    R: np.ndarray  # (r, r) upper triangular, non-negative diagonal
    z: np.ndarray  # (r,) Qᵀ f
    rho: float  # norm of the part of f outside the range of G V
    n_rows: int  # rows over all ranks
    comm: MPI.Comm | None = field(default=None, compare=False, repr=False)
    #: ranks whose solution needed the SVD fallback of :meth:`coefficients`, in the order asked
    fallback_ranks: list = field(default_factory=list, compare=False, repr=False)
    _solutions: dict = field(default_factory=dict, compare=False, repr=False)
    _conditions: dict = field(default_factory=dict, compare=False, repr=False)  # j -> κ(R[:j, :j])

    @property
    def rank(self) -> int:
        return len(self.z)

    def singular_values(self) -> np.ndarray:
        """Singular values of G V (those of R), descending. O(r³): see :meth:`conditioning`."""
        return scipy.linalg.svdvals(self.R)

    def conditioning(self, rtol: float = 1e-10) -> Conditioning:
        """Condition number and effective rank of G V, exact or (large r) estimated in O(r²)
        (:func:`triangular_conditioning`)."""
        return triangular_conditioning(
            self.R, rtol, estimate=lambda R: self._leading_condition(len(R))
        )

    def _leading_condition(self, j: int) -> float:
        """:func:`condition_number` of the leading block ``R[:j, :j]``, computed once per j (the
        report's and the largest rank's solve ask for the same block)."""
        if j not in self._conditions:
            self._conditions[j] = condition_number(self.R[:j, :j])
        return self._conditions[j]

    def effective_rank(self, rtol: float = 1e-10) -> int:
        """Number of singular values above ``rtol`` times the largest (estimated above
        ``EXACT_CONDITIONING_RANK`` columns)."""
        return self.conditioning(rtol).effective_rank

    def coefficients(self, rank: int | None = None, *, rtol: float = 1e-10) -> np.ndarray:
        """``c`` (rank,) minimising ``||G V[:, :rank] c + f||``; O(rank²), kept for the next call.

        The leading block ``R[:rank, :rank]`` is R's factor of the first ``rank`` columns (nested
        ranks from one factorisation). Its columns from the first numerically zero diagonal
        entry on (:func:`leading_rank`) get zero coefficients, and the rest is a triangular
        solve, when that block's condition number (:func:`condition_number`, O(rank²)) is below
        ``1 / rtol``. Otherwise
        (only then: O(rank³)) a truncated SVD of the block, singular values below ``rtol``
        times the largest dropped (on ``comm``'s rank 0, broadcast); that rank is added to
        ``fallback_ranks`` and logged. Collective over ``comm`` when it is set.
        """
        r = self.rank if rank is None else int(rank)
        if not 1 <= r <= self.rank:
            raise ValueError(f"rank must be in [1, {self.rank}], got {r}")
        if r not in self._solutions:
            self._solutions[r] = self._solve(r, rtol)
        return self._solutions[r].copy()

    def _solve(self, r: int, rtol: float) -> np.ndarray:
        Rr, zr = self.R[:r, :r], self.z[:r]
        j = leading_rank(np.abs(np.diag(Rr)), rtol)
        if j and self._leading_condition(j) < 1 / rtol:
            c = np.zeros(r)
            c[:j] = -scipy.linalg.solve_triangular(Rr[:j, :j], zr[:j])
            if j < r:
                log.info("reduced solve at rank %d: columns %d to %d are dependent", r, j + 1, r)
            return c
        log.warning(
            "reduced solve at rank %d: the triangular factor is too ill conditioned; "
            "truncated SVD (O(rank³))",
            r,
        )
        self.fallback_ranks.append(r)
        if self.comm is None:
            return _truncated_svd_solution(Rr, zr, rtol)
        c = _truncated_svd_solution(Rr, zr, rtol) if self.comm.rank == 0 else np.empty(r)
        self.comm.Bcast(c, root=0)
        return c

    def residual_norm(self, rank: int | None = None) -> float:
        """``min_c ||G V[:, :rank] c + f||`` (exact for a well-conditioned block)."""
        r = self.rank if rank is None else int(rank)
        return float(np.sqrt(self.rho**2 + np.sum(self.z[r:] ** 2)))

    def initial_norm(self) -> float:
        """``||f||`` (the residual before refinement)."""
        return float(np.sqrt(self.rho**2 + np.sum(self.z**2)))


def _truncated_svd_solution(R: np.ndarray, z: np.ndarray, rtol: float) -> np.ndarray:
    """``c`` minimising ``||R c + z||`` (R square) through R's SVD, singular values below ``rtol``
    times the largest dropped. Local, O(r³)."""
    U, s, Wt = np.linalg.svd(R)
    keep = s > rtol * s[0]
    return -(Wt[keep].T @ ((U[:, keep].T @ z) / s[keep]))


def _from_augmented_r(
    R_aug: np.ndarray, r: int, n_rows: int, comm: MPI.Comm | None
) -> ReducedSolution:
    if R_aug.shape[0] < r + 1:
        raise ValueError(
            f"the reduced problem has {R_aug.shape[0]} rows in all, fewer than rank + 1 = {r + 1}"
        )
    return ReducedSolution(
        R=R_aug[:r, :r].copy(),
        z=R_aug[:r, r].copy(),
        rho=float(abs(R_aug[r, r])),
        n_rows=n_rows,
        comm=comm,
    )


def solve_dense(GV: np.ndarray, f: np.ndarray, comm: MPI.Comm = MPI.COMM_WORLD) -> ReducedSolution:
    """From the whole local block G V (n_local, r) and f (n_local,): local QR, then TSQR.
    Collective."""
    augmented = np.column_stack([np.asarray(GV, dtype=np.float64), np.asarray(f, dtype=np.float64)])
    if not np.all(np.isfinite(augmented)):
        raise FloatingPointError("G V or f contains NaN or infinite values")
    R_local = (
        np.linalg.qr(augmented, mode="r") if len(augmented) else np.zeros((0, augmented.shape[1]))
    )
    n_rows = comm.allreduce(len(augmented))
    return _from_augmented_r(tsqr_r(R_local, comm), GV.shape[1], n_rows, comm)


REDUCTIONS = ("qr", "gram")
ROWS_PER_ADD = 8192  # rows of [G V | f] copied to float64 at a time (r = 10⁴: 655 MB)


class NormalEquations:
    """``Aᵀ A`` (float64, on ``device``) of a tall matrix fed in row blocks: memory
    O(k² + block·k). Local.

    Half the flops of Householder QR and at matrix-product speed (measured 3x faster at
    8000 x 1000), but it squares the condition number: fine for the scaled LSR basis, whose
    ``G V`` is close to orthonormal; use QR when ``G V`` is ill conditioned.
    """

    def __init__(self, n_columns: int, device: torch.device | str = "cpu"):
        self.M = torch.zeros(n_columns, n_columns, dtype=torch.float64, device=device)
        self.n_rows = 0

    def add(self, block: torch.Tensor) -> None:
        """Add the rows of ``block`` (rows, k) float64, on the accumulator's device."""
        if block.ndim != 2 or block.shape[1] != len(self.M):
            raise ValueError(
                f"blocks must have {len(self.M)} columns, got shape {tuple(block.shape)}"
            )
        self.M += gram_product(block)
        # a NaN or infinite entry makes its column's diagonal entry non-finite (checked without
        # torch.isfinite(block), whose float64 temporary is as large as the block)
        if not bool(torch.isfinite(self.M.diagonal()).all()):
            raise FloatingPointError(
                "a block fed to the normal equations contains NaN or infinite values"
            )
        self.n_rows += len(block)

    def state(self) -> dict:
        return {"M": self.M.to("cpu", copy=True), "n_rows": self.n_rows}

    def restore(self, state: dict) -> None:
        M = torch.as_tensor(state["M"], dtype=torch.float64)
        self.M, self.n_rows = M.to(self.M.device, copy=True), int(state["n_rows"])


def accumulator(
    reduction: str, n_columns: int, device: torch.device | str = "cpu"
) -> "StreamingQR | NormalEquations":
    """The row-block accumulator of ``reduction`` for ``n_columns`` columns: ``qr`` (Householder,
    NumPy, on the host) or ``gram`` (on ``device``)."""
    if reduction == "qr":
        return StreamingQR(n_columns)
    if reduction == "gram":
        return NormalEquations(n_columns, device)
    raise ValueError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}")


def finish(
    stream: "StreamingQR | NormalEquations", rank: int, comm: MPI.Comm = MPI.COMM_WORLD
) -> ReducedSolution:
    """Combine every rank's accumulated ``[G V | f]`` rows into the reduced solution (on the
    host; a ``gram`` accumulator is summed and factorised on its device first). Collective.

    Raises:
        FloatingPointError: (``gram``) when the normal equations are not numerically positive
            definite (``G V`` rank deficient or too ill conditioned): use ``reduction="qr"``.
    """
    n_rows = comm.allreduce(stream.n_rows)
    if isinstance(stream, StreamingQR):
        return _from_augmented_r(tsqr_r(stream.R, comm), rank, n_rows, comm)
    M = allreduce_(stream.M.clone(), comm)
    if n_rows < rank + 1:
        raise ValueError(
            f"the reduced problem has {n_rows} rows in all, fewer than rank + 1 = {rank + 1}"
        )
    R, info = torch.linalg.cholesky_ex(M, upper=True)
    if int(info) or not bool(torch.isfinite(R.diagonal()).all()):
        raise FloatingPointError(
            "the normal equations of G V are not numerically positive definite "
            "(rank-deficient or ill-conditioned G V); use reduction='qr'"
        )
    return _from_augmented_r(R.cpu().numpy(), rank, n_rows, comm)


class PieceStore(Protocol):
    """Where a long reduction keeps its accumulator (:class:`pinn_lsr.lsr.restart.RestartStore`)."""

    def load(self, name: str) -> dict | None: ...

    def save(self, name: str, value: dict) -> None: ...


def solve_streaming(
    blocks: Iterable[tuple] | Callable[[int], Iterable[tuple]],
    rank: int,
    comm: MPI.Comm = MPI.COMM_WORLD,
    *,
    reduction: str = "qr",
    store: PieceStore | None = None,
    restart_seconds: float = 300.0,
    progress: bool = False,
    n_rows: int | None = None,
    device: torch.device | str = "cpu",
) -> ReducedSolution:
    """Accumulate this rank's row blocks of ``[G V | f]`` (memory O(r² + block·r), never holding
    G V whole), then combine the ranks' factors. Collective.

    Args:
        blocks: ``(GV_block (rows, r), f_block (rows,))`` pairs (NumPy arrays or tensors of
            any float dtype on any device, cast to float64 here); or a function of the number of
            rows already accumulated (0, or the count restored from ``store``) that returns the
            pairs of the rows after them.
        device: where ``gram`` accumulates (``qr`` works on the host).
        rank: r, the columns of G V.
        reduction: ``qr`` (Householder) or ``gram`` (normal equations), see :func:`accumulator`.
        store: where the accumulator is saved every ``restart_seconds`` and, when present,
            restored from (``blocks`` must then be a function).
        progress: a progress bar over this rank's ``n_rows`` rows (rank 0).

    Raises:
        ValueError: a restored accumulator with ``blocks`` that cannot skip rows.
    """
    stream = accumulator(reduction, rank + 1, device)
    done = 0
    saved = store.load("reduction") if store is not None else None
    if saved is not None:
        stream.restore(saved)
        done = int(saved["rows"])
    if callable(blocks):
        blocks = blocks(done)
    elif done:
        raise ValueError("resuming a reduction needs blocks as a function of the rows done")
    last_save = time.perf_counter()
    # one float64 buffer for the row blocks (a new one per block fragmented the heap: +300 MB
    # per rank at rank 3000)
    buffer = torch.empty(ROWS_PER_ADD, rank + 1, dtype=torch.float64, device=device)
    with tqdm(
        total=n_rows,
        initial=done,
        desc="LSR reduced problem [G·V | f]",
        unit="row",
        disable=not progress or comm.rank != 0,
    ) as bar:
        for GV_block, f_block in blocks:
            GV_block, f_block = torch.as_tensor(GV_block), torch.as_tensor(f_block)
            for first in range(0, len(GV_block), ROWS_PER_ADD):  # float64 copies of bounded size
                rows = slice(first, first + ROWS_PER_ADD)
                block = buffer[: len(GV_block[rows])]
                block[:, :-1], block[:, -1] = GV_block[rows], f_block[rows]
                if isinstance(stream, StreamingQR):  # on the host; it keeps blocks for a while
                    stream.add(block.to("cpu", copy=True).numpy())
                else:
                    stream.add(block)
                done += len(block)
                bar.update(len(block))
            del GV_block, f_block
            if store is not None and time.perf_counter() - last_save > restart_seconds:
                store.save("reduction", {**stream.state(), "rows": done})
                last_save = time.perf_counter()
    return finish(stream, rank, comm)
