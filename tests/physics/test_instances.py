import dolfinx_solver  # noqa: F401
import numpy as np
import pytest
import scipy.sparse
import ufl
from mpi4py import MPI

import dolfinx.fem
import dolfinx.fem.petsc
import problems
from pinn_lsr.fem.linear_pde import LinearPDE
from pinn_lsr.fem.norms import matrix_norm
from pinn_lsr.fem.mesh import unit_square
from pinn_lsr.fem.dofs import bounding_grid, owned_dof_points, to_function
from pinn_lsr.physics.instances import FEMInstances
from pinn_lsr.physics.refine import refine_physics
from tests.physics.coupling_cases import from_builtin, kappa_on_grid, tiny_deeponet, user_problem
from tests.physics.physics_cases import dense, tiny_fno

COMM = MPI.COMM_SELF


@pytest.fixture(scope="module")
def darcy():
    problem = problems.create_problem("darcy")
    pde = LinearPDE(unit_square(COMM, 5), problem.forms, grid_size=6)
    fem = FEMInstances.from_pde(pde, problem.sample_inputs(2, 6, seed=0))
    yield problem, pde, fem
    fem.destroy()
    pde.destroy()


def assert_same_fields(actual, expected, rtol=1e-10):
    for x, y in zip(actual, expected):
        np.testing.assert_allclose(x, y, rtol=0, atol=rtol * np.abs(y).max())


@pytest.mark.parametrize(
    "norm,subspace", [("energy", "krylov"), ("energy", "randomized"), ("l2", "krylov")]
)
def test_a_user_petsc_pair_refines_as_the_builtin_instances(darcy, norm, subspace):
    _, _, fem = darcy
    model = tiny_fno(6)
    builtin = refine_physics(fem.residual(model, norm=norm), 9, subspace=subspace)
    coupled = from_builtin(fem, to_dofs=fem.to_dofs)
    result = refine_physics(coupled.residual(model, norm=norm), 9, subspace=subspace)
    assert result.report.rank == builtin.report.rank == 9
    assert_same_fields(result.fields, builtin.fields)
    assert coupled.errors(result.fields) == pytest.approx(fem.errors(builtin.fields), rel=1e-10)
    assert_same_fields(coupled.network_fields(model), fem.network_fields(model), rtol=1e-14)
    coupled.destroy()  # borrowed systems: the built-in instances still work
    assert fem.residual_norm(builtin.fields) > 0


def test_the_dual_norm_uses_the_given_weighting(darcy):
    _, _, fem = darcy
    one = fem.subset([0])
    coupled = from_builtin(
        one, to_dofs=one.to_dofs, weight=one.systems[0].A
    )  # S = A: dual norm = energy norm
    model = tiny_fno(6)
    dual = refine_physics(coupled.residual(model, norm="dual"), 8)
    energy = refine_physics(one.residual(model, norm="energy"), 8)
    assert_same_fields(dual.fields, energy.fields, rtol=1e-7)
    coupled.destroy()


def test_a_deeponet_at_the_dof_coordinates_equals_the_grid_path_when_dofs_are_grid_nodes(darcy):
    _, pde, fem = darcy
    model = tiny_deeponet(6)
    grid = refine_physics(fem.residual(model), 8)
    dofs = refine_physics(fem.residual(model, evaluate_at="dofs"), 8)
    # the DeepONet's default points are the grid nodes in float32 (linspace before set_precision):
    # they differ from the dof coordinates by ~1e-8, which the Krylov basis amplifies
    assert_same_fields(dofs.fields, grid.fields, rtol=1e-6)
    coupled = from_builtin(fem, points=owned_dof_points(pde.V, pde.grid))
    user = refine_physics(coupled.residual(model), 8)
    assert_same_fields(user.fields, dofs.fields)
    assert_same_fields(coupled.network_fields(model), fem.network_fields(model), rtol=1e-8)
    coupled.destroy()


def test_forms_assemble_the_same_system_as_linear_pde(darcy):
    problem, pde, fem = darcy
    u, v = ufl.TrialFunction(pde.V), ufl.TestFunction(pde.V)
    a, L = problem.forms(u, v, pde.input, ufl.SpatialCoordinate(pde.domain.mesh))
    coupled = FEMInstances.from_forms(
        a, L, pde.bcs, fem.inputs, update=lambda k: pde.set_input(fem.inputs[k]), grid=pde.grid
    )
    for mine, theirs in zip(coupled.systems, fem.systems):
        np.testing.assert_allclose(dense(mine.A), dense(theirs.A), rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(mine.b.getArray(), theirs.b.getArray(), rtol=1e-14, atol=1e-14)
    assert (coupled.to_dofs != fem.to_dofs).nnz == 0
    model = tiny_fno(6)
    assert_same_fields(
        refine_physics(coupled.residual(model), 9).fields,
        refine_physics(fem.residual(model), 9).fields,
    )
    coupled.destroy()


def test_forms_with_nonzero_dirichlet_data_give_the_users_solution():
    user = user_problem(COMM)
    mu = np.array([0.5, -0.3])
    reference = user.solve(mu)
    grid = bounding_grid(user.V, 7)
    coupled = FEMInstances.from_forms(
        user.a, user.L, user.bcs, [kappa_on_grid(grid, mu)], grid=grid, references=[reference]
    )
    system = coupled.systems[0]
    x = np.linalg.solve(dense(system.A), system.b.getArray())
    np.testing.assert_allclose(x, reference.x.array, rtol=1e-10, atol=1e-12)
    assert coupled.errors([x])[0] < 1e-10
    assert coupled.residual_norm([reference.x.array]) < 1e-10
    assert np.allclose(dense(system.A), dense(system.A).T)  # symmetric: the energy norm applies
    coupled.destroy()


def test_refined_fields_exported_as_a_function(darcy):
    _, pde, fem = darcy
    coupled = from_builtin(fem, to_dofs=fem.to_dofs)
    result = refine_physics(coupled.residual(tiny_fno(6)), 6)
    function = coupled.to_function(result.fields[1], name="refined")
    assert isinstance(function, dolfinx.fem.Function) and function.name == "refined"
    assert function.function_space is pde.V
    np.testing.assert_array_equal(function.x.array[: pde.n_owned], result.fields[1])
    l2 = np.sqrt(dolfinx.fem.assemble_scalar(dolfinx.fem.form(function * function * ufl.dx)))
    assert l2 == pytest.approx(matrix_norm(coupled.mass_matrix(), result.fields[1]), rel=1e-12)
    coupled.destroy()


def test_bad_inputs_are_clear_errors(darcy):
    _, pde, fem = darcy
    A, b = fem.systems[0].A, fem.systems[0].b
    one = fem.inputs[:1]
    with pytest.raises(ValueError, match="to_dofs has 35 rows but A has 36 local rows"):
        FEMInstances.from_petsc(A, b, one, to_dofs=fem.to_dofs[:35])
    with pytest.raises(ValueError, match="exactly one of to_dofs"):
        FEMInstances.from_petsc(A, b, one)
    with pytest.raises(ValueError, match=r"points must have shape \(owned dofs, 2\) = \(36, 2\)"):
        FEMInstances.from_petsc(A, b, one, points=np.zeros((36, 3)))
    with pytest.raises(ValueError, match="2 network inputs but 1 FEM systems"):
        FEMInstances.from_petsc(A, b, fem.inputs, to_dofs=fem.to_dofs)
    with pytest.raises(ValueError, match="to_dofs contains NaN"):
        FEMInstances.from_petsc(A, b, one, to_dofs=fem.to_dofs.multiply(np.nan).tocsr())
    coupled = FEMInstances.from_petsc(
        A, b, one, to_dofs=scipy.sparse.random(36, 49, density=0.1, format="csr")
    )
    with pytest.raises(ValueError, match="the model has 36 outputs per input but to_dofs takes 49"):
        coupled.residual(tiny_fno(6))
    with pytest.raises(ValueError, match="no function space"):
        coupled.to_function(np.zeros(36))
    with pytest.raises(ValueError, match="no reference"):
        coupled.errors([np.zeros(36)])
    points = FEMInstances.from_petsc(A, b, one, points=owned_dof_points(pde.V, pde.grid))
    with pytest.raises(ValueError, match="needs a DeepONet.*got a FNOOperator"):
        points.residual(tiny_fno(6))
    with pytest.raises(ValueError, match="needs a DeepONet"):
        fem.residual(tiny_fno(6), evaluate_at="dofs")
    with pytest.raises(ValueError, match="evaluate_at must be"):
        fem.residual(tiny_fno(6), evaluate_at="cells")
    with pytest.raises(ValueError, match="values must hold the 36 owned dof values"):
        to_function(np.zeros(35), pde.V)
    bad = A.duplicate(copy=True)
    bad.setValue(3, 3, np.nan)
    bad.assemble()
    with pytest.raises(ValueError, match="A contains NaN"):
        FEMInstances.from_petsc(bad, b, one, to_dofs=fem.to_dofs)
    bad_b = b.copy()
    bad_b.setValue(0, np.inf)
    bad_b.assemble()
    with pytest.raises(ValueError, match="b contains NaN or infinite"):
        FEMInstances.from_petsc(A, bad_b, one, to_dofs=fem.to_dofs)
    other = dolfinx.fem.petsc.create_vector(
        dolfinx.fem.functionspace(unit_square(COMM, 4).mesh, ("Lagrange", 1))
    )
    with pytest.raises(ValueError, match="b has 25 local entries but A has 36 local rows"):
        FEMInstances.from_petsc(A, other, one, to_dofs=fem.to_dofs)
    for obj in (bad, bad_b, other):
        obj.destroy()


def test_forms_path_errors(darcy):
    problem, pde, fem = darcy
    u, v = ufl.TrialFunction(pde.V), ufl.TestFunction(pde.V)
    a, L = problem.forms(u, v, pde.input, ufl.SpatialCoordinate(pde.domain.mesh))
    with pytest.raises(ValueError, match="no update"):
        FEMInstances.from_forms(a, L, pde.bcs, fem.inputs, grid=pde.grid)
    with pytest.raises(ValueError, match="model's grid"):
        FEMInstances.from_forms(a, L, pde.bcs, fem.inputs[:1])
    with pytest.raises(ValueError, match="evaluate_at must be one of"):
        FEMInstances.from_forms(a, L, pde.bcs, fem.inputs[:1], grid=6, evaluate_at="cells")
    with pytest.raises(ValueError, match="compiled form: pass its function space"):
        FEMInstances.from_forms(dolfinx.fem.form(a), L, pde.bcs, fem.inputs[:1], grid=6)
