"""Transfer between an s × s grid and P1 degrees of freedom.

The grid spans a box ``[lower, upper]`` with nodes ``x_i = lower_x + i h_x``, ``i = 0..s-1``;
grid arrays are indexed ``grid[i, j]`` = value at ``(x_i, y_j)`` (``indexing="ij"``) and
flattened in C order (``k = i * s + j``).

* ``P`` (grid -> dofs) interpolates bilinearly at the dof coordinates: exact for bilinear
  functions, rows non-negative and summing to one.
* ``R`` (dofs -> grid) evaluates the P1 function at the grid nodes: exact for P1 functions.
When the mesh vertices are the grid nodes, ``P`` selects and ``R = Pᵀ`` on owned rows.

Vector P1 spaces (block size ``bs``: DOLFINx stores component ``c`` of node ``i`` at dof
``bs·i + c``) transfer per component: a grid field is (bs, s, s), flattened in C order (component
``c`` in columns ``c·s² .. (c+1)·s² − 1``), and ``P`` interleaves the components as the dofs do.
"""

from dataclasses import dataclass

import numpy as np
import scipy.sparse
from mpi4py import MPI

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
    """``P`` restricted to this rank's dofs, owned then ghost: shape
    (bs·(n_local + n_ghost), bs·s*s) (``bs`` the block size, 1 for scalar spaces; module
    docstring). Local."""
    return blocked(bilinear_weights(grid, V.tabulate_dof_coordinates()), V.dofmap.index_map_bs)


def blocked(W: scipy.sparse.spmatrix, bs: int) -> scipy.sparse.csr_matrix:
    """The map ``W`` (n_nodes, n_grid) applied to each of ``bs`` components: shape
    (bs·n_nodes, bs·n_grid), row ``bs·i + c`` = row ``i`` of ``W`` in the columns of component ``c``
    (``c·n_grid ..``). ``W`` itself (as CSR) when ``bs = 1``. Local."""
    if bs == 1:
        return W.tocsr()
    W = W.tocoo()
    n_nodes, n_grid = W.shape
    rows = np.concatenate([W.row * bs + c for c in range(bs)])
    cols = np.concatenate([W.col + c * n_grid for c in range(bs)])
    return scipy.sparse.csr_matrix(
        (np.tile(W.data, bs), (rows, cols)), shape=(bs * n_nodes, bs * n_grid)
    )


class GridEvaluator:
    """``R``: evaluate a P1 function at the grid nodes, gathered on every rank (vector P1: each
    component).

    Each node is evaluated by one rank only (the lowest rank whose cells contain it), so the
    gathered grid does not depend on the partition beyond round-off. Nodes outside the mesh
    get ``outside`` (NaN by default; 0 extends a function that vanishes on the boundary).
    """

    def __init__(self, V: dolfinx.fem.FunctionSpace, grid: Grid, *, outside: float = np.nan):
        """Collective on ``V.mesh.comm``. ``V`` must be a (scalar or vector) P1 space on
        triangles."""
        mesh = V.mesh
        if V.element.basix_element.degree != 1 or mesh.topology.cell_name() != "triangle":
            raise ValueError("GridEvaluator supports P1 on triangles only")
        self.grid = grid
        self.comm = mesh.comm
        self.bs = V.dofmap.index_map_bs
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
        dofs = V.dofmap.list[
            first_cell[mine]
        ]  # (n_mine, 3) local (block) dof indices of P1 vertices
        coords = V.tabulate_dof_coordinates()[:, :2]
        bary = _barycentric(coords[dofs], points[mine, :2])
        n_dofs_local = V.dofmap.index_map.size_local + V.dofmap.index_map.num_ghosts
        self._R = scipy.sparse.csr_matrix(
            (bary.ravel(), (np.repeat(mine, 3), dofs.ravel())), shape=(len(points), n_dofs_local)
        )

    def __call__(self, u: dolfinx.fem.Function) -> np.ndarray:
        """Grid values of ``u`` (ghosts up to date), shape (s, s) (block size bs > 1: (bs, s, s)),
        identical on all ranks. Collective."""
        local = self._R @ u.x.array.reshape(-1, self.bs)  # (s*s, bs)
        values = np.empty_like(local)
        self.comm.Allreduce(local, values, op=MPI.SUM)
        values[self.outside] = self.outside_value
        s = self.grid.size
        return values[:, 0].reshape(s, s) if self.bs == 1 else values.T.reshape(self.bs, s, s)


def _barycentric(vertices: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Barycentric coordinates of ``points`` (n, 2) in triangles ``vertices`` (n, 3, 2) ->
    (n, 3)."""
    v0, v1, v2 = vertices[:, 0], vertices[:, 1], vertices[:, 2]
    T = np.stack([v1 - v0, v2 - v0], axis=-1)  # (n, 2, 2)
    lam12 = np.linalg.solve(T, (points - v0)[..., None])[..., 0]
    return np.column_stack([1.0 - lam12.sum(axis=1), lam12])
