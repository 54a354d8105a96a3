"""The part every grid-input PDE shares: P1 space, input field from the grid, zero Dirichlet
boundary (whole, or the facets of chosen tags), transfer between grid and dofs, and norms."""

from collections.abc import Callable, Sequence

import dolfinx_solver  # noqa: F401  (orders mpi4py before petsc4py)
import numpy as np
import scipy.sparse
import ufl
from petsc4py import PETSc

import dolfinx.fem
import dolfinx.mesh
from pinn_lsr.fem.assembly import assemble_mass_matrix
from pinn_lsr.fem.dofs import grid_to_owned_dofs, n_owned_dofs
from pinn_lsr.fem.mesh import Domain
from pinn_lsr.fem.transfer import Grid, GridEvaluator, grid_to_dofs_local

INPUT_SPACES = ("cell", "vertex")


class GridPDE:
    """P1 finite elements on ``domain`` with ``u = 0`` on the whole boundary (or, with
    ``dirichlet_tags``, only on the facets of ``domain.facet_tags`` carrying those tags, with the
    natural zero-flux condition elsewhere) and one input field ``w`` given on a :class:`Grid` of
    the mesh's bounding box, which becomes

    * ``input_space="cell"``: piecewise constant per mesh cell, the value of the grid node
      nearest the cell midpoint (each grid node owns the square of side h around it);
    * ``input_space="vertex"``: the P1 interpolant of the bilinear grid function.

    With ``components = c > 1`` the unknown is a vector field: the space is vector P1 (``c``
    values per node; DOLFINx's blocked layout, dof ``c·node + component``), ``u = 0`` holds for
    every component, and its grid form is (c, s, s) (the input field stays scalar).

    Collective on ``domain.mesh.comm`` for construction.
    """

    def __init__(
        self,
        domain: Domain,
        *,
        grid_size: int,
        input_space: str = "cell",
        dirichlet_tags: Sequence[int] | None = None,
        components: int = 1,
    ):
        if input_space not in INPUT_SPACES:
            raise ValueError(f"input_space must be one of {INPUT_SPACES}, got {input_space!r}")
        if isinstance(components, bool) or not isinstance(components, int) or components < 1:
            raise ValueError(f"components must be a positive integer, got {components!r}")
        self.components = components
        mesh = domain.mesh
        dirichlet_facets = dirichlet_facet_indices(domain, dirichlet_tags)
        lower, upper = domain.bounding_box
        self.grid = Grid(int(grid_size), tuple(lower), tuple(upper))
        self.domain = domain
        scalar = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
        self.V = (
            scalar
            if components == 1
            else dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (components,)))
        )
        W = dolfinx.fem.functionspace(mesh, ("DG", 0)) if input_space == "cell" else scalar
        self.input = dolfinx.fem.Function(W, name="input")
        self.solution = dolfinx.fem.Function(self.V, name="u")
        self._input_weights = self._grid_to_input(W, input_space)
        tdim = mesh.topology.dim
        boundary_dofs = dolfinx.fem.locate_dofs_topological(self.V, tdim - 1, dirichlet_facets)
        zero = (
            PETSc.ScalarType(0) if components == 1 else np.zeros(components, dtype=PETSc.ScalarType)
        )
        self.bcs = [dolfinx.fem.dirichletbc(zero, boundary_dofs, self.V)]
        self._evaluate_on_grid = None
        self._mass = None
        self._scratch = None

    @property
    def n_dofs(self) -> int:
        """Global number of degrees of freedom (nodes × components)."""
        return self.V.dofmap.index_map.size_global * self.V.dofmap.index_map_bs

    @property
    def n_owned(self) -> int:
        """Degrees of freedom owned by this rank (the rows of ``A`` and ``b`` it holds)."""
        return n_owned_dofs(self.V)

    def grid_to_owned_dofs(self) -> scipy.sparse.csr_matrix:
        """``P`` restricted to this rank's owned dofs, shape (n_owned, components*s*s) (per
        component, see :func:`~pinn_lsr.fem.transfer.grid_to_dofs_local`). Local."""
        return grid_to_owned_dofs(self.V, self.grid)

    def grid_to_local_dofs(self) -> scipy.sparse.csr_matrix:
        """``P`` on this rank's local dofs (owned and ghost), shape (n_local, components*s*s)
        (:func:`~pinn_lsr.fem.transfer.grid_to_dofs_local`). Local."""
        return grid_to_dofs_local(self.V, self.grid)

    def mass_matrix(self) -> PETSc.Mat:
        """The P1 mass matrix ``M`` (no boundary conditions), assembled once. Collective."""
        if self._mass is None:
            self._mass = assemble_mass_matrix(self.V)
        return self._mass

    def _grid_to_input(self, W, input_space) -> scipy.sparse.csr_matrix:
        """Sparse map from grid values (s*s) to the input Function's local dofs (owned and
        ghost)."""
        if input_space == "vertex":
            return grid_to_dofs_local(W, self.grid)
        mesh = W.mesh
        tdim = mesh.topology.dim
        cells = np.arange(
            mesh.topology.index_map(tdim).size_local + mesh.topology.index_map(tdim).num_ghosts
        )
        midpoints = dolfinx.mesh.compute_midpoints(mesh, tdim, cells.astype(np.int32))[:, :2]
        lower, upper = np.asarray(self.grid.lower), np.asarray(self.grid.upper)
        s = self.grid.size
        ij = np.clip(np.rint((midpoints - lower) / (upper - lower) * (s - 1)), 0, s - 1).astype(
            np.int64
        )
        dg0_dofs = W.dofmap.list[cells, 0]
        # one 1 per DG0 dof, in the column of the grid node nearest its cell's midpoint
        return scipy.sparse.csr_matrix(
            (np.ones(len(cells)), (dg0_dofs, ij[:, 0] * s + ij[:, 1])), shape=(len(cells), s * s)
        )

    def set_input(self, grid_values: np.ndarray) -> None:
        """Set the input field from its grid values, shape (s, s), finite. Local."""
        grid_values = np.asarray(grid_values, dtype=np.float64)
        s = self.grid.size
        if grid_values.shape != (s, s):
            raise ValueError(f"input field must have shape ({s}, {s}), got {grid_values.shape}")
        if not np.all(np.isfinite(grid_values)):
            raise ValueError("input field contains NaN or infinite values")
        self.input.x.array[:] = self._input_weights @ grid_values.ravel()

    def solution_on_grid(self) -> np.ndarray:
        """The current solution at the grid nodes, shape (s, s) (vector fields: (components, s, s)),
        identical on all ranks. Collective.

        Grid nodes outside the domain get 0, the extension of ``u = 0`` on the boundary.
        """
        if self._evaluate_on_grid is None:
            self._evaluate_on_grid = GridEvaluator(self.V, self.grid, outside=0.0)
        return self._evaluate_on_grid(self.solution)

    def field_on_grid(self, owned_values: np.ndarray) -> np.ndarray:
        """A P1 field given by its owned dof values at the grid nodes, shape (s, s) (vector fields:
        (components, s, s)), identical on all ranks (0 outside the domain). Collective."""
        if self._scratch is None:
            self._scratch = dolfinx.fem.Function(self.V)
        self._scratch.x.array[: self.n_owned] = owned_values
        self._scratch.x.scatter_forward()
        if self._evaluate_on_grid is None:
            self._evaluate_on_grid = GridEvaluator(self.V, self.grid, outside=0.0)
        return self._evaluate_on_grid(self._scratch)

    def l2_error(
        self, exact: Callable[[ufl.SpatialCoordinate], ufl.core.expr.Expr], *, degree: int = 6
    ) -> float:
        """``||u_h - u_exact||_L2`` with quadrature of ``degree``. Collective."""
        x = ufl.SpatialCoordinate(self.domain.mesh)
        dx = ufl.dx(metadata={"quadrature_degree": degree})
        error = self.solution - exact(x)
        local = dolfinx.fem.assemble_scalar(dolfinx.fem.form(ufl.inner(error, error) * dx))
        return float(np.sqrt(self.domain.mesh.comm.allreduce(local)))

    def destroy(self) -> None:
        """Free the PETSc objects (collective); the instance is unusable afterwards."""
        if self._mass is not None:
            self._mass.destroy()


def dirichlet_facet_indices(domain: Domain, tags: Sequence[int] | None) -> np.ndarray:
    """Local indices of the facets where ``u = 0``: every exterior facet (``tags`` None) or those
    of ``domain.facet_tags`` carrying one of ``tags``. Collective on ``domain.mesh.comm``.

    Raises (on every rank alike):
        ValueError: tags given but the domain has no facet tags, or a tag absent from the mesh
            (the message lists the tags it has), or an empty list.
    """
    mesh = domain.mesh
    tdim = mesh.topology.dim
    mesh.topology.create_connectivity(tdim - 1, tdim)
    if tags is None:
        return dolfinx.mesh.exterior_facet_indices(mesh.topology)
    tags = [int(tag) for tag in tags]
    if not tags:
        raise ValueError(
            "dirichlet_tags is empty: give at least one tag (None: the whole boundary)"
        )
    if (
        domain.facet_tags is None
    ):  # the same on every rank: read_mesh and unit_square decide it collectively
        raise ValueError(
            f"dirichlet_tags={tags} given, but mesh {domain.source} has no facet tags "
            "(use a gmsh mesh with physical curves, or dirichlet_tags=None for the whole boundary)"
        )
    # a rank may own none of a tag's facets: gather the tags that exist anywhere
    present = sorted(
        set().union(*mesh.comm.allgather(set(np.unique(domain.facet_tags.values).tolist())))
    )
    missing = [tag for tag in tags if tag not in present]
    if missing:
        raise ValueError(
            f"dirichlet_tags {missing} not found in mesh {domain.source}; its facet tags are "
            f"{present}"
        )
    return np.unique(np.concatenate([domain.facet_tags.find(tag) for tag in tags])).astype(np.int32)
