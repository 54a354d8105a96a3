"""Data-parallel training on 2 ranks follows the 1-rank trajectory."""

import numpy as np
import pytest
import torch
from mpi4py import MPI

from pinn_lsr.models import build_model
from pinn_lsr.models.parameters import real_parameters, set_precision
from pinn_lsr.train.loop import TrainSettings, train

S = 8
SMALL = {
    "fno": {"grid_size": S, "modes": 3, "width": 8, "layers": 2},
    "deeponet": {
        "grid_size": S,
        "latent": 16,
        "width": 32,
        "depth": 2,
        "trunk_width": 32,
        "trunk_depth": 2,
    },
}


@pytest.fixture(scope="module")
def data(darcy_samples):
    return darcy_samples(18, S, 1)


def parameters_after(name, settings, data, comm):
    torch.manual_seed(0)
    model = set_precision(build_model(name, **SMALL[name]), torch.float64)
    a, u = data
    result = train(model, (a[:15], u[:15]), (a[15:], u[15:]), settings, comm=comm, progress=False)
    flat = torch.cat([t.detach().reshape(-1) for t in real_parameters(model).values()])
    return flat, result


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_two_ranks_follow_the_serial_trajectory(comm, data, name, optimizer):
    # batch 7 of 15 samples: uneven shares (4 + 3) and a last batch of one sample
    settings = TrainSettings(
        epochs=3,
        batch_size=7,
        optimizer=optimizer,
        lr=1e-2 if optimizer == "adam" else 1.0,
        lbfgs_max_iter=5,
    )
    serial, serial_result = parameters_after(name, settings, data, MPI.COMM_SELF)
    parallel, parallel_result = parameters_after(name, settings, data, comm)
    assert torch.abs(serial - parallel).max() < 1e-10
    assert abs(serial_result.test_rel_l2 - parallel_result.test_rel_l2) < 1e-12
    assert serial_result.counters.forward_samples == parallel_result.counters.forward_samples
    gathered = comm.allgather(parallel.numpy())
    np.testing.assert_array_equal(gathered[0], gathered[1])  # every rank holds the same model
