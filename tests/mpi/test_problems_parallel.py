"""Problems over 2 ranks: the non-symmetric convection–diffusion–reaction problem (FEM solution,
assembled SPD weighting and dual-norm physics LSR equal the 1-rank answer) and vector-valued linear
elasticity on the plate with holes (FEM solution and energy-norm physics LSR equal the 1-rank
answer); the whole CLI pipeline runs for both."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mpi4py import MPI

import problems
from pinn_lsr.run.cli import main
from pinn_lsr.fem.linear_pde import LinearPDE
from pinn_lsr.fem.mesh import read_mesh, unit_square
from pinn_lsr.fem.norms import matrix_norm
from pinn_lsr.physics.instances import FEMInstances
from pinn_lsr.physics.refine import refine_physics
from pinn_lsr.models import build_model
from pinn_lsr.models.parameters import set_precision
from tests.physics.physics_cases import tiny_fno


def test_cdr_fem_and_dual_norm_physics_lsr_two_ranks_equal_one(comm):
    cdr = problems.create_problem("cdr")
    inputs = cdr.sample_inputs(2, 8, seed=4)
    model = tiny_fno(8)
    solutions, grids, weighted = {}, {}, {}
    for name, c in (("parallel", comm), ("serial", MPI.COMM_SELF)):
        fem = FEMInstances.from_pde(LinearPDE(unit_square(c, 7), cdr.forms, grid_size=8), inputs)
        solutions[name] = fem.on_grid(fem.references)
        weighted[name] = [
            matrix_norm(s.weight, u) for s, u in zip(fem.systems, fem.references)
        ]  # ||u||_S
        grids[name] = fem.on_grid(refine_physics(fem.residual(model, norm="dual"), 8).fields)
        fem.destroy()
    assert np.abs(solutions["serial"]).max() > 1e-2
    np.testing.assert_allclose(solutions["parallel"], solutions["serial"], atol=1e-12)
    np.testing.assert_allclose(weighted["parallel"], weighted["serial"], rtol=1e-12)
    np.testing.assert_allclose(
        grids["parallel"], grids["serial"], rtol=1e-8, atol=1e-8 * np.abs(grids["serial"]).max()
    )


def test_cdr_pipeline_under_two_ranks(comm, shared_tmp_path):
    args = [
        f"hydra.run.dir={shared_tmp_path / 'run'}",
        f"data.cache_dir={shared_tmp_path / 'cache'}",
        "problem=cdr",
        "problem.resolution=12",
        "data.n_train=10",
        "data.n_test=2",
        "output.n_show=1",
        "output.progress=false",
        "train.epochs=5",
        "train.batch_size=2",
        "model.width=4",
        "model.modes=3",
        "method=lsr",
        "method.rank=6",
        "physics.instances=1",
        "physics.rank=8",
        "physics.ilsr.iterations=1",
        "physics.ilsr.align_iterations=20",
    ]
    assert comm.allgather(main(args)) == [0, 0]
    metrics = json.loads((shared_tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_ranks"] == 2 and metrics["fem"]["distributed_vs_dataset_max_abs_diff"] < 1e-10
    assert metrics["lsr"]["objective"]["linearized"] <= metrics["lsr"]["objective"]["initial"]
    physics = metrics["physics"]
    assert physics["physics_lsr"]["norm"] == "dual"
    assert physics["physics_lsr"]["fem_rel_l2"] < physics["stages"]["trained network"]


PLATE = Path(__file__).parents[2] / "meshes" / "plate_holes.msh"


def test_elasticity_fem_and_energy_norm_physics_lsr_two_ranks_equal_one(comm):
    el = problems.create_problem("elasticity")
    inputs = el.sample_inputs(2, 10, seed=4)
    torch.manual_seed(0)
    model = set_precision(
        build_model("fno", grid_size=10, modes=4, width=8, layers=2, out_channels=2), torch.float64
    )
    norms, solutions, grids, errors = {}, {}, {}, {}
    for name, c in (("parallel", comm), ("serial", MPI.COMM_SELF)):
        pde = LinearPDE(
            read_mesh(PLATE, c), el.forms, grid_size=10, dirichlet_tags=[2], components=2
        )
        fem = FEMInstances.from_pde(pde, inputs)
        norms[name] = [
            matrix_norm(pde.mass_matrix(), u) for u in fem.references
        ]  # ||u||_L2 of the vector field
        solutions[name] = fem.on_grid(fem.references)
        result = refine_physics(fem.residual(model, norm="energy"), 8)
        grids[name] = fem.on_grid(result.fields)
        errors[name] = (
            np.mean(fem.errors(fem.network_fields(model))),
            np.mean(fem.errors(result.fields)),
        )
        fem.destroy()
        pde.destroy()
    assert solutions["serial"].shape == (2, 2, 10, 10) and np.abs(solutions["serial"]).max() > 0.5
    np.testing.assert_allclose(norms["parallel"], norms["serial"], rtol=1e-12)
    np.testing.assert_allclose(solutions["parallel"], solutions["serial"], atol=1e-10)
    np.testing.assert_allclose(
        grids["parallel"], grids["serial"], rtol=1e-8, atol=1e-8 * np.abs(grids["serial"]).max()
    )
    assert (
        errors["serial"][1] < errors["serial"][0]
    )  # the refinement lowers the error against the FEM solution


@pytest.mark.parametrize(
    "model",
    [
        ["model=fno", "model.width=8", "model.modes=4"],
        [
            "model=deeponet",
            "model.branch=mlp",
            "model.latent=8",
            "model.width=16",
            "model.trunk_width=16",
        ],
    ],
    ids=["fno", "deeponet"],
)
def test_elasticity_pipeline_under_two_ranks(comm, shared_tmp_path, monkeypatch, model):
    monkeypatch.chdir(
        Path(__file__).parents[2]
    )  # the default mesh.file is relative to the repository root
    run = shared_tmp_path / "run"
    args = [
        f"hydra.run.dir={run}",
        f"data.cache_dir={shared_tmp_path / 'cache'}",
        "problem=elasticity",
        "problem.resolution=12",
        "data.n_train=20",
        "data.n_test=2",
        "output.n_show=1",
        "output.progress=false",
        "train.epochs=10",
        "train.batch_size=4",
        *model,
        "method=lsr",
        "method.rank=6",
        "physics.instances=1",
        "physics.rank=16",
        "physics.ilsr.iterations=1",
        "physics.ilsr.align_iterations=20",
    ]
    assert comm.allgather(main(args)) == [0, 0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["problem"] == "elasticity" and metrics["mesh"].endswith("plate_holes.msh")
    assert metrics["n_ranks"] == 2 and metrics["n_dofs"] % 2 == 0 and metrics["n_dofs"] > 2000
    assert metrics["fem"]["distributed_vs_dataset_max_abs_diff"] < 1e-10
    assert metrics["lsr"]["objective"]["linearized"] <= metrics["lsr"]["objective"]["initial"]
    physics = metrics["physics"]
    assert physics["physics_lsr"]["norm"] == "energy"
    assert physics["physics_lsr"]["fem_rel_l2"] < physics["stages"]["trained network"]
    for name in (
        "samples.png",
        "physics.png",
        "fields/samples.xdmf",
        "physics_fields/physics.xdmf",
    ):
        assert (run / name).stat().st_size > 0
