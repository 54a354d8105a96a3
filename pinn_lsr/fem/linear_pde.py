"""A linear PDE with one grid-given input field, assembled by DOLFINx into PETSc and solved.

The forms are compiled once; each new input (a coefficient or a source on the s × s grid)
only updates the input Function's values and re-assembles ``A`` and ``b`` in place.
"""

import logging
from collections.abc import Callable, Mapping

import numpy as np
import scipy.sparse
import ufl
from petsc4py import PETSc

import dolfinx.fem
import dolfinx.fem.petsc
import dolfinx.mesh
from pinn_lsr.fem.mesh import Domain
from pinn_lsr.fem.solver import create_ksp, solve_checked
from pinn_lsr.fem.transfer import Grid, GridEvaluator, grid_to_dofs_local

log = logging.getLogger(__name__)

#: forms(u, v, w, x) -> (a, L): trial u, test v, input field w, spatial coordinate x (UFL).
FormsCallable = Callable[[ufl.Argument, ufl.Argument, dolfinx.fem.Function, ufl.SpatialCoordinate], tuple]

INPUT_SPACES = ("cell", "vertex")


class LinearPDE:
    """``A(w) u = b(w)`` from P1 finite elements with ``u = 0`` on the whole boundary.

    The input field ``w`` is given on a :class:`Grid` of the mesh's bounding box and becomes

    * ``input_space="cell"``: piecewise constant per mesh cell, the value of the grid node
      nearest the cell midpoint (each grid node owns the square of side h around it);
    * ``input_space="vertex"``: the P1 interpolant of the bilinear grid function.

    Collective on ``domain.mesh.comm`` for construction, :meth:`assemble` and :meth:`solve`.
    """

    def __init__(
        self,
        domain: Domain,
        forms: FormsCallable,
        *,
        grid_size: int,
        input_space: str = "cell",
        petsc_options: Mapping | None = None,
        prefix: str = "fem_",
    ):
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

        u, v = ufl.TrialFunction(self.V), ufl.TestFunction(self.V)
        a, L = forms(u, v, self.input, ufl.SpatialCoordinate(mesh))
        self.a = dolfinx.fem.form(a)
        self.L = dolfinx.fem.form(L)

        tdim = mesh.topology.dim
        mesh.topology.create_connectivity(tdim - 1, tdim)
        boundary_facets = dolfinx.mesh.exterior_facet_indices(mesh.topology)
        boundary_dofs = dolfinx.fem.locate_dofs_topological(self.V, tdim - 1, boundary_facets)
        self.bcs = [dolfinx.fem.dirichletbc(PETSc.ScalarType(0), boundary_dofs, self.V)]

        self.A = dolfinx.fem.petsc.create_matrix(self.a)
        self.b = dolfinx.fem.petsc.create_vector(self.V)
        self.ksp = create_ksp(mesh.comm, prefix=prefix, options=petsc_options)
        self.ksp.setOperators(self.A)
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

    def assembled_copy(self, grid_values: np.ndarray) -> tuple[PETSc.Mat, PETSc.Vec]:
        """``(A, b)`` for the input ``grid_values`` as new PETSc objects the caller owns. Collective."""
        self.set_input(grid_values)
        A, b = self.assemble()
        return A.copy(), b.copy()

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

    def assemble(self) -> tuple[PETSc.Mat, PETSc.Vec]:
        """Assemble ``A`` and ``b`` for the current input, boundary conditions applied.

        Collective. Returns the PETSc objects owned by this instance (overwritten on the next
        call); ``b`` has its ghosts accumulated and boundary rows set.
        """
        self.A.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(self.A, self.a, bcs=self.bcs)
        self.A.assemble()
        with self.b.localForm() as b_local:
            b_local.set(0.0)
        dolfinx.fem.petsc.assemble_vector(self.b, self.L)
        dolfinx.fem.petsc.apply_lifting(self.b, [self.a], bcs=[self.bcs])
        self.b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        dolfinx.fem.petsc.set_bc(self.b, self.bcs)
        return self.A, self.b

    def solve(self, grid_values: np.ndarray | None = None) -> dolfinx.fem.Function:
        """Solve for the given input field (or the current one); return ``self.solution``.

        Collective. Ghost values of the returned Function are up to date.

        Raises:
            SolverError: the KSP did not converge.
        """
        if grid_values is not None:
            self.set_input(grid_values)
        self.assemble()
        solve_checked(self.ksp, self.b, self.solution.x.petsc_vec)
        self.solution.x.scatter_forward()
        return self.solution

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
        for obj in (self.ksp, self.A, self.b, self._mass):
            if obj is not None:
                obj.destroy()
