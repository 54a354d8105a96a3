import numpy as np
import pytest
from mpi4py import MPI

import problems
from pinn_lsr.fem.linear_pde import LinearPDE
from pinn_lsr.fem.mesh import unit_square
from pinn_lsr.fem.solver import SolverError


def test_p1_manufactured_solution_converges_at_order_two():
    poisson = problems.create_problem("poisson")
    sizes, errors = (8, 16, 32), []
    for n in sizes:
        pde = LinearPDE(unit_square(MPI.COMM_WORLD, n), poisson.manufactured_forms, grid_size=n + 1)
        pde.solve(np.zeros((n + 1, n + 1)))
        errors.append(pde.l2_error(poisson.exact_solution))
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((rates > 1.8) & (rates < 2.2)), f"L2 errors {errors}, rates {rates}"


@pytest.mark.parametrize("input_space", ["cell", "vertex"])
def test_constant_coefficient_scales_solution(input_space):
    darcy = problems.create_problem("darcy")
    pde = LinearPDE(
        unit_square(MPI.COMM_WORLD, 15), darcy.forms, grid_size=16, input_space=input_space
    )
    pde.solve(np.full((16, 16), 1.0))
    u1 = pde.solution_on_grid()
    pde.solve(np.full((16, 16), 4.0))
    u4 = pde.solution_on_grid()
    np.testing.assert_allclose(u4, u1 / 4, rtol=1e-10, atol=1e-14)
    assert u1.max() > 0
    assert (
        np.abs(u1[0, :]).max() < 1e-15 and np.abs(u1[:, -1]).max() < 1e-15
    )  # u = 0 on the boundary


def test_cell_input_is_piecewise_constant_on_grid_cells():
    darcy = problems.create_problem("darcy")
    pde = LinearPDE(unit_square(MPI.COMM_WORLD, 3), darcy.forms, grid_size=4)
    a = np.arange(16.0).reshape(4, 4)
    pde.set_input(a)
    # every cell's value is the value of one of the grid nodes at its corners
    assert set(np.unique(pde.input.x.array)).issubset(set(a.ravel()))


def test_bad_inputs_are_rejected():
    darcy = problems.create_problem("darcy")
    pde = LinearPDE(unit_square(MPI.COMM_WORLD, 3), darcy.forms, grid_size=4)
    with pytest.raises(ValueError, match=r"shape \(4, 4\)"):
        pde.set_input(np.ones((5, 5)))
    bad = np.ones((4, 4))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pde.set_input(bad)
    with pytest.raises(ValueError, match="input_space"):
        LinearPDE(unit_square(MPI.COMM_WORLD, 3), darcy.forms, grid_size=4, input_space="edge")


def test_non_convergence_raises_solver_error_naming_prefix():
    darcy = problems.create_problem("darcy")
    options = {"ksp_type": "cg", "pc_type": "none", "ksp_max_it": 2, "ksp_rtol": 1e-14}
    pde = LinearPDE(
        unit_square(MPI.COMM_WORLD, 15),
        darcy.forms,
        grid_size=16,
        petsc_options=options,
        prefix="stiff_",
    )
    with pytest.raises(SolverError, match="stiff_.*DIVERGED_MAX_IT after 2 iterations"):
        pde.solve(np.full((16, 16), 3.0))


def test_iterative_solver_from_options_matches_direct():
    darcy = problems.create_problem("darcy")
    a = darcy.sample_inputs(1, 16, seed=3)[0]
    direct = LinearPDE(unit_square(MPI.COMM_WORLD, 15), darcy.forms, grid_size=16)
    direct.solve(a)
    options = {"ksp": {"type": "cg", "rtol": 1e-12}, "pc": {"type": "jacobi"}}
    iterative = LinearPDE(
        unit_square(MPI.COMM_WORLD, 15),
        darcy.forms,
        grid_size=16,
        petsc_options=options,
        prefix="it_",
    )
    iterative.solve(a)
    assert iterative.ksp.getType() == "cg"
    np.testing.assert_allclose(iterative.solution_on_grid(), direct.solution_on_grid(), atol=1e-10)
