import numpy as np
import pytest
import torch
from mpi4py import MPI

from pinn_lsr.physics.iterative import AlignSettings, ILSRSettings, align, iterative_lsr
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
