"""Transfer between an s × s grid and P1 degrees of freedom.

The grid spans a box ``[lower, upper]`` with nodes ``x_i = lower_x + i h_x``, ``i = 0..s-1``;
grid arrays are indexed ``grid[i, j]`` = value at ``(x_i, y_j)`` (``indexing="ij"``) and
flattened in C order (``k = i * s + j``).

* ``P`` (grid -> dofs) interpolates bilinearly at the dof coordinates: exact for bilinear
  functions, rows non-negative and summing to one.
* ``R`` (dofs -> grid) evaluates the P1 function at the grid nodes: exact for P1 functions.
When the mesh vertices are the grid nodes, ``P`` selects and ``R = Pᵀ`` on owned rows.
"""

from dataclasses import dataclass

import numpy as np
import scipy.sparse
from mpi4py import MPI
from petsc4py import PETSc

import dolfinx.fem
import dolfinx.geometry


@dataclass(frozen=True)
class Grid:
    """An s × s grid of nodes on the box ``[lower, upper]`` (2D)."""

    size: int
    lower: tuple[float, float] = (0.0, 0.0)
    upper: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self):
        if self.size < 2:
            raise ValueError(f"a grid needs at least 2 nodes per side, got size={self.size}")

    def nodes(self) -> np.ndarray:
        """Node coordinates, shape (s*s, 2), in the flattening order of ``grid.ravel()``."""
        xs = np.linspace(self.lower[0], self.upper[0], self.size)
        ys = np.linspace(self.lower[1], self.upper[1], self.size)
        X, Y = np.meshgrid(xs, ys, indexing="ij")
        return np.column_stack([X.ravel(), Y.ravel()])


def bilinear_weights(grid: Grid, points: np.ndarray) -> scipy.sparse.csr_matrix:
    """Bilinear interpolation from grid nodes to ``points``, shape (n_points, s*s). Local.

    Points outside the box are clamped to it.
    """
    s = grid.size
    lower, upper = np.asarray(grid.lower), np.asarray(grid.upper)
    t = (np.asarray(points)[:, :2] - lower) / (upper - lower) * (s - 1)
    t = np.clip(t, 0.0, s - 1)
    cell = np.minimum(np.floor(t).astype(np.int64), s - 2)
    frac = t - cell
    rows, cols, vals = [], [], []
    for di in (0, 1):
        for dj in (0, 1):
            wx = frac[:, 0] if di else 1.0 - frac[:, 0]
            wy = frac[:, 1] if dj else 1.0 - frac[:, 1]
            rows.append(np.arange(len(t)))
            cols.append((cell[:, 0] + di) * s + cell[:, 1] + dj)
            vals.append(wx * wy)
    W = scipy.sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(t), s * s)
    )
    W.eliminate_zeros()
    return W


def grid_to_dofs_local(V: dolfinx.fem.FunctionSpace, grid: Grid) -> scipy.sparse.csr_matrix:
    """``P`` restricted to this rank's dofs, owned then ghost: shape (n_local + n_ghost, s*s). Local."""
    return bilinear_weights(grid, V.tabulate_dof_coordinates())


def grid_to_dofs_matrix(V: dolfinx.fem.FunctionSpace, grid: Grid) -> PETSc.Mat:
    """``P`` as a PETSc MPIAIJ matrix, global shape (n_dofs, s*s), rows laid out as ``V``'s dofs.

    Collective on ``V.mesh.comm``. Columns (grid nodes) use PETSc's default split.
    """
    index_map = V.dofmap.index_map
    n_owned = index_map.size_local
    W = grid_to_dofs_local(V, grid)[:n_owned].tocsr()
    W.sort_indices()
    P = PETSc.Mat().createAIJ(
        size=((n_owned, index_map.size_global), (PETSc.DECIDE, grid.size**2)),
        csr=(W.indptr.astype(PETSc.IntType), W.indices.astype(PETSc.IntType), W.data),
        comm=V.mesh.comm,
    )
    P.assemble()
    return P


class GridEvaluator:
    """``R``: evaluate a P1 function at the grid nodes, gathered on every rank.

    Each node is evaluated by one rank only (the lowest rank whose cells contain it), so the
    gathered grid does not depend on the partition beyond round-off. Nodes outside the mesh
    get ``outside`` (NaN by default; 0 extends a function that vanishes on the boundary).
    """

    def __init__(self, V: dolfinx.fem.FunctionSpace, grid: Grid, *, outside: float = np.nan):
        """Collective on ``V.mesh.comm``. ``V`` must be a scalar P1 space on triangles."""
        mesh = V.mesh
        if V.element.basix_element.degree != 1 or mesh.topology.cell_name() != "triangle":
            raise ValueError("GridEvaluator supports P1 on triangles only")
        self.grid = grid
        self.comm = mesh.comm
        points = np.zeros((grid.size**2, 3))
        points[:, :2] = grid.nodes()
        tdim = mesh.topology.dim
        n_cells_local = mesh.topology.index_map(tdim).size_local
        tree = dolfinx.geometry.bb_tree(mesh, tdim, padding=1e-12)
        candidates = dolfinx.geometry.compute_collisions_points(tree, points)
        colliding = dolfinx.geometry.compute_colliding_cells(mesh, candidates, points)
        first_cell = np.full(len(points), -1, dtype=np.int64)
        for p in range(len(points)):
            cells = colliding.links(p)
            cells = cells[cells < n_cells_local]  # owned cells only: one rank per cell
            if len(cells):
                first_cell[p] = cells[0]
        found_on = np.where(first_cell >= 0, self.comm.rank, self.comm.size)
        owner = np.empty_like(found_on)
        self.comm.Allreduce(found_on, owner, op=MPI.MIN)
        self.outside = owner == self.comm.size
        self.outside_value = outside
        mine = np.flatnonzero(owner == self.comm.rank)
        dofs = V.dofmap.list[first_cell[mine]]  # (n_mine, 3) local dof indices of P1 vertices
        coords = V.tabulate_dof_coordinates()[:, :2]
        bary = _barycentric(coords[dofs], points[mine, :2])
        n_dofs_local = V.dofmap.index_map.size_local + V.dofmap.index_map.num_ghosts
        self._R = scipy.sparse.csr_matrix(
            (bary.ravel(), (np.repeat(mine, 3), dofs.ravel())), shape=(len(points), n_dofs_local)
        )

    def __call__(self, u: dolfinx.fem.Function) -> np.ndarray:
        """Grid values of ``u`` (ghosts up to date), shape (s, s), identical on all ranks. Collective."""
        local = self._R @ u.x.array
        values = np.empty_like(local)
        self.comm.Allreduce(local, values, op=MPI.SUM)
        values[self.outside] = self.outside_value
        return values.reshape(self.grid.size, self.grid.size)


def _barycentric(vertices: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Barycentric coordinates of ``points`` (n, 2) in triangles ``vertices`` (n, 3, 2) -> (n, 3)."""
    v0, v1, v2 = vertices[:, 0], vertices[:, 1], vertices[:, 2]
    T = np.stack([v1 - v0, v2 - v0], axis=-1)  # (n, 2, 2)
    lam12 = np.linalg.solve(T, (points - v0)[..., None])[..., 0]
    return np.column_stack([1.0 - lam12.sum(axis=1), lam12])
