"""GNvpro with samples split over 2 ranks takes the 1-rank iterates.

Few CG iterations per step: long CG runs on ill-conditioned Gauss–Newton systems amplify the
round-off of a different summation order (measured: 1e-4 relative in the loss after 19 iterations;
1e-8 with 6), so the tolerances allow 1e-6 relative.
"""

import numpy as np
import pytest
import torch
from mpi4py import MPI

from pinn_lsr.models.deeponet import DeepONet
from pinn_lsr.models.mlp import MLP
from pinn_lsr.vpro import train_gnvpro


def _regression():
    torch.manual_seed(0)
    model = MLP(2, 2, width=6, depth=2, activation="tanh").double()
    x = torch.rand(61, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    y = torch.cat([torch.sin(3 * x[:, :1]) * x[:, 1:], torch.cos(2 * x[:, 1:])], dim=1)
    model.input_normalizer.fit(x)
    model.output_normalizer.fit(y)
    return model, x, y


def _operator():
    """A DeepONet (branch head and bias eliminated, trunk features shared by the ranks)."""
    torch.manual_seed(0)
    model = DeepONet(4, latent=5, width=6, depth=1, trunk_width=6, trunk_depth=1).double()
    a = 1 + torch.rand(9, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    u = 2.0 + torch.sin(a.reshape(9, -1).cumsum(1) / 4) / a.reshape(9, -1)
    model.input_normalizer.fit(a)
    model.output_normalizer.fit(u)
    return model, a, u


def _classification():
    torch.manual_seed(0)
    model = MLP(3, 4, width=5, depth=2, activation="tanh").double()
    x = torch.randn(61, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    return model, x, (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()


def _compare(serial, parallel, model_serial, model_parallel):
    assert len(serial) == len(parallel)
    for a, b in zip(serial, parallel):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=1e-14)
        assert b["work_units"] == pytest.approx(a["work_units"], rel=1e-12)
    for p, q in zip(model_serial.parameters(), model_parallel.parameters()):
        torch.testing.assert_close(q.detach(), p.detach(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "case, settings",
    [
        ("regression", {}),
        ("regression", {"globalization": "trust_region"}),
        ("regression", {"curvature_batch_size": 30}),
        ("regression", {"batch_size": 40, "monitor_every": 2}),
        ("classification", {"loss": "cross_entropy", "alpha_W": 1e-3}),
        ("operator", {}),
        ("operator", {"globalization": "trust_region", "curvature_batch_size": 5}),
    ],
)
def test_two_ranks_take_the_one_rank_iterates(comm, case, settings):
    make = {"regression": _regression, "classification": _classification, "operator": _operator}[
        case
    ]
    model_serial, x, y = make()
    model_parallel, _, _ = make()
    settings = {"krylov_max_iterations": 6, **settings}
    _, serial = train_gnvpro(model_serial, x, y, max_iterations=5, comm=MPI.COMM_SELF, **settings)
    share = torch.from_numpy(np.array_split(np.arange(len(x)), comm.size)[comm.rank])
    _, parallel = train_gnvpro(
        model_parallel, x[share], y[share], max_iterations=5, comm=comm, **settings
    )
    _compare(serial, parallel, model_serial, model_parallel)
    gathered = comm.allgather(
        torch.cat([p.detach().reshape(-1) for p in model_parallel.parameters()]).numpy()
    )
    np.testing.assert_array_equal(gathered[0], gathered[1])


def test_bad_data_on_one_rank_raises_on_every_rank(comm):
    model, x, y = _regression()
    share = torch.from_numpy(np.array_split(np.arange(len(x)), comm.size)[comm.rank])
    y = y[share].clone()
    if comm.rank == 1:
        y[0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        train_gnvpro(model, x[share], y, comm=comm)
