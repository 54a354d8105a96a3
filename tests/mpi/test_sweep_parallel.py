"""Sweeps under 2 ranks: every rank iterates the same points, rank 0 writes the summary, a point
that fails on every rank is recorded and the sweep goes on."""

import json
import time

import numpy as np
import pytest
from mpi4py import MPI

import problems
from pinn_lsr.fem.linear_pde import LinearPDE
from pinn_lsr.fem.mesh import unit_square
from pinn_lsr.parallel.mpi import every_rank_arrives
from tests.run.test_sweep import FEM_ONLY, TINY_NETWORK, summary, sweep


def test_three_resolutions_by_two_ranks_under_two_processes(comm, shared_tmp_path):
    status = sweep(
        shared_tmp_path,
        *TINY_NETWORK,
        "method=none",
        "problem.resolution=8,12,16",
        "physics.rank=4,8",
    )
    assert comm.allgather(status) == [0, 0]
    rows = summary(shared_tmp_path)
    assert len(rows) == 6 and all(r["status"] == "done" for r in rows)
    for row in rows:
        run = shared_tmp_path / "sweep" / row["directory"]
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["n_ranks"] == 2 and metrics["grid_size"] == int(row["problem.resolution"])
        assert float(row["ilsr_rel_l2"]) == metrics["physics"]["ilsr"]["fem_rel_l2"]
        assert float(row["trained_test_rel_l2"]) == metrics["train"]["test_rel_l2"]


def test_manufactured_errors_are_those_of_a_serial_solve(comm, shared_tmp_path):
    assert comm.allgather(sweep(shared_tmp_path, *FEM_ONLY, "problem.resolution=9,17")) == [0, 0]
    poisson = problems.create_problem("poisson")
    for row in summary(shared_tmp_path):
        s = int(row["problem.resolution"])
        serial = LinearPDE(
            unit_square(MPI.COMM_SELF, s - 1), poisson.manufactured_forms, grid_size=s
        )
        serial.solve(np.zeros((s, s)))
        assert float(row["fem_l2_error"]) == pytest.approx(
            serial.l2_error(poisson.exact_solution), rel=1e-10
        )
        serial.destroy()


def test_a_point_failing_on_every_rank_is_recorded_and_the_sweep_goes_on(comm, shared_tmp_path):
    status = sweep(
        shared_tmp_path,
        *FEM_ONLY,
        "problem.resolution=9",
        "fem.petsc_options={ksp_type: cg, pc_type: none}",
        "+fem.petsc_options.ksp_max_it=1,1000",
    )
    assert comm.allgather(status) == [1, 1]
    rows = summary(shared_tmp_path)
    assert [r["status"] for r in rows] == ["failed", "done"]
    assert "DIVERGED_MAX_IT" in rows[0]["message"]


def test_every_rank_arrives_only_when_every_rank_calls():
    comm = MPI.COMM_WORLD.Dup()
    if comm.rank == 1:
        time.sleep(0.2)
    assert comm.allgather(every_rank_arrives(comm, timeout=30.0)) == [True, True]
    if comm.rank == 0:  # rank 1 arrives too late: rank 0 gives up
        assert not every_rank_arrives(comm, timeout=0.1)
    MPI.COMM_WORLD.Barrier()
    if comm.rank == 1:  # and completes the barrier rank 0 left pending
        assert every_rank_arrives(comm, timeout=30.0)
    MPI.COMM_WORLD.Barrier()
    comm.Free()
