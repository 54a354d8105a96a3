"""Burgers under 2 ranks: the distributed periodic mesh solves as one rank does, split data
generation equals serial generation, and the command line runs and refuses on every rank."""

import json

import numpy as np
from mpi4py import MPI

import problems
from pinn_lsr.data.dataset import load_or_generate
from pinn_lsr.fem.evolution import PeriodicEvolution
from pinn_lsr.fem.mesh import periodic_interval
from pinn_lsr.run.cli import main
from tests.run.test_cli_burgers import MODELS, TINY

BURGERS = problems.create_problem("burgers", time_steps=20, final_time=0.2)


def solver(comm, refinement=1):
    return PeriodicEvolution(
        periodic_interval(comm, 32 * refinement),
        BURGERS.spatial_residual,
        grid_size=32,
        final_time=BURGERS.final_time,
        n_steps=BURGERS.time_steps,
    )


def test_distributed_solve_equals_the_serial_one(comm):
    u0 = BURGERS.sample_inputs(1, 32, seed=1)[0]
    for refinement in (1, 2):
        parallel, serial = solver(comm, refinement), solver(MPI.COMM_SELF, refinement)
        assert 0 < parallel.n_owned < parallel.n_dofs == 32 * refinement  # really split
        parallel.solve(u0)
        serial.solve(u0)
        expected = serial.solution_on_grid()
        np.testing.assert_allclose(parallel.solution_on_grid(), expected, rtol=0, atol=1e-12)
        assert np.abs(expected).max() > 1e-2  # a solution worth comparing


def test_split_generation_equals_serial(comm, shared_tmp_path):
    pde = solver(MPI.COMM_SELF)

    def solve(u0):
        pde.solve(u0)
        return pde.solution_on_grid()

    def sample(first, count):
        return BURGERS.sample_inputs(count, 32, seed=3, first=first)

    settings = {"problem": "burgers", "grid_size": 32, "dim": 1, "n_samples": 5, "seed": 3}
    data, report = load_or_generate(
        shared_tmp_path, settings, sample_inputs=sample, solve=solve, comm=comm, progress=False
    )
    assert report.status == "generated" and data.solutions.shape == (5, 32)
    expected = np.stack([solve(u0) for u0 in sample(0, 5)])
    assert np.abs(data.solutions - expected).max() < 1e-12


def test_cli_runs_and_refuses_on_every_rank(comm, shared_tmp_path):
    args = [f"data.cache_dir={shared_tmp_path / 'cache'}", *TINY, *MODELS["fno"]]
    run = shared_tmp_path / "run"
    assert comm.allgather(main([f"hydra.run.dir={run}", *args, "method.rank=4"])) == [0, 0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_ranks"] == 2 and metrics["n_dofs"] == 16
    assert metrics["fem"]["distributed_vs_dataset_max_abs_diff"] < 1e-12
    refused = shared_tmp_path / "refused"
    code = main([f"hydra.run.dir={refused}", *args, "physics.instances=1"])
    assert comm.allgather(code) == [2, 2] and not refused.exists()
