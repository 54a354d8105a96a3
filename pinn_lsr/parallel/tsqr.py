"""QR of tall matrices whose rows are split across MPI ranks or streamed in blocks.

Only the triangular factor is kept: for a least-squares problem ``min ||A c - b||`` the R factor
of the augmented matrix ``[A | b]`` holds everything needed (``Rᵀ R = [A|b]ᵀ [A|b]``).
All R factors here have a non-negative diagonal, so they are unique for full-rank input and
the same on 1 and N ranks up to round-off (Demmel et al., "Communication-optimal parallel and
sequential QR and LU factorizations", SIAM J. Sci. Comput. 2012).
"""

import numpy as np
from mpi4py import MPI


def _positive_diagonal(R: np.ndarray) -> np.ndarray:
    signs = np.sign(np.diag(R))
    signs[signs == 0] = 1.0
    return R * signs[:, None]


class StreamingQR:
    """R factor of a tall matrix fed in row blocks: memory O(k² + buffer·k). Local.

    ``add(block)`` for each (rows, k) block, then ``R`` is the (min(n, k), k) factor of all rows.
    Small blocks are buffered until at least ``max(2k, 4096)`` rows are waiting, so the cost
    stays close to one Householder QR of all rows (re-factorising R with every small block
    would cost k² per block row count, far more at large k).
    """

    def __init__(self, n_columns: int):
        self.n_columns = n_columns
        self._R = np.zeros((0, n_columns))
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self.n_rows = 0

    def add(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float64)
        if block.ndim != 2 or block.shape[1] != self.n_columns:
            raise ValueError(f"blocks must have {self.n_columns} columns, got shape {block.shape}")
        if not np.all(np.isfinite(block)):
            raise FloatingPointError("a block fed to the QR contains NaN or infinite values")
        self.n_rows += len(block)
        self._buffer.append(block)
        self._buffered += len(block)
        if self._buffered >= max(2 * self.n_columns, 4096):
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._R = np.linalg.qr(np.vstack([self._R, *self._buffer]), mode="r")
            self._buffer, self._buffered = [], 0

    @property
    def R(self) -> np.ndarray:
        self._flush()
        return self._R

    def state(self) -> dict:
        """What :meth:`restore` needs to continue (for checkpoints)."""
        return {"R": self.R, "n_rows": self.n_rows}

    def restore(self, state: dict) -> None:
        self._R, self.n_rows = np.asarray(state["R"]), int(state["n_rows"])
        self._buffer, self._buffered = [], 0


def tsqr_r(R_local: np.ndarray, comm: MPI.Comm) -> np.ndarray:
    """Combine each rank's R factor (any number of rows, k columns) into the R of all rows.

    Collective on ``comm``; the result (min(n, k), k) is identical on every rank.
    """
    stacked = np.vstack(comm.allgather(np.asarray(R_local, dtype=np.float64)))
    return _positive_diagonal(np.linalg.qr(stacked, mode="r"))


def tsqr(A_local: np.ndarray, comm: MPI.Comm) -> tuple[np.ndarray, np.ndarray]:
    """Thin QR of the row-distributed ``A`` (global n × k, n >= k):
    (Q_local (n_local, k), R (k, k)).

    Collective on ``comm``; R is identical on every rank, Q has this rank's rows.
    """
    A_local = np.asarray(A_local, dtype=np.float64)
    k = A_local.shape[1]
    if A_local.shape[0]:
        Q1, R1 = np.linalg.qr(A_local)
    else:
        Q1, R1 = np.zeros((0, 0)), np.zeros((0, k))
    R1s = comm.allgather(R1)
    if sum(len(r) for r in R1s) < k:
        raise ValueError(f"TSQR needs at least {k} rows in all, got {sum(len(r) for r in R1s)}")
    Q2, R = np.linalg.qr(np.vstack(R1s))
    signs = np.sign(np.diag(R))
    signs[signs == 0] = 1.0
    offset = sum(len(r) for r in R1s[: comm.rank])
    Q_local = Q1 @ Q2[offset : offset + len(R1)] * signs
    return Q_local, R * signs[:, None]
