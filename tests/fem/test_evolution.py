import numpy as np
import pytest
from mpi4py import MPI

from pinn_lsr.fem.evolution import PeriodicEvolution, trigonometric_interpolation
from pinn_lsr.fem.mesh import periodic_interval, unit_square
from pinn_lsr.fem.solver import SolverError
from problems.burgers import Burgers

NU = 0.1


def cole_hopf(x, t, a=1.0, c=2.0):
    """Burgers' exact periodic solution ``u = -2ν φ_x / φ``, ``φ = c + a e^{-4π²νt} cos 2πx``."""
    e = a * np.exp(-4 * np.pi**2 * NU * t)
    return 4 * np.pi * NU * e * np.sin(2 * np.pi * x) / (c + e * np.cos(2 * np.pi * x))


def burgers(s, refinement=1, *, n_steps, final_time=0.25, comm=MPI.COMM_WORLD, **kwargs):
    return PeriodicEvolution(
        periodic_interval(comm, s * refinement),
        Burgers(viscosity=NU).spatial_residual,
        grid_size=s,
        final_time=final_time,
        n_steps=n_steps,
        **kwargs,
    )


def test_crank_nicolson_converges_to_cole_hopf_at_order_two():
    # h and Δt halved together (mesh refined under a fixed 32-point grid): both errors are O(h²)
    s, x, errors = 32, np.arange(32) / 32, []
    for refinement in (1, 2, 4):
        pde = burgers(s, refinement, n_steps=10 * refinement)
        pde.solve(cole_hopf(x, 0.0))
        errors.append(np.abs(pde.solution_on_grid() - cole_hopf(x, 0.25)).max())
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((rates > 1.8) & (rates < 2.2)), f"max errors {errors}, rates {rates}"
    assert errors[-1] < 1e-3 * np.abs(cole_hopf(x, 0.25)).max()


def test_backward_euler_is_first_order_in_time():
    x, errors = np.arange(64) / 64, []
    for n_steps in (10, 20):
        pde = burgers(64, 4, n_steps=n_steps, theta=1.0)  # fine mesh: the time error dominates
        pde.solve(cole_hopf(x, 0.0))
        errors.append(np.abs(pde.solution_on_grid() - cole_hopf(x, 0.25)).max())
    assert 0.8 < np.log2(errors[0] / errors[1]) < 1.2, errors


def test_random_initial_condition_keeps_its_mass_and_the_solution_is_periodic():
    problem = Burgers()
    u0 = problem.sample_inputs(1, 64, seed=2)[0]
    pde = burgers(64, 1, n_steps=50, final_time=1.0)
    u = pde.solve(u0) and pde.solution_on_grid()
    # ∫ u_h = h Σ u_j on the uniform periodic P1 mesh; the conservative form keeps it
    assert abs(u.sum() - u0.sum()) < 1e-10 * np.abs(u0).sum()
    assert np.abs(u).max() < np.abs(u0).max()  # viscous decay, no overshoot
    pde.solve(np.roll(u0, 5))  # a shifted start gives the shifted solution: no boundary anywhere
    np.testing.assert_allclose(pde.solution_on_grid(), np.roll(u, 5), atol=1e-10)


def test_trigonometric_interpolation_is_exact_for_band_limited_fields():
    s = 16
    grid = np.arange(s) / s
    field = lambda x: np.sin(2 * np.pi * 3 * x) + 0.5 * np.cos(2 * np.pi * 7 * x)  # noqa: E731
    points = np.random.default_rng(0).uniform(0, 1, 40)
    np.testing.assert_allclose(
        trigonometric_interpolation(s, points) @ field(grid), field(points), atol=1e-12
    )
    np.testing.assert_allclose(trigonometric_interpolation(s, grid), np.eye(s), atol=1e-12)


def test_refined_mesh_starts_from_the_interpolated_field():
    pde = burgers(16, 3, n_steps=1)
    x = np.arange(16) / 16
    pde.set_input(np.sin(2 * np.pi * x))
    position = np.arctan2(*pde.V.tabulate_dof_coordinates()[:, 1::-1].T) / (2 * np.pi) % 1
    np.testing.assert_allclose(pde.input.x.array, np.sin(2 * np.pi * position), atol=1e-12)


def test_bad_input_is_refused_with_clear_messages():
    pde = burgers(8, 1, n_steps=1)
    with pytest.raises(ValueError, match=r"must have shape \(8,\), got \(8, 8\)"):
        pde.set_input(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="NaN"):
        pde.set_input(np.full(8, np.nan))
    residual = Burgers().spatial_residual
    with pytest.raises(ValueError, match="needs a periodic_interval mesh"):
        PeriodicEvolution(
            unit_square(MPI.COMM_WORLD, 4), residual, grid_size=5, final_time=1, n_steps=1
        )
    domain = periodic_interval(MPI.COMM_WORLD, 12)
    with pytest.raises(ValueError, match="must be >= 3 and divide the mesh's 12 cells"):
        PeriodicEvolution(domain, residual, grid_size=5, final_time=1, n_steps=1)
    with pytest.raises(ValueError, match="integer n_steps"):
        PeriodicEvolution(domain, residual, grid_size=6, final_time=1, n_steps=0)
    with pytest.raises(ValueError, match="theta"):
        PeriodicEvolution(domain, residual, grid_size=6, final_time=1, n_steps=1, theta=0.2)
    with pytest.raises(ValueError, match="at least 3 cells"):
        periodic_interval(MPI.COMM_WORLD, 2)


def test_newton_failure_names_the_prefix():
    pde = burgers(8, 1, n_steps=1, petsc_options={"snes_max_it": 0}, prefix="burgers_")
    with pytest.raises(SolverError, match="prefix 'burgers_'"):
        pde.solve(np.sin(2 * np.pi * np.arange(8) / 8))


def test_the_rannacher_start_damps_stiff_modes_that_crank_nicolson_alone_keeps():
    # a grid-scale mode decays like e^{-ν (2π·15)² T} ≈ e^{-89}; Crank–Nicolson's factor per step
    # is about -0.7 for it here (3.4e-5 of 1e-3 left after 10 steps without the start)
    x = np.arange(32) / 32
    pde = burgers(32, 1, n_steps=10, final_time=0.1)
    assert [theta for _, theta in pde.schedule()] == [1.0] * 4 + [0.5] * 8
    assert sum(dt for dt, _ in pde.schedule()) == pytest.approx(0.1)
    pde.solve(1e-3 * np.cos(2 * np.pi * 15 * x))
    assert np.abs(pde.solution_on_grid()).max() < 1e-7
