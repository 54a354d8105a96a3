"""run/physics_stage.py: physics LSR, I-LSR, the gradient baseline and the baseline finished by
physics LSR on test instances."""

import numpy as np
import torch
from mpi4py import MPI

from pinn_lsr.fem.linear_pde import LinearPDE
from pinn_lsr.fem.mesh import unit_square
from pinn_lsr.run.cli import compose_config
from pinn_lsr.run.config import load_settings
from pinn_lsr.run.physics_stage import run_physics
from tests.physics.physics_cases import tiny_fno

S = 12


def run_stage(tmp_path, overrides: list[str], instances: int):
    """The physics stage of a tiny FNO on ``instances`` Darcy-like test inputs of the problem the
    overrides choose; returns its metrics and the (unchanged) model."""
    settings = load_settings(
        compose_config([f"problem.resolution={S}", *overrides, "~model", "method=none"])
    )
    problem = settings.problem
    pde = LinearPDE(unit_square(MPI.COMM_WORLD, S - 1), problem.forms, grid_size=S)
    model = tiny_fno(S)
    predictors = {"trained network": lambda x: model(x).detach().double().numpy()}
    inputs = problem.sample_inputs(instances, S, seed=0)
    metrics = run_physics(settings, model, pde, inputs, predictors, tmp_path, MPI.COMM_WORLD)
    pde.destroy()
    return metrics, model


def test_every_stage_is_scored_on_the_same_instances(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="pinn_lsr.run.physics_stage"):
        metrics, model = run_stage(
            tmp_path,
            [
                "physics.rank=16",
                "physics.ilsr.iterations=1",
                "physics.ilsr.align_iterations=5",
                "physics.baseline.optimizer=adam",
                "physics.baseline.lr=1e-3",
            ],
            instances=2,
        )
    # 144 dofs: the fine-tuning's LSR may take up to 256 directions, more than the FEM space
    assert "physics.finetune_lsr.rank=256 exceeds a quarter of the 144 dofs" in caplog.text
    stages = metrics["stages"]
    assert list(stages) == [
        "trained network",
        "physics LSR",
        "I-LSR",
        "gradient (adam, same time)",
        "adam, then physics LSR (same time)",
    ]
    assert stages["physics LSR"] < stages["trained network"]  # the FEM residual pulls it in
    finished = metrics["finetune_lsr"]
    assert finished["share"] == 0.33 and all(1 <= r <= 256 for r in finished["ranks_reached"])
    assert stages["adam, then physics LSR (same time)"] < stages["trained network"]
    assert metrics["physics_lsr"]["rank"] == 16 and metrics["physics_lsr"]["norm"] == "energy"
    assert metrics["instances"] == 2 and np.isfinite(metrics["fem_solve_seconds_median"])
    for name in ("physics.png", "physics_errors.png", "ilsr.png"):
        assert (tmp_path / name).is_file()
    assert (tmp_path / "physics_fields" / "physics.xdmf").is_file()
    assert torch.isfinite(next(model.parameters())).all()  # the caller's model is not changed


def test_a_rank_schedule_refines_the_first_outer_iteration_at_its_own_rank(tmp_path):
    metrics, _ = run_stage(
        tmp_path,
        [
            "physics.rank=16",
            "physics.instances=1",
            "physics.ilsr.iterations=2",
            "physics.ilsr.update=commit",
            "physics.ilsr.recycle=true",
            "physics.ilsr.ranks=[8,8]",
            "physics.baseline.optimizer=none",
        ],
        instances=1,
    )
    history = metrics["ilsr"]["per_instance"][0]
    assert [h["rank"] for h in history[:-1]] == [8, 16]  # 8, then 8 new beside the recycled 8
    assert metrics["physics_lsr"]["rank"] == 16


def test_the_gradient_baseline_minimises_the_norm_physics_lsr_works_in(tmp_path):
    """cdr is not symmetric: physics LSR works in the dual norm, and so must the baseline (Adam on
    ½||F||² made the FNO worse than trained there); it keeps its lowest-loss network."""
    metrics, _ = run_stage(
        tmp_path,
        [
            "problem=cdr",
            "physics.rank=8",
            "physics.ilsr.iterations=1",
            "physics.baseline.optimizer=adam",
            "physics.baseline.lr=1e-3",
        ],
        instances=1,
    )
    baseline = metrics["baseline"]
    assert metrics["physics_lsr"]["norm"] == baseline["norm"] == "dual"
    history = baseline["per_instance"][0]
    assert history[-1]["kept"] and history[-1]["loss"] <= history[0]["loss"]
