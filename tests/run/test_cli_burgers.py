"""``problem=burgers`` from the command line: a 1D evolution problem with data LSR only."""

import json

import numpy as np
import pytest

from pinn_lsr.run.cli import main

# 16 grid nodes, 10 time steps, a few samples and epochs: seconds
TINY = [
    "problem=burgers",
    "problem.resolution=16",
    "problem.params.time_steps=10",
    "data.n_train=10",
    "data.n_test=2",
    "output.n_show=2",
    "output.progress=false",
    "train.epochs=2",
    "train.batch_size=5",
]
MODELS = {
    "fno": ["model.width=4", "model.modes=3", "model.layers=2"],
    "deeponet_burgers": ["model=deeponet_burgers", "model.width=8", "model.trunk_width=8"],
    "mlp": ["model=mlp", "model.width=8", "model.depth=1"],
}


def run(tmp_path, *overrides):
    return main(
        [
            f"hydra.run.dir={tmp_path / 'run'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            *TINY,
            *overrides,
        ]
    )


@pytest.mark.parametrize("model", sorted(MODELS))
def test_default_run_trains_and_refines_by_data_lsr(tmp_path, model):
    assert run(tmp_path, *MODELS[model], "method.rank=4") == 0
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["problem"] == "burgers" and metrics["grid_size"] == 16
    assert metrics["mesh"] == "periodic_interval(16)" and metrics["n_dofs"] == 16
    assert metrics["skipped"] == {"physics": "physics.instances=0"}
    assert metrics["fem"]["distributed_vs_dataset_max_abs_diff"] < 1e-12
    assert metrics["fem"]["time_steps"] == 10 and metrics["fem"]["snes_type"] == "newtonls"
    assert np.isfinite(metrics["train"]["test_rel_l2"]) and metrics["train"]["epochs"] == 2
    lsr = metrics["lsr"]
    assert lsr["n_rows"] == 8 * 16 and 1 <= lsr["rank"] <= 4
    assert lsr["objective"]["linearized"] <= lsr["objective"]["initial"]
    for name in ("samples.png", "loss.png", "lsr_rank.png", "fields/samples.xdmf"):
        assert (out / name).stat().st_size > 0


@pytest.mark.parametrize(
    "override, message",
    [
        ("physics.instances=2", "physics LSR is not available for problem=burgers"),
        ("mesh.file=meshes/lshape.msh", "mesh.file and mesh.dirichlet_tags must be null"),
        ("problem.params.theta=0.3", "theta must be in [0.5, 1]"),
        ("problem.params.time_steps=0", "time_steps must be an integer >= 1"),
    ],
)
def test_refusals_exit_2_before_any_work(tmp_path, capsys, override, message):
    assert run(tmp_path, override) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_a_trained_checkpoint_is_reused_and_refused_on_another_grid(tmp_path, capsys):
    assert run(tmp_path, *MODELS["fno"], "method=none") == 0
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    again = [f"checkpoint={checkpoint}", "method=none", f"hydra.run.dir={tmp_path / 'again'}"]
    assert run(tmp_path, *again) == 0
    metrics = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert metrics["train"]["checkpoint"] == str(checkpoint.resolve())
    assert run(tmp_path, *again, "problem.resolution=32") == 2
    assert "problem.resolution=32 (checkpoint: 16)" in capsys.readouterr().err
