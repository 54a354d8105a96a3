import copy
import dataclasses

import numpy as np
import pytest
import torch
from mpi4py import MPI

from pinn_lsr.physics.instances import FEMInstances
from pinn_lsr.physics.finetune import fem_loss
from pinn_lsr.physics.iterative import (
    AlignSettings,
    ILSRSettings,
    align,
    align_pseudo_time,
    commit,
    iterative_lsr,
)
from pinn_lsr.physics.refine import refine_physics
from tests.physics.coupling_cases import (
    from_builtin,
    tiny_deeponet,
    user_forms_instances,
)
from tests.physics.physics_cases import darcy_instances, tiny_fno


@pytest.fixture(scope="module")
def fem():
    instances = darcy_instances(MPI.COMM_SELF, size=8, n=1, seed=2)
    yield instances
    instances.destroy()


def test_ilsr_decreases_the_fem_residual_and_error_on_a_tiny_case(fem):
    model = tiny_fno(8)
    settings = ILSRSettings(iterations=2, rank=12, align=AlignSettings(iterations=50))
    fields, history = iterative_lsr(model, fem, settings)
    first, last = history[0], history[-1]
    assert first["refined_residual"] < first["network_residual"]
    assert first["refined_rel_l2"] < first["network_rel_l2"]
    assert last["network_residual"] < first["network_residual"]
    assert last["network_rel_l2"] < first["network_rel_l2"]
    assert len(history) == 3 and history[-1]["seconds"] >= history[0]["seconds"]
    np.testing.assert_allclose(fem.errors(fields), [history[1]["refined_rel_l2"]])


def test_align_fits_the_network_to_given_fields():
    model = tiny_fno(8)
    inputs = torch.rand(2, 8, 8, dtype=torch.float64) + 1
    with torch.no_grad():
        targets = model(inputs) * 1.1
        before = float(((model(inputs) - targets).pow(2).sum(1) / targets.pow(2).sum(1)).mean())
    after = align(model, inputs, targets, AlignSettings(iterations=100), comm=MPI.COMM_SELF)
    assert after < 0.1 * before


def assert_ilsr_improves(history):
    first, last = history[0], history[-1]
    assert first["refined_residual"] < first["network_residual"]
    assert first["refined_rel_l2"] < first["network_rel_l2"]
    assert last["network_residual"] < first["network_residual"]
    assert last["network_rel_l2"] < first["network_rel_l2"]


def test_ilsr_on_a_users_petsc_systems_aligns_on_the_dofs(fem):
    user = from_builtin(fem, to_dofs=fem.to_dofs)
    settings = ILSRSettings(iterations=2, rank=12, align=AlignSettings(iterations=50))
    fields, history = iterative_lsr(tiny_fno(8), user, settings)
    assert_ilsr_improves(history)
    np.testing.assert_allclose(user.errors(fields), [history[1]["refined_rel_l2"]])
    user.destroy()


def test_ilsr_without_references_reports_residuals_only(fem):
    user = FEMInstances.from_petsc(
        fem.systems[0].A, fem.systems[0].b, fem.inputs, to_dofs=fem.to_dofs
    )
    settings = ILSRSettings(iterations=1, rank=8, align=AlignSettings(iterations=20))
    _, history = iterative_lsr(tiny_fno(8), user, settings)
    assert "network_rel_l2" not in history[0]
    assert history[-1]["network_residual"] < history[0]["network_residual"]
    user.destroy()


@pytest.mark.parametrize("evaluate_at", ["grid", "dofs"])
def test_ilsr_on_a_users_forms_lowers_the_error(evaluate_at):
    user, instances = user_forms_instances(
        MPI.COMM_SELF, np.array([0.6, -0.4]), evaluate_at=evaluate_at
    )
    settings = ILSRSettings(iterations=2, rank=12, align=AlignSettings(iterations=50))
    _, history = iterative_lsr(tiny_deeponet(8), instances, settings)
    assert_ilsr_improves(history)
    instances.destroy()


def energy_of(fem, model):
    return fem_loss(fem, fem.network_fields(model), "energy")


def test_commit_takes_the_gauss_newton_step_when_it_lowers_the_fem_loss(fem):
    model = tiny_fno(8)
    result = refine_physics(fem.residual(model), 12)
    before = energy_of(fem, model)
    assert commit(model, fem, result) == 1.0
    after = energy_of(fem, model)
    assert after < before
    # the committed network is the nonlinear model at θ + δ, not the linearized field
    assert not np.allclose(fem.network_fields(model)[0], result.fields[0])


def test_commit_backtracks_so_the_fem_loss_never_increases(fem):
    model = tiny_fno(8)
    result = refine_physics(fem.residual(model), 12)
    before = energy_of(fem, model)
    too_long = dataclasses.replace(result, delta=result.delta * 1e3)
    alpha = commit(model, fem, too_long)
    assert 0.0 < alpha < 1.0
    assert energy_of(fem, model) < before


def test_commit_leaves_the_network_when_no_step_lowers_the_loss(fem):
    model = tiny_fno(8)
    residual = fem.residual(model)
    result = refine_physics(residual, 12)
    ascent = dataclasses.replace(result, delta=residual.gradient().to(result.delta.dtype))
    before = fem.network_fields(model)[0]
    assert commit(model, fem, ascent) == 0.0
    np.testing.assert_array_equal(fem.network_fields(model)[0], before)


def test_ilsr_commit_lowers_the_fem_energy_every_iteration(fem):
    model = tiny_fno(8)
    energies = []
    settings = ILSRSettings(iterations=3, rank=12, update="commit")
    _, history = iterative_lsr(
        model, fem, settings, progress=lambda e: energies.append(energy_of(fem, model))
    )
    assert all(b <= a for a, b in zip(energies, energies[1:]))
    assert energies[-1] < energy_of(fem, tiny_fno(8))
    assert all(0.0 <= h["step"] <= 1.0 for h in history[:-1])
    assert history[0]["refined_rel_l2"] < history[0]["network_rel_l2"]


def test_pseudo_time_alignment_fits_the_target_or_lowers_the_fem_energy(fem):
    """Δτ → 0 fits the target in the energy norm; Δτ large minimises the FEM energy; the loss is
    the dimensionless ``[E(u) + ||u − U||²_A / (2 Δτ)] / ||U||²_A``."""
    model = tiny_fno(8)
    result = refine_physics(fem.residual(model), 12)
    U, A = result.fields[0], fem.systems[0]

    def energy_norm2(d):
        return float(d @ A.apply(d[:, None])[:, 0])

    small, large = copy.deepcopy(model), copy.deepcopy(model)
    settings = {"iterations": 50, "target": "pseudo_time"}
    align_pseudo_time(small, fem, result.fields, AlignSettings(**settings, dtau=1e-4))
    loss = align_pseudo_time(large, fem, result.fields, AlignSettings(**settings, dtau=1e4))
    start = energy_norm2(fem.network_fields(model)[0] - U)
    assert energy_norm2(fem.network_fields(small)[0] - U) < 0.1 * start
    assert energy_of(fem, large) < energy_of(fem, model)
    u = fem.network_fields(large)[0]
    expected = (energy_of(fem, large) + 0.5 * energy_norm2(u - U) / 1e4) / energy_norm2(U)
    assert loss == pytest.approx(expected, rel=1e-10)


def test_ilsr_with_pseudo_time_alignment_improves(fem):
    settings = ILSRSettings(
        iterations=2,
        rank=12,
        align=AlignSettings(iterations=50, target="pseudo_time", dtau=1.0),
    )
    _, history = iterative_lsr(tiny_fno(8), fem, settings)
    assert_ilsr_improves(history)


@pytest.mark.parametrize("precondition", ["none", "diagonal"])
def test_recycling_an_unchanged_basis_reproduces_the_fresh_solution(fem, precondition):
    """(diagonal: the old basis is deflated in the rescaled variables, where it holds the
    rescaled gradient; deflating it unscaled would leave new directions to add.)"""
    model = tiny_fno(8)
    residual = fem.residual(model)
    fresh = refine_physics(residual, 12, precondition=precondition)
    again = refine_physics(
        residual, 12, recycle=fresh.problem.subspace.V, precondition=precondition
    )
    assert again.report.rank == 12  # the gradient lies in the old basis: nothing new to add
    # the fresh basis is built in output space, the recycled one re-orthonormalised in
    # parameter space: the same span to the products' accuracy (the FNO's Fourier core is single
    # precision, tests/lsr/test_jacobian.py; the output-space basis amplifies that ~10x)
    correction = np.abs(fresh.fields[0] - residual.u0[0]).max()
    np.testing.assert_allclose(again.fields[0], fresh.fields[0], rtol=0, atol=1e-5 * correction)


def test_recycling_after_a_change_keeps_the_old_directions_and_adds_new_ones(fem):
    model = tiny_fno(8)
    first = refine_physics(fem.residual(model), 8)
    commit(model, fem, first)
    residual = fem.residual(model)
    recycled = refine_physics(residual, 8, recycle=first.problem.subspace.V)
    fresh = refine_physics(residual, 8)
    sub = recycled.problem.subspace
    assert sub.rank == 16
    # the basis is orthonormal in the energy inner product: the reduced matrix is the identity
    np.testing.assert_allclose(recycled.problem.H, np.eye(16), atol=1e-8)
    # and spans the old directions and the new ones, orthogonal to them before normalising
    old = first.problem.subspace.V
    assert float(np.linalg.norm(old - sub.V @ np.linalg.lstsq(sub.V, old, rcond=None)[0])) < 1e-8
    # the recycled space holds the fresh one's start (the gradient): a larger Galerkin space
    assert recycled.report.residual_l2_after < recycled.report.residual_l2_before
    assert fem.errors(recycled.fields)[0] < fem.errors([fem.network_fields(model)[0]])[0]
    assert fresh.report.rank == 8


def test_rank_schedule_sets_each_outer_iterations_rank(fem):
    settings = ILSRSettings(
        iterations=3, rank=4, ranks=(4, 8, 12), align=AlignSettings(iterations=10)
    )
    _, history = iterative_lsr(tiny_fno(8), fem, settings)
    assert [h["rank"] for h in history[:-1]] == [4, 8, 12]


def test_recycling_grows_the_subspace_by_each_iterations_new_rank(fem):
    settings = ILSRSettings(iterations=3, rank=4, ranks=(4, 8, 4), recycle=True, update="commit")
    _, history = iterative_lsr(tiny_fno(8), fem, settings)
    assert [h["rank"] for h in history[:-1]] == [4, 12, 16]


def test_the_preconditioner_reaches_each_refinement(fem):
    settings = ILSRSettings(iterations=1, rank=4, update="commit", precondition="diagonal")
    fields, _ = iterative_lsr(tiny_fno(8), fem, settings)
    direct = refine_physics(fem.residual(tiny_fno(8)), 4, precondition="diagonal")
    plain = refine_physics(fem.residual(tiny_fno(8)), 4)
    np.testing.assert_allclose(np.hstack(fields), np.hstack(direct.fields), rtol=1e-10)
    assert not np.allclose(np.hstack(fields), np.hstack(plain.fields), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"update": "jump"}, "update must be one of"),
        ({"subspace": "randomized", "recycle": True}, "recycle needs subspace='krylov'"),
        ({"ranks": (8, 16)}, "one positive rank per outer iteration"),
        ({"precondition": "jacobi"}, "precondition must be one of"),
        ({"subspace": "randomized", "precondition": "diagonal"}, "needs subspace='krylov'"),
        ({"ranks": (8, 0, 8)}, "one positive rank per outer iteration"),
        (
            {"norm": "dual", "align": AlignSettings(target="pseudo_time")},
            "pseudo_time alignment is in the energy norm",
        ),
    ],
)
def test_bad_ilsr_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ILSRSettings(iterations=3, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"target": "jacobian"}, "align target must be one of"), ({"dtau": 0.0}, "dtau must be")],
)
def test_bad_align_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AlignSettings(**kwargs)
