import numpy as np
import pytest
from mpi4py import MPI

import problems
from pinn_lsr.fem.mesh import unit_square
from pinn_lsr.fem.nonlinear_pde import NonlinearPDE
from pinn_lsr.fem.solver import SolverError


@pytest.fixture(scope="module")
def pde():
    problem = problems.create_problem("nonlinear_diffusion")
    return NonlinearPDE(
        unit_square(MPI.COMM_SELF, 9), problem.residual, problem.weight, grid_size=10
    ), problem


def test_newton_solves_the_nonlinear_problem(pde):
    pde, problem = pde
    f = problem.sample_inputs(1, 10, seed=0)[0]
    u = pde.solve(f).x.array[: pde.n_owned].copy()
    instance = pde.instance(f)
    assert np.abs(u).max() > 0.3  # the nonlinearity matters: the diffusivity 1 + u² departs from 1
    assert np.abs(instance.residual(u)).max() < 1e-11
    assert np.abs(instance.residual(0 * u)).max() > 1e-2
    instance.destroy()


def test_jacobian_and_weight_at_a_field(pde):
    pde, problem = pde
    f = problem.sample_inputs(1, 10, seed=1)[0]
    instance = pde.instance(f)
    rng = np.random.default_rng(0)
    u, d = 0.5 * rng.standard_normal(pde.n_owned), rng.standard_normal(pde.n_owned)
    instance.linearize(u)
    h = 1e-6
    finite_difference = (instance.residual(u + h * d) - instance.residual(u - h * d)) / (2 * h)
    np.testing.assert_allclose(
        instance.apply(d[:, None])[:, 0],
        finite_difference,
        atol=1e-7 * np.abs(finite_difference).max(),
    )
    S = instance.weight.convert("dense").getDenseArray()
    np.testing.assert_allclose(S, S.T, atol=1e-12)
    assert np.linalg.eigvalsh(S).min() > 0
    instance.destroy()


def test_newton_failure_is_reported(pde):
    _, problem = pde
    one_step = NonlinearPDE(
        unit_square(MPI.COMM_SELF, 9),
        problem.residual,
        problem.weight,
        grid_size=10,
        petsc_options={"snes_max_it": 1},
        prefix="one_step_",
    )
    with pytest.raises(SolverError, match="SNES with prefix 'one_step_' did not converge"):
        one_step.solve(problem.sample_inputs(1, 10, seed=0)[0])


def test_newton_options_do_not_leak_into_the_global_petsc_database(pde):
    from petsc4py import PETSc

    nonlinear, _ = pde
    assert not [key for key in PETSc.Options().getAll() if key.startswith(nonlinear.prefix)]
    assert nonlinear.solver_description["pc_type"] == "lu"  # the SNES kept them
