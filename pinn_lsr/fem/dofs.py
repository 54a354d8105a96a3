"""Degrees of freedom and the maps between a model's grid and a function space's owned dofs.

"Owned dof values" are this rank's entries of a field in DOLFINx's partition (block size
included): the local rows of ``A`` and ``b``. A model on an s × s grid reaches them through
``P`` (:func:`grid_to_owned_dofs`), a DeepONet directly at their coordinates
(:func:`owned_dof_points`).
"""

import dolfinx_solver  # noqa: F401  (orders mpi4py before petsc4py)
import numpy as np
import scipy.sparse
from petsc4py import PETSc

import dolfinx.fem
from pinn_lsr.fem.mesh import bounding_box
from pinn_lsr.fem.transfer import Grid, grid_to_dofs_local
from pinn_lsr.parallel.mpi import raise_collectively


def n_owned_dofs(V: dolfinx.fem.FunctionSpace) -> int:
    """This rank's owned dof values of ``V`` (block size included). Local."""
    return V.dofmap.index_map.size_local * V.dofmap.index_map_bs


def bounding_grid(V: dolfinx.fem.FunctionSpace, size: int) -> Grid:
    """An s × s :class:`Grid` on the bounding box of ``V``'s mesh (as the built-in problems use).
    Collective."""
    lower, upper = bounding_box(V.mesh)
    return Grid(int(size), tuple(lower), tuple(upper))


def grid_to_owned_dofs(V: dolfinx.fem.FunctionSpace, grid: Grid) -> scipy.sparse.csr_matrix:
    """``P``: bilinear interpolation from ``grid`` to ``V``'s owned dof coordinates,
    (n_owned, components*s*s) (:func:`~pinn_lsr.fem.transfer.grid_to_dofs_local`; any Lagrange
    degree). Local."""
    return grid_to_dofs_local(V, grid)[: n_owned_dofs(V)].tocsr()


def model_coordinates(coordinates: np.ndarray, grid: Grid) -> np.ndarray:
    """Physical coordinates (n, ≥2) -> the model's coordinates (n, 2): ``grid``'s box mapped to
    the unit square, where a DeepONet's default points (the grid nodes) live. Local."""
    lower, upper = np.asarray(grid.lower), np.asarray(grid.upper)
    return (np.asarray(coordinates, dtype=np.float64)[:, :2] - lower) / (upper - lower)


def owned_dof_points(V: dolfinx.fem.FunctionSpace, grid: Grid) -> np.ndarray:
    """The owned dofs' coordinates in the model's coordinates, (n_owned, 2). Collective (the
    scalar-space check raises on every rank).

    Raises:
        ValueError: ``V`` is vector-valued (a point carries several dofs there).
    """
    message = None
    if V.dofmap.index_map_bs != 1:
        message = (
            "evaluating a DeepONet at the dof coordinates needs a scalar function space (block "
            f"size {V.dofmap.index_map_bs} here); pass your own to_dofs map for vector-valued "
            "spaces"
        )
    raise_collectively(V.mesh.comm, message)
    return model_coordinates(V.tabulate_dof_coordinates()[: n_owned_dofs(V)], grid)


def owned_values(value, n_owned: int) -> np.ndarray:
    """Owned dof values (n_owned,) float64 from an array, a PETSc Vec or a dolfinx Function
    (copied). Local."""
    if isinstance(value, dolfinx.fem.Function):
        return value.x.array[:n_owned].copy()
    if isinstance(value, PETSc.Vec):
        return value.getArray(readonly=True)[:n_owned].copy()
    return np.asarray(value, dtype=np.float64)


def to_function(
    values: np.ndarray, V: dolfinx.fem.FunctionSpace, *, name: str = "u"
) -> dolfinx.fem.Function:
    """A ``dolfinx.fem.Function`` on ``V`` with the owned dof ``values`` (e.g. a refined field of
    ``refine_physics(...).fields[k]``), ghost values updated. Collective.

    Raises:
        ValueError: ``values`` is not (n_owned,) on some rank (raised on every rank).
    """
    values = np.asarray(values, dtype=np.float64)
    n = n_owned_dofs(V)
    raise_collectively(
        V.mesh.comm,
        None
        if values.shape == (n,)
        else f"values must hold the {n} owned dof values of V on this rank, "
        f"got shape {values.shape}",
    )
    u = dolfinx.fem.Function(V, name=name)
    u.x.array[:n] = values
    u.x.scatter_forward()
    return u
