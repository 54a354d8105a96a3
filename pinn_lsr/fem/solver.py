"""PETSc KSP construction from options, with convergence checked on every solve."""

from collections.abc import Mapping

from mpi4py import MPI
from petsc4py import PETSc

from pinn_lsr.fem.options import options_inserted

#: Small problems are solved directly: LU factorisation by MUMPS.
DIRECT_SOLVER_OPTIONS = {
    "ksp_type": "preonly",
    "pc_type": "lu",
    "pc_factor_mat_solver_type": "mumps",
}

_REASONS = {
    getattr(PETSc.KSP.ConvergedReason, n): n for n in dir(PETSc.KSP.ConvergedReason) if n.isupper()
}


def reason_name(reason: int) -> str:
    """PETSc's name of a KSP converged reason (e.g. ``CONVERGED_RTOL``, ``DIVERGED_ITS``)."""
    return _REASONS.get(reason, str(reason))


class SolverError(RuntimeError):
    """A PETSc solver did not converge; the message names the prefix, reason and iterations."""


def create_ksp(comm: MPI.Comm, *, prefix: str, options: Mapping | None = None) -> PETSc.KSP:
    """Create a KSP configured from ``options`` (nested dict) under ``prefix``.

    Collective on ``comm``. ``options`` defaults to :data:`DIRECT_SOLVER_OPTIONS`; options
    already in PETSc's database (for instance from ``PETSC_OPTIONS="-fem_ksp_monitor"``) win.
    """
    ksp = PETSc.KSP().create(comm)
    ksp.setOptionsPrefix(prefix)
    with options_inserted(prefix, DIRECT_SOLVER_OPTIONS if options is None else options):
        ksp.setFromOptions()
        ksp.getPC().setFromOptions()
    return ksp


def solve_checked(ksp: PETSc.KSP, b: PETSc.Vec, x: PETSc.Vec) -> int:
    """Solve ``ksp`` for ``b`` into ``x``; return the iteration count.

    Collective on ``ksp.comm``.

    Raises:
        SolverError: when PETSc reports divergence or fails inside the solve (for instance a
            zero pivot in the factorisation).
    """
    prefix = ksp.getOptionsPrefix()
    try:
        ksp.solve(b, x)
    except PETSc.Error as error:
        raise SolverError(f"KSP with prefix {prefix!r} failed inside PETSc: {error}") from error
    reason = ksp.getConvergedReason()
    if reason < 0:
        raise SolverError(
            f"KSP with prefix {prefix!r} did not converge: {reason_name(reason)} "
            f"after {ksp.getIterationNumber()} iterations "
            f"(type {ksp.getType()}, pc {ksp.getPC().getType()}; try -{prefix}ksp_monitor)"
        )
    return ksp.getIterationNumber()
