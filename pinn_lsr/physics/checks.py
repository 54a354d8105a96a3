"""Collective checks of a user's FEM instances: every bad input raises the same ``ValueError`` on
every rank (reduced first, never a hang), naming what was received and what was expected."""

from collections.abc import Sequence

import dolfinx_solver  # noqa: F401  (orders mpi4py before petsc4py)
import numpy as np
import scipy.sparse
from mpi4py import MPI
from petsc4py import PETSc

from pinn_lsr.fem.dofs import owned_values
from pinn_lsr.fem.instance import LinearInstance
from pinn_lsr.parallel.mpi import raise_collectively


def _finite(obj) -> bool:
    """All entries of a PETSc Mat or Vec finite (a NaN or inf propagates into the norm).
    Collective."""
    value = obj.norm(PETSc.NormType.FROBENIUS) if isinstance(obj, PETSc.Mat) else obj.norm()
    return bool(np.isfinite(value))


def check_system(system: LinearInstance, k: int, n_rows: int | None, comm: MPI.Comm) -> int:
    """Layout and finiteness of instance ``k`` (``n_rows``: instance 0's local rows, or None);
    returns its local rows. Collective."""
    rows, cols = system.A.getLocalSize()
    message = None
    if rows != cols:
        message = (
            f"instance {k}: A has {rows} local rows but {cols} local columns; pinn_lsr multiplies "
            "A with owned dof values, so the column layout must be the row layout"
        )
    elif system.b.getLocalSize() != rows:
        message = (
            f"instance {k}: b has {system.b.getLocalSize()} local entries but A has {rows} local "
            "rows"
        )
    elif system.weight is not None and system.weight.getLocalSize() != (rows, rows):
        message = (
            f"instance {k}: the weighting S has local size {system.weight.getLocalSize()}, "
            f"A {(rows, cols)}"
        )
    elif n_rows is not None and rows != n_rows:
        message = f"instance {k}: A has {rows} local rows, instance 0 has {n_rows}"
    raise_collectively(comm, message)
    for name, obj in (("A", system.A), ("b", system.b), ("S", system.weight)):
        if obj is not None and not _finite(obj):
            raise ValueError(f"instance {k}: {name} contains NaN or infinite values")
    return rows


def check_systems(systems: Sequence[LinearInstance], n_inputs: int, comm: MPI.Comm) -> int:
    """One network input per system, and every system's layout and values; returns the local
    rows (owned dofs). Collective."""
    raise_collectively(
        comm,
        None
        if n_inputs == len(systems)
        else f"{n_inputs} network inputs but {len(systems)} FEM systems "
        "(inputs is a batch, one per system: (K, ...))",
    )
    n = None
    for k, system in enumerate(systems):
        n = check_system(system, k, n, comm)
    return n


def check_space(n_owned_space: int, n: int, comm: MPI.Comm) -> None:
    """The function space owns the rows of ``A`` on every rank. Collective."""
    raise_collectively(
        comm,
        None
        if n_owned_space == n
        else f"the space V owns {n_owned_space} dof values on this rank but A has {n} local rows",
    )


def check_to_dofs(to_dofs, n: int, comm: MPI.Comm) -> scipy.sparse.csr_matrix:
    """``P`` as CSR: ``n`` rows, finite, the same number of columns on every rank. Collective."""
    P = scipy.sparse.csr_matrix(to_dofs)
    message = None
    if P.shape[0] != n:
        message = (
            f"to_dofs has {P.shape[0]} rows but A has {n} local rows (owned dofs) on this rank"
        )
    elif not np.isfinite(P.data).all():
        message = "to_dofs contains NaN or infinite values"
    raise_collectively(comm, message)
    columns = comm.allgather(P.shape[1])
    raise_collectively(
        comm,
        None
        if len(set(columns)) == 1
        else "to_dofs must have the same number of columns (network outputs) on every rank, "
        f"got {columns}",
    )
    return P


def check_points(points, n: int, comm: MPI.Comm) -> np.ndarray:
    """The owned dofs' coordinates (n, 2), finite, as float64. Collective."""
    pts = np.asarray(points, dtype=np.float64)
    message = None
    if pts.ndim != 2 or pts.shape != (n, 2):
        message = f"points must have shape (owned dofs, 2) = ({n}, 2), got {pts.shape}"
    elif not np.isfinite(pts).all():
        message = "points contain NaN or infinite values"
    raise_collectively(comm, message)
    return pts


def check_references(references, n_systems: int, n: int, comm: MPI.Comm) -> list[np.ndarray]:
    """One reference per system (arrays, PETSc Vecs or Functions; a single one for one system)
    -> owned dof values, (n,) each. Collective."""
    refs = [
        owned_values(r, n)
        for r in (references if isinstance(references, (list, tuple)) else [references])
    ]
    raise_collectively(
        comm,
        None
        if len(refs) == n_systems and all(r.shape == (n,) for r in refs)
        else f"references must be {n_systems} arrays of the {n} owned dof values",
    )
    return refs
