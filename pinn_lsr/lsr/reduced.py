"""The reduced least-squares problem ``min_c ||G V c + f||₂`` (G V: n × r, rows across ranks).

Every solver here produces the R factor of the augmented matrix ``[G V | f]``,
``[[R, z], [0, ρ]]`` with ``z = Qᵀ f``: then ``c = -R⁻¹ z`` and the residual norm is
``sqrt(ρ² + ||z_{r'..}||²)``. Because Householder QR is nested, the leading ``r' × r'`` block of
``R`` is the R factor of the first ``r'`` columns, so one factorisation gives the solution for
every rank ``r' ≤ r`` (the scan of :mod:`pinn_lsr.lsr.refine`).
"""

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from mpi4py import MPI

from pinn_lsr.parallel.tsqr import StreamingQR, tsqr_r


@dataclass(frozen=True)
class ReducedSolution:
    """Factorised reduced problem, identical on every rank."""

    R: np.ndarray  # (r, r) upper triangular, non-negative diagonal
    z: np.ndarray  # (r,) Qᵀ f
    rho: float  # norm of the part of f outside the range of G V
    n_rows: int  # rows over all ranks

    @property
    def rank(self) -> int:
        return len(self.z)

    def singular_values(self) -> np.ndarray:
        """Singular values of G V (those of R), descending."""
        return scipy.linalg.svdvals(self.R)

    def effective_rank(self, rtol: float = 1e-10) -> int:
        """Number of singular values above ``rtol`` times the largest."""
        s = self.singular_values()
        return int(np.sum(s > rtol * s[0])) if len(s) and s[0] > 0 else 0

    def coefficients(self, rank: int | None = None, *, rtol: float = 1e-10) -> np.ndarray:
        """``c`` (rank,) minimising ``||G V[:, :rank] c + f||``.

        Uses the triangular solve when the leading block is well conditioned, otherwise a
        truncated SVD of the block (singular values below ``rtol`` times the largest dropped).
        """
        r = self.rank if rank is None else int(rank)
        if not 1 <= r <= self.rank:
            raise ValueError(f"rank must be in [1, {self.rank}], got {r}")
        Rr, zr = self.R[:r, :r], self.z[:r]
        diagonal = np.abs(np.diag(Rr))
        if diagonal.min() > np.sqrt(rtol) * diagonal.max():
            return -scipy.linalg.solve_triangular(Rr, zr)
        U, s, Wt = np.linalg.svd(Rr)
        keep = s > rtol * s[0]
        return -(Wt[keep].T @ ((U[:, keep].T @ zr) / s[keep]))

    def residual_norm(self, rank: int | None = None) -> float:
        """``min_c ||G V[:, :rank] c + f||`` (exact for a well-conditioned block)."""
        r = self.rank if rank is None else int(rank)
        return float(np.sqrt(self.rho**2 + np.sum(self.z[r:] ** 2)))

    def initial_norm(self) -> float:
        """``||f||`` (the residual before refinement)."""
        return float(np.sqrt(self.rho**2 + np.sum(self.z**2)))


def _from_augmented_r(R_aug: np.ndarray, r: int, n_rows: int) -> ReducedSolution:
    if R_aug.shape[0] < r + 1:
        raise ValueError(f"the reduced problem has {R_aug.shape[0]} rows in all, fewer than rank + 1 = {r + 1}")
    return ReducedSolution(R=R_aug[:r, :r].copy(), z=R_aug[:r, r].copy(), rho=float(abs(R_aug[r, r])), n_rows=n_rows)


def solve_dense(GV: np.ndarray, f: np.ndarray, comm: MPI.Comm = MPI.COMM_WORLD) -> ReducedSolution:
    """From the whole local block G V (n_local, r) and f (n_local,): local QR, then TSQR. Collective."""
    augmented = np.column_stack([np.asarray(GV, dtype=np.float64), np.asarray(f, dtype=np.float64)])
    if not np.all(np.isfinite(augmented)):
        raise FloatingPointError("G V or f contains NaN or infinite values")
    R_local = np.linalg.qr(augmented, mode="r") if len(augmented) else np.zeros((0, augmented.shape[1]))
    return _from_augmented_r(tsqr_r(R_local, comm), GV.shape[1], comm.allreduce(len(augmented)))


def solve_streaming(blocks: Iterable[tuple[np.ndarray, np.ndarray]], rank: int, comm: MPI.Comm = MPI.COMM_WORLD) -> ReducedSolution:
    """From row blocks ``(GV_block (rows, r), f_block (rows,))``: memory O(r² + block·r), never
    holding G V whole; each rank streams its rows, then TSQR combines. Collective."""
    stream = StreamingQR(rank + 1)
    for GV_block, f_block in blocks:
        stream.add(np.column_stack([np.asarray(GV_block, dtype=np.float64), np.asarray(f_block, dtype=np.float64)]))
    return _from_augmented_r(tsqr_r(stream.R, comm), rank, comm.allreduce(stream.n_rows))
