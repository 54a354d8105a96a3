import dolfinx_solver  # noqa: F401
import numpy as np
import pytest
from mpi4py import MPI
from petsc4py import PETSc

import dolfinx.fem
import dolfinx.mesh
from pinn_lsr.fem.dofs import (
    bounding_grid,
    grid_to_owned_dofs,
    model_coordinates,
    n_owned_dofs,
    owned_dof_points,
    owned_values,
    to_function,
)
from pinn_lsr.fem.grid_pde import GridPDE
from pinn_lsr.fem.mesh import Domain, bounding_box
from pinn_lsr.fem.transfer import Grid

COMM = MPI.COMM_SELF


@pytest.fixture(scope="module")
def rectangle():
    mesh = dolfinx.mesh.create_rectangle(
        COMM, [[-1.0, 0.0], [3.0, 2.0]], [8, 4], dolfinx.mesh.CellType.triangle
    )
    return dolfinx.fem.functionspace(mesh, ("Lagrange", 1))


def test_owned_dofs_and_the_bounding_grid(rectangle):
    V = rectangle
    assert n_owned_dofs(V) == 9 * 5
    lower, upper = bounding_box(V.mesh)
    np.testing.assert_array_equal(lower, [-1.0, 0.0])
    np.testing.assert_array_equal(upper, [3.0, 2.0])
    assert bounding_grid(V, 5) == Grid(5, (-1.0, 0.0), (3.0, 2.0))
    domain = Domain(V.mesh, None, "rectangle")
    assert GridPDE(domain, grid_size=5).grid == bounding_grid(V, 5)


def test_grid_to_owned_dofs_reproduces_bilinear_fields(rectangle):
    V = rectangle
    grid = bounding_grid(V, 7)
    x, y = grid.nodes().T
    P = grid_to_owned_dofs(V, grid)
    assert P.shape == (n_owned_dofs(V), 49)
    coordinates = V.tabulate_dof_coordinates()[: n_owned_dofs(V)]
    np.testing.assert_allclose(
        P @ (2 * x + 3 * x * y - y),
        2 * coordinates[:, 0] + 3 * coordinates[:, 0] * coordinates[:, 1] - coordinates[:, 1],
        atol=1e-12,
    )


def test_dof_points_live_in_the_unit_square_of_the_grid(rectangle):
    V = rectangle
    grid = bounding_grid(V, 5)
    points = owned_dof_points(V, grid)
    assert points.shape == (n_owned_dofs(V), 2)
    eps = 100 * np.finfo(np.float64).eps  # dof coordinates are tabulated, not copied
    assert points.min() == pytest.approx(0.0, abs=eps) and points.max() == pytest.approx(1.0)
    np.testing.assert_allclose(model_coordinates(np.array([[1.0, 1.0, 0.0]]), grid), [[0.5, 0.5]])
    vector = dolfinx.fem.functionspace(V.mesh, ("Lagrange", 1, (2,)))
    with pytest.raises(ValueError, match="needs a scalar function space \\(block size 2"):
        owned_dof_points(vector, grid)


def test_owned_values_and_to_function(rectangle):
    V = rectangle
    n = n_owned_dofs(V)
    values = np.arange(n, dtype=np.float64)
    u = to_function(values, V, name="u")
    assert u.name == "u" and u.function_space is V
    np.testing.assert_array_equal(u.x.array[:n], values)
    vec = PETSc.Vec().createWithArray(values.copy(), comm=COMM)
    for given in (values, u, vec):
        np.testing.assert_array_equal(owned_values(given, n), values)
    vec.destroy()
    with pytest.raises(ValueError, match=f"values must hold the {n} owned dof values"):
        to_function(np.zeros(n - 1), V)
