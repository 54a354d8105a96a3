import numpy as np
import pytest
import torch
from mpi4py import MPI

from pinn_lsr.fem.solver import SolverError
from pinn_lsr.physics.refine import (
    ReducedPhysicsProblem,
    randomized_physics_subspace,
    refine_physics,
)
from tests.physics.physics_cases import FieldModel, dense, tiny_fno

COMM = MPI.COMM_SELF


@pytest.mark.parametrize("norm", ["energy", "l2", "dual"])
@pytest.mark.parametrize("subspace", ["krylov", "randomized"])
def test_full_rank_recovers_the_fem_solution_when_the_network_can_express_it(fem, norm, subspace):
    one = fem.subset([0])
    if norm == "dual":  # S = A: the dual norm through solves must equal the energy norm
        for system in one.systems:
            system.weight = system.A
    model = FieldModel(36)
    result = refine_physics(one.residual(model, norm=norm), 36, subspace=subspace)
    # solver tolerance 1e-12, amplified by the conditioning of the reduced problem (A ~ 1e2 here)
    assert one.errors(result.fields)[0] < 1e-8
    assert result.report.residual_l2_after < 1e-8 * result.report.residual_l2_before
    for system in one.systems:
        system.weight = None


def test_energy_norm_is_the_galerkin_projection_onto_the_subspace(fem):
    model = tiny_fno(6)
    residual = fem.residual(model, norm="energy")
    sub = randomized_physics_subspace(residual, 12, seed=3)
    c = ReducedPhysicsProblem(residual, sub).coefficients()
    H = sum(Phi.T @ dense(s.A) @ Phi for Phi, s in zip(sub.Phi, fem.systems))
    g = sum(Phi.T @ r for Phi, r in zip(sub.Phi, residual.r0))
    np.testing.assert_allclose(c, np.linalg.solve(H, -g), rtol=1e-8)


def test_a_block_krylov_space_holds_the_single_vector_one_so_its_energy_is_no_higher(fem):
    """Block Lanczos from the gradient's strips: s block steps of b columns span K_s(H, g) and
    more, so the Galerkin (energy-norm best) refinement of rank b·s is at least as good as the
    single-vector one of rank s, and the space is not a single-vector one of rank b·s."""
    model = tiny_fno(6)

    def energy(rank, block_size):
        """Σ_k ½ uᵀ A u − bᵀ u of the refined fields."""
        result = refine_physics(fem.residual(model), rank, block_size=block_size)
        assert result.report.rank == rank
        return sum(
            0.5 * float(u @ (s.residual(u) - s.b.getArray(readonly=True)))
            for s, u in zip(fem.systems, result.fields)
        )

    single, block = energy(3, 1), energy(12, 4)
    assert block <= single + 1e-12 * abs(single)
    assert block != pytest.approx(energy(12, 1), rel=1e-6)
    with pytest.raises(ValueError, match="block_size"):
        refine_physics(fem.residual(model), 4, block_size=0)


def test_operator_images_built_by_petsc_equal_the_dense_products(fem):
    X = np.random.default_rng(0).standard_normal((36, 5))
    A = dense(fem.systems[0].A)
    np.testing.assert_allclose(fem.systems[0].apply(X), A @ X, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        fem.systems[0].apply(X, transpose=True), A.T @ X, rtol=1e-12, atol=1e-12
    )


def test_l2_norm_solved_by_ksplsqr_agrees_with_dense_least_squares(fem):
    model = tiny_fno(6)
    residual = fem.residual(model, norm="l2")
    sub = randomized_physics_subspace(residual, 10, seed=1)
    problem = ReducedPhysicsProblem(residual, sub)
    c = problem.coefficients()
    expected = np.linalg.lstsq(np.vstack(sub.K), -np.concatenate(residual.r0), rcond=None)[0]
    np.testing.assert_allclose(c, expected, rtol=1e-7)
    assert problem.iterations[10] > 0


def test_energy_norm_beats_l2_norm_on_darcy(fem):
    model = tiny_fno(6)
    errors = {
        norm: fem.errors(refine_physics(fem.residual(model, norm=norm), 9).fields)
        for norm in ("energy", "l2")
    }
    assert np.mean(errors["energy"]) < np.mean(errors["l2"])


def test_a_reduced_solve_that_does_not_converge_is_reported(fem):
    residual = fem.residual(tiny_fno(6), norm="energy")
    options = {
        "ksp_type": "cg",
        "pc_type": "none",
        "ksp_max_it": 1,
        "ksp_rtol": 1e-14,
        "ksp_atol": 1e-30,
    }
    with pytest.raises(SolverError, match="physics_.*DIVERGED_MAX_IT"):
        refine_physics(residual, 8, petsc_options=options)


def test_bad_rank_norm_and_subspace_are_rejected(fem):
    model = tiny_fno(6)
    with pytest.raises(ValueError, match="rank must be between 1"):
        refine_physics(fem.residual(model), 10_000)
    with pytest.raises(ValueError, match="unknown norm"):
        fem.residual(model, norm="h1")
    with pytest.raises(ValueError, match="unknown subspace"):
        refine_physics(fem.residual(model), 4, subspace="qr")


def test_dual_norm_without_a_weighting_operator_is_a_clear_error(fem):
    with pytest.raises(ValueError, match="SPD weighting"):
        refine_physics(fem.residual(tiny_fno(6), norm="dual"), 4)


def test_full_rank_physics_lsr_of_a_nonlinear_residual_is_a_newton_step():
    import problems
    from pinn_lsr.fem.mesh import unit_square
    from pinn_lsr.fem.nonlinear_pde import NonlinearPDE
    from pinn_lsr.physics.instances import FEMInstances

    problem = problems.create_problem("nonlinear_diffusion")
    pde = NonlinearPDE(unit_square(COMM, 5), problem.residual, problem.weight, grid_size=6)
    fem = FEMInstances.from_pde(pde, problem.sample_inputs(1, 6, seed=0))
    model = FieldModel(36)
    with torch.no_grad():
        model.field += torch.from_numpy(fem.references[0]) * 0.8
    residual = fem.residual(model, norm="dual")
    u0, F0 = residual.u0[0], residual.r0[0]
    result = refine_physics(residual, 36)
    newton = u0 - np.linalg.solve(dense(fem.systems[0].A), F0)
    np.testing.assert_allclose(result.fields[0], newton, rtol=1e-7, atol=1e-9)
    assert (
        fem.errors(result.fields)[0] < 0.5 * fem.errors([u0])[0]
    )  # one Newton step from 100 % error
    fem.destroy()
