"""The part every grid-input PDE shares: P1 space, input field from the grid, zero Dirichlet
boundary, transfer between grid and dofs, and norms."""

from collections.abc import Callable

import numpy as np
import scipy.sparse
import ufl
from petsc4py import PETSc

import dolfinx.fem
import dolfinx.fem.petsc
import dolfinx.mesh
from pinn_lsr.fem.mesh import Domain
from pinn_lsr.fem.transfer import Grid, GridEvaluator, grid_to_dofs_local

INPUT_SPACES = ("cell", "vertex")


class GridPDE:
    """P1 finite elements on ``domain`` with ``u = 0`` on the whole boundary and one input field
    ``w`` given on a :class:`Grid` of the mesh's bounding box, which becomes

    * ``input_space="cell"``: piecewise constant per mesh cell, the value of the grid node
      nearest the cell midpoint (each grid node owns the square of side h around it);
    * ``input_space="vertex"``: the P1 interpolant of the bilinear grid function.

    Collective on ``domain.mesh.comm`` for construction.
    """

    def __init__(self, domain: Domain, *, grid_size: int, input_space: str = "cell"):
        if input_space not in INPUT_SPACES:
            raise ValueError(f"input_space must be one of {INPUT_SPACES}, got {input_space!r}")
        mesh = domain.mesh
        lower, upper = domain.bounding_box
        self.grid = Grid(int(grid_size), tuple(lower), tuple(upper))
        self.domain = domain
        self.V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
        W = dolfinx.fem.functionspace(mesh, ("DG", 0)) if input_space == "cell" else self.V
        self.input = dolfinx.fem.Function(W, name="input")
        self.solution = dolfinx.fem.Function(self.V, name="u")
        self._input_weights = self._grid_to_input(W, input_space)
        tdim = mesh.topology.dim
        mesh.topology.create_connectivity(tdim - 1, tdim)
        boundary_facets = dolfinx.mesh.exterior_facet_indices(mesh.topology)
        boundary_dofs = dolfinx.fem.locate_dofs_topological(self.V, tdim - 1, boundary_facets)
        self.bcs = [dolfinx.fem.dirichletbc(PETSc.ScalarType(0), boundary_dofs, self.V)]
        self._evaluate_on_grid = None
        self._mass = None
        self._scratch = None

    @property
    def n_dofs(self) -> int:
        """Global number of degrees of freedom."""
        return self.V.dofmap.index_map.size_global

    @property
    def n_owned(self) -> int:
        """Degrees of freedom owned by this rank (the rows of ``A`` and ``b`` it holds)."""
        return self.V.dofmap.index_map.size_local

    def grid_to_owned_dofs(self) -> scipy.sparse.csr_matrix:
        """``P`` restricted to this rank's owned dofs, shape (n_owned, s*s). Local."""
        return grid_to_dofs_local(self.V, self.grid)[: self.n_owned].tocsr()

    def mass_matrix(self) -> PETSc.Mat:
        """The P1 mass matrix ``M`` (no boundary conditions), assembled once. Collective."""
        if self._mass is None:
            u, v = ufl.TrialFunction(self.V), ufl.TestFunction(self.V)
            self._mass = dolfinx.fem.petsc.assemble_matrix(dolfinx.fem.form(u * v * ufl.dx))
            self._mass.assemble()
        return self._mass

    def _grid_to_input(self, W, input_space) -> scipy.sparse.csr_matrix:
        """Sparse map from grid values (s*s) to the input Function's local dofs (owned and ghost)."""
        if input_space == "vertex":
            return grid_to_dofs_local(W, self.grid)
        mesh = W.mesh
        tdim = mesh.topology.dim
        cells = np.arange(mesh.topology.index_map(tdim).size_local + mesh.topology.index_map(tdim).num_ghosts)
        midpoints = dolfinx.mesh.compute_midpoints(mesh, tdim, cells.astype(np.int32))[:, :2]
        lower, upper = np.asarray(self.grid.lower), np.asarray(self.grid.upper)
        s = self.grid.size
        ij = np.clip(np.rint((midpoints - lower) / (upper - lower) * (s - 1)), 0, s - 1).astype(np.int64)
        dg0_dofs = W.dofmap.list[cells, 0]
        # one 1 per DG0 dof, in the column of the grid node nearest its cell's midpoint
        return scipy.sparse.csr_matrix((np.ones(len(cells)), (dg0_dofs, ij[:, 0] * s + ij[:, 1])), shape=(len(cells), s * s))

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
        """The current solution at the grid nodes, shape (s, s), identical on all ranks. Collective.

        Grid nodes outside the domain get 0, the extension of ``u = 0`` on the boundary.
        """
        if self._evaluate_on_grid is None:
            self._evaluate_on_grid = GridEvaluator(self.V, self.grid, outside=0.0)
        return self._evaluate_on_grid(self.solution)

    def field_on_grid(self, owned_values: np.ndarray) -> np.ndarray:
        """A P1 field given by its owned dof values at the grid nodes, shape (s, s), identical
        on all ranks (0 outside the domain). Collective."""
        if self._scratch is None:
            self._scratch = dolfinx.fem.Function(self.V)
        self._scratch.x.array[: self.n_owned] = owned_values
        self._scratch.x.scatter_forward()
        if self._evaluate_on_grid is None:
            self._evaluate_on_grid = GridEvaluator(self.V, self.grid, outside=0.0)
        return self._evaluate_on_grid(self._scratch)

    def l2_error(self, exact: Callable[[ufl.SpatialCoordinate], ufl.core.expr.Expr], *, degree: int = 6) -> float:
        """``||u_h - u_exact||_L2`` with quadrature of ``degree``. Collective."""
        x = ufl.SpatialCoordinate(self.domain.mesh)
        dx = ufl.dx(metadata={"quadrature_degree": degree})
        local = dolfinx.fem.assemble_scalar(dolfinx.fem.form((self.solution - exact(x)) ** 2 * dx))
        return float(np.sqrt(self.domain.mesh.comm.allreduce(local)))

    def destroy(self) -> None:
        """Free the PETSc objects (collective); the instance is unusable afterwards."""
        if self._mass is not None:
            self._mass.destroy()
