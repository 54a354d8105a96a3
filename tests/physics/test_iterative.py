import numpy as np
import pytest
import torch
from mpi4py import MPI

from pinn_lsr.physics.instances import FEMInstances
from pinn_lsr.physics.iterative import AlignSettings, ILSRSettings, align, iterative_lsr
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
