import dolfinx_solver  # noqa: F401
import numpy as np
import pytest
import ufl
from mpi4py import MPI

import dolfinx.fem
import problems
from pinn_lsr.fem.assembly import assemble_mass_matrix, assemble_system
from pinn_lsr.fem.linear_pde import LinearPDE
from pinn_lsr.fem.mesh import unit_square

COMM = MPI.COMM_SELF


def dense(mat) -> np.ndarray:
    return mat.convert("dense").getDenseArray().copy()


@pytest.fixture(scope="module")
def darcy():
    problem = problems.create_problem("darcy")
    pde = LinearPDE(unit_square(COMM, 5), problem.forms, grid_size=6)
    inputs = problem.sample_inputs(2, 6, seed=0)
    yield problem, pde, inputs
    pde.destroy()


def forms(problem, pde):
    u, v = ufl.TrialFunction(pde.V), ufl.TestFunction(pde.V)
    return problem.forms(u, v, pde.input, ufl.SpatialCoordinate(pde.domain.mesh))


def test_assemble_system_is_a_linear_instance_the_caller_owns(darcy):
    problem, pde, inputs = darcy
    reference = pde.solve(inputs[0]).x.array[: pde.n_owned].copy()
    A = dense(pde.A)
    a, L = forms(problem, pde)
    system = assemble_system(a, L, pde.bcs, weight=a)
    np.testing.assert_allclose(dense(system.weight), A, rtol=1e-14, atol=1e-14)
    assert np.abs(system.residual(reference)).max() < 1e-10
    system.destroy()


def test_linear_pde_assembles_through_assemble_system_bit_for_bit(darcy):
    problem, pde, inputs = darcy
    instance = pde.instance(inputs[1])  # new objects, the PDE's own A, b untouched
    A, b = pde.assemble()  # in place into the PDE's A, b (same input field)
    np.testing.assert_array_equal(dense(instance.A), dense(A))
    np.testing.assert_array_equal(instance.b.getArray(), b.getArray())
    a, L = forms(problem, pde)
    fresh = assemble_system(a, L, pde.bcs)
    np.testing.assert_array_equal(dense(fresh.A), dense(A))
    np.testing.assert_array_equal(fresh.b.getArray(), b.getArray())
    # Dirichlet rows are identity rows and b holds the (zero) boundary data there
    dofs = pde.bcs[0].dof_indices()[0]
    np.testing.assert_array_equal(dense(A)[dofs][:, dofs], np.eye(len(dofs)))
    np.testing.assert_array_equal(b.getArray()[dofs], 0.0)
    for system in (instance, fresh):
        system.destroy()


def test_mass_matrix_integrates_products_of_fields(darcy):
    _, pde, _ = darcy
    M = assemble_mass_matrix(pde.V)
    f, g = dolfinx.fem.Function(pde.V), dolfinx.fem.Function(pde.V)
    f.interpolate(lambda x: 1.0 + x[0])
    g.interpolate(lambda x: x[1] ** 2)
    exact = dolfinx.fem.assemble_scalar(dolfinx.fem.form(f * g * ufl.dx))
    assert f.x.array @ dense(M) @ g.x.array == pytest.approx(exact, rel=1e-12)
    np.testing.assert_array_equal(dense(M), dense(pde.mass_matrix()))  # the one GridPDE uses
    M.destroy()
