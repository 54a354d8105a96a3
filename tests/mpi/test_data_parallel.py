"""Data generation split over 2 ranks gives the samples a serial generation gives."""

import numpy as np
from mpi4py import MPI

import problems
from pinn_lsr.data.dataset import load_or_generate
from pinn_lsr.fem.linear_pde import LinearPDE
from pinn_lsr.fem.mesh import unit_square


def test_split_generation_equals_serial(comm, shared_tmp_path):
    darcy = problems.create_problem("darcy")
    pde = LinearPDE(unit_square(MPI.COMM_SELF, 11), darcy.forms, grid_size=12)

    def solve(a):
        pde.solve(a)
        return pde.solution_on_grid()

    def sample(first, count):
        return darcy.sample_inputs(count, 12, seed=4, first=first)

    settings = {"problem": "darcy", "grid_size": 12, "n_samples": 5, "seed": 4}
    data, report = load_or_generate(
        shared_tmp_path, settings, sample_inputs=sample, solve=solve, comm=comm, progress=False
    )
    assert report.status == "generated"
    inputs = sample(0, 5)
    expected = np.stack([solve(a) for a in inputs])
    np.testing.assert_array_equal(data.inputs, inputs)
    assert np.abs(data.solutions - expected).max() < 1e-12
    again, report = load_or_generate(
        shared_tmp_path, settings, sample_inputs=sample, solve=solve, comm=comm, progress=False
    )
    assert report.status == "hit"
    np.testing.assert_array_equal(again.solutions, data.solutions)
