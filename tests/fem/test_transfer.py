import numpy as np
import scipy.sparse
import pytest
from mpi4py import MPI

import dolfinx.fem
from pinn_lsr.fem.mesh import read_mesh, unit_square
from pinn_lsr.fem.transfer import (
    Grid,
    GridEvaluator,
    bilinear_weights,
    grid_to_dofs_local,
)


def bilinear(points):
    x, y = points[:, 0], points[:, 1]
    return 1.0 + 2.0 * x - 3.0 * y + 4.0 * x * y


def p1_space(n_cells):
    return dolfinx.fem.functionspace(unit_square(MPI.COMM_WORLD, n_cells).mesh, ("Lagrange", 1))


@pytest.mark.parametrize("n_cells, s", [(7, 10), (9, 10), (12, 5)])
def test_grid_to_dofs_is_exact_on_bilinear_data(n_cells, s):
    V = p1_space(n_cells)
    grid = Grid(s)
    P = grid_to_dofs_local(V, grid)
    dof_points = V.tabulate_dof_coordinates()
    np.testing.assert_allclose(P @ bilinear(grid.nodes()), bilinear(dof_points), atol=1e-13)
    assert P.min() >= 0
    np.testing.assert_allclose(np.asarray(P.sum(axis=1)).ravel(), 1.0, atol=1e-14)


def test_aligned_grid_makes_P_a_permutation():
    """Mesh vertices on the grid nodes: P Pᵀ = I on the dofs and Pᵀ P = I on the grid."""
    V = p1_space(5)
    P = grid_to_dofs_local(V, Grid(6))
    for product, n in ((P @ P.T, P.shape[0]), (P.T @ P, 36)):
        assert abs(product - scipy.sparse.identity(n)).max() < 1e-12, f"{n}x{n}: not the identity"


def test_grid_evaluation_is_exact_on_p1_functions():
    V = p1_space(7)
    u = dolfinx.fem.Function(V)
    u.interpolate(lambda x: 1.0 + 2.0 * x[0] - 3.0 * x[1])
    grid = Grid(10)
    values = GridEvaluator(V, grid)(u)
    np.testing.assert_allclose(
        values.ravel(), 1.0 + 2.0 * grid.nodes()[:, 0] - 3.0 * grid.nodes()[:, 1], atol=1e-13
    )


def test_grid_evaluation_outside_the_domain(lshape_msh):
    V = dolfinx.fem.functionspace(read_mesh(lshape_msh, MPI.COMM_WORLD).mesh, ("Lagrange", 1))
    u = dolfinx.fem.Function(V)
    u.x.array[:] = 1.0
    grid = Grid(9)
    nodes = grid.nodes()
    hole = (nodes[:, 0] > 0.5 + 1e-9) & (nodes[:, 1] > 0.5 + 1e-9)
    values = GridEvaluator(V, grid)(u).ravel()
    assert np.all(np.isnan(values[hole])) and np.allclose(values[~hole], 1.0)
    assert np.all(GridEvaluator(V, grid, outside=0.0)(u).ravel()[hole] == 0.0)


def test_grid_validation_and_clamping():
    with pytest.raises(ValueError, match="at least 2 nodes"):
        Grid(1)
    W = bilinear_weights(Grid(3), np.array([[-1.0, 0.5], [2.0, 2.0]]))
    np.testing.assert_allclose(W.toarray()[1, -1], 1.0)
