"""The non-symmetric convection–diffusion–reaction problem over 2 ranks: FEM solution, assembled
SPD weighting and dual-norm physics LSR equal the 1-rank answer, and the whole CLI pipeline runs."""

import json

import numpy as np
from mpi4py import MPI

import problems
from pinn_lsr.cli import main
from pinn_lsr.fem.linear_pde import LinearPDE
from pinn_lsr.fem.mesh import unit_square
from pinn_lsr.fem.norms import matrix_norm
from pinn_lsr.lsr.instances import FEMInstances
from pinn_lsr.lsr.physics import refine_physics
from tests.lsr.physics_cases import tiny_fno


def test_cdr_fem_and_dual_norm_physics_lsr_two_ranks_equal_one(comm):
    cdr = problems.create_problem("cdr")
    inputs = cdr.sample_inputs(2, 8, seed=4)
    model = tiny_fno(8)
    solutions, grids, weighted = {}, {}, {}
    for name, c in (("parallel", comm), ("serial", MPI.COMM_SELF)):
        fem = FEMInstances.create(LinearPDE(unit_square(c, 7), cdr.forms, grid_size=8), inputs)
        solutions[name] = fem.on_grid(fem.references)
        weighted[name] = [matrix_norm(s.weight, u) for s, u in zip(fem.systems, fem.references)]  # ||u||_S
        grids[name] = fem.on_grid(refine_physics(fem.residual(model, norm="dual"), 8).fields)
        fem.destroy()
    assert np.abs(solutions["serial"]).max() > 1e-2
    np.testing.assert_allclose(solutions["parallel"], solutions["serial"], atol=1e-12)
    np.testing.assert_allclose(weighted["parallel"], weighted["serial"], rtol=1e-12)
    np.testing.assert_allclose(grids["parallel"], grids["serial"], rtol=1e-8, atol=1e-8 * np.abs(grids["serial"]).max())


def test_cdr_pipeline_under_two_ranks(comm, shared_tmp_path):
    args = [f"hydra.run.dir={shared_tmp_path / 'run'}", f"data.cache_dir={shared_tmp_path / 'cache'}", "problem=cdr",
            "problem.resolution=12", "data.n_train=10", "data.n_test=2", "output.n_show=1", "output.progress=false",
            "train.epochs=5", "train.batch_size=2", "model.width=4", "model.modes=3", "method=lsr", "method.rank=6",
            "physics.instances=1", "physics.rank=8", "physics.ilsr.iterations=1", "physics.ilsr.align_iterations=20"]
    assert comm.allgather(main(args)) == [0, 0]
    metrics = json.loads((shared_tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_ranks"] == 2 and metrics["fem"]["distributed_vs_dataset_max_abs_diff"] < 1e-10
    assert metrics["lsr"]["objective"]["linearized"] <= metrics["lsr"]["objective"]["initial"]
    physics = metrics["physics"]
    assert physics["physics_lsr"]["norm"] == "dual"
    assert physics["physics_lsr"]["fem_rel_l2"] < physics["stages"]["trained network"]
