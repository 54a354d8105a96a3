"""The reduced problem ``min_c ||A c + f||`` (A = G V, rows across ranks) by PETSc's KSPLSQR.

``A`` is wrapped as a PETSc shell matrix over the row layout of the ranks and right-
preconditioned by the triangular factor ``R_s`` of a Gaussian row sketch ``S A``
(``s = 2r + 10`` rows): ``A R_s⁻¹`` is well conditioned, so LSQR converges in a few
iterations whatever the conditioning of ``A`` (Avron, Maymounkov & Toledo, "Blendenpik",
SIAM J. Sci. Comput. 2010; Meng, Saunders & Mahoney, "LSRN", 2014). Options are read under
the prefix (default ``lsr_``): ``-lsr_ksp_monitor``, ``-lsr_ksp_rtol``, ...
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

import dolfinx_solver  # noqa: F401  (orders mpi4py before petsc4py)
import numpy as np
import scipy.linalg
from mpi4py import MPI
from petsc4py import PETSc

from pinn_lsr.fem.options import options_inserted
from pinn_lsr.fem.solver import solve_checked
from pinn_lsr.lsr.reduced import Conditioning, triangular_conditioning

PREFIX = "lsr_"
DEFAULT_OPTIONS = {
    "ksp_type": "lsqr",
    "pc_type": "none",
    "ksp_rtol": 1e-12,
    "ksp_atol": 1e-14,
    "ksp_max_it": 200,
}


class _PreconditionedOperator:
    """Shell matrix context: x (r, distributed) -> A R⁻¹ x (n rows, distributed), and its
    transpose."""

    def __init__(
        self, A_local: np.ndarray, R: np.ndarray, comm: MPI.Comm, column_range: tuple[int, int]
    ):
        self.A_local, self.R, self.comm, self.columns = A_local, R, comm, slice(*column_range)

    def _gather(self, x: PETSc.Vec) -> np.ndarray:
        return np.concatenate(self.comm.allgather(x.getArray(readonly=True)))

    def mult(self, mat, x, y):
        y.setArray(self.A_local @ scipy.linalg.solve_triangular(self.R, self._gather(x)))

    def multTranspose(self, mat, y, x):
        z = self.A_local.T @ y.getArray(readonly=True)
        self.comm.Allreduce(MPI.IN_PLACE, z, op=MPI.SUM)
        x.setArray(scipy.linalg.solve_triangular(self.R, z, trans="T")[self.columns])


@dataclass
class LSQRSolution:
    """Solutions of the reduced problem by KSPLSQR, one solve per requested rank."""

    A_local: np.ndarray  # (n_local, r)
    f_local: np.ndarray  # (n_local,)
    comm: MPI.Comm
    prefix: str = PREFIX
    options: Mapping | None = None
    seed: int = 0
    iterations: dict = field(default_factory=dict)  # rank -> LSQR iterations
    fallback_ranks: list = field(default_factory=list)  # always empty: LSQR has no fallback
    _cache: dict = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return self.A_local.shape[1]

    @property
    def n_rows(self) -> int:
        return self.comm.allreduce(len(self.A_local))

    def coefficients(self, rank: int | None = None) -> np.ndarray:
        """``c`` (rank,) minimising ``||A[:, :rank] c + f||``. Collective.

        Raises:
            SolverError: LSQR did not converge (the message names the prefix and the reason).
        """
        r = self.rank if rank is None else int(rank)
        if not 1 <= r <= self.rank:
            raise ValueError(f"rank must be in [1, {self.rank}], got {r}")
        if r not in self._cache:
            self._cache[r] = self._solve(r)
        return self._cache[r]

    def _solve(self, r: int) -> np.ndarray:
        A_local = np.ascontiguousarray(self.A_local[:, :r], dtype=np.float64)
        sketch_rows = min(2 * r + 10, max(self.n_rows, r))
        S_local = np.random.default_rng([self.seed, self.comm.rank]).standard_normal(
            (sketch_rows, len(A_local))
        )
        SA = S_local @ A_local
        self.comm.Allreduce(MPI.IN_PLACE, SA, op=MPI.SUM)
        R = np.linalg.qr(SA, mode="r")
        diagonal = np.abs(np.diag(R))
        R[np.diag_indices(r)] = np.where(
            diagonal > 1e-14 * diagonal.max(), np.diag(R), 1e-14 * diagonal.max()
        )

        n_local = len(A_local)
        x = PETSc.Vec().createMPI((PETSc.DECIDE, r), comm=self.comm)
        context = _PreconditionedOperator(A_local, R, self.comm, x.getOwnershipRange())
        operator = PETSc.Mat().createPython(
            ((n_local, PETSc.DETERMINE), x.getSizes()), context, comm=self.comm
        )
        operator.setUp()
        b = PETSc.Vec().createMPI((n_local, PETSc.DETERMINE), comm=self.comm)
        b.setArray(-np.asarray(self.f_local, dtype=np.float64))
        ksp = PETSc.KSP().create(self.comm)
        ksp.setOptionsPrefix(self.prefix)
        ksp.setOperators(operator)
        with options_inserted(
            self.prefix, DEFAULT_OPTIONS if self.options is None else self.options
        ):
            ksp.setFromOptions()
        try:
            self.iterations[r] = solve_checked(ksp, b, x)
            y = np.concatenate(self.comm.allgather(x.getArray(readonly=True)))
        finally:
            for obj in (ksp, operator, b, x):
                obj.destroy()
        return scipy.linalg.solve_triangular(R, y)

    def residual_norm(self, rank: int | None = None) -> float:
        """``||A[:, :rank] c + f||`` at the LSQR solution. Collective."""
        c = self.coefficients(rank)
        local = float(np.sum((self.A_local[:, : len(c)] @ c + self.f_local) ** 2))
        return float(np.sqrt(self.comm.allreduce(local)))

    def initial_norm(self) -> float:
        """``||f||``. Collective."""
        return float(np.sqrt(self.comm.allreduce(float(np.sum(np.asarray(self.f_local) ** 2)))))

    def singular_values(self) -> np.ndarray:
        """Singular values of ``A`` from the R factor of a TSQR of its rows. Collective."""
        return scipy.linalg.svdvals(self._r_factor())

    def conditioning(self, rtol: float = 1e-10) -> Conditioning:
        """Condition number and effective rank of ``A`` (exact, or estimated for many columns:
        :func:`pinn_lsr.lsr.reduced.triangular_conditioning`). Collective."""
        return triangular_conditioning(self._r_factor(), rtol)

    def effective_rank(self, rtol: float = 1e-10) -> int:
        """Singular values above ``rtol`` times the largest. Collective."""
        return self.conditioning(rtol).effective_rank

    def _r_factor(self) -> np.ndarray:
        from pinn_lsr.parallel.tsqr import tsqr_r

        local = (
            np.linalg.qr(self.A_local, mode="r") if len(self.A_local) else np.zeros((0, self.rank))
        )
        return tsqr_r(local, self.comm)
