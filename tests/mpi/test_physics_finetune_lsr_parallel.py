"""Fine-tuning finished by physics LSR over 2 ranks: every rank holds the same network, and the
refined fields are the serial refinement of that network at the rank the budget allowed."""

import numpy as np

from pinn_lsr.physics.finetune_lsr import FinetuneLSRSettings, finetune_then_refine
from pinn_lsr.physics.refine import refine_physics
from tests.physics.physics_cases import tiny_fno


def test_two_ranks_refine_the_network_they_all_hold(comm, instances):
    fem = instances["parallel"].subset([0])
    model = tiny_fno(8)
    settings = FinetuneLSRSettings(seconds=1.0, share=0.5, rank=10, lr=1e-3)
    result, summary = finetune_then_refine(model, fem, settings)
    weights = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
    np.testing.assert_array_equal(comm.bcast(weights, root=0), weights)
    assert comm.allgather(summary["rank"]) == [summary["rank"]] * comm.size
    serial = instances["serial"].subset([0])
    expected = refine_physics(serial.residual(model), summary["rank"])
    grid, reference = fem.on_grid(result.fields), serial.on_grid(expected.fields)
    np.testing.assert_allclose(grid, reference, rtol=1e-8, atol=1e-8 * np.abs(reference).max())
