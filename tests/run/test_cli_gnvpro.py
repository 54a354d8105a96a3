"""``method=gnvpro``: the model is trained by GNvpro (pinn_lsr.vpro) instead of gradients, no
LSR follows."""

import json

import numpy as np
import pytest
import torch
from mpi4py import MPI

from pinn_lsr.run.cli import compose_config, main
from pinn_lsr.run.config import load_settings
from pinn_lsr.run.stages import train_or_load_model
from pinn_lsr.train.checkpoint import load_model

# a few GNvpro iterations, no physics stage; SMALL adds a small DeepONet
BASE = [
    "problem.resolution=12",
    "data.n_train=8",
    "data.n_test=2",
    "output.n_show=1",
    "output.progress=false",
    "physics.instances=0",
    "method=gnvpro",
    "method.max_iterations=3",
    "method.krylov_max_iterations=3",
]
SMALL = [
    *BASE,
    "model=deeponet",
    "model.branch=mlp",
    "model.latent=8",
    "model.width=16",
    "model.trunk_width=16",
    "model.trunk_depth=2",
]


def run(tmp_path, *overrides, base=SMALL):
    return main(
        [
            f"hydra.run.dir={tmp_path / 'run'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            *base,
            *overrides,
        ]
    )


def test_gnvpro_trains_the_model_from_the_cli(tmp_path):
    assert run(tmp_path) == 0
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert "lsr" not in metrics and set(metrics["seconds"]) == {
        "mesh",
        "data",
        "train",
        "fem_solve",
        "output",
    }
    train = metrics["train"]
    assert (
        train["model"] == "deeponet"
        and train["optimizer"] == "gnvpro"
        and train["status"] == "max_iterations"
    )
    assert (
        train["iterations"] == 3
        and len(train["history"]) == 4
        and train["work_units"] > 0
        and train["seconds"] > 0
    )
    losses = [h["loss"] for h in train["history"]]
    assert train["train_loss"] == min(losses) < losses[0]
    for key in ("train_rel_l2", "test_rel_l2", "test_mse", "test_global_rel_l2"):
        assert np.isfinite(train[key]) and train[key] > 0, key
    assert train["test_rel_l2"] < 1  # better than predicting zero
    for name in ("gnvpro.png", "checkpoint.pt", "samples.png"):
        assert (out / name).stat().st_size > 0
    model = load_model(out / "checkpoint.pt")
    assert next(model.parameters()).dtype == torch.float64 and model.spec["name"] == "deeponet"

    # the checkpoint gives the run's model back: the same test errors through the pipeline
    again = tmp_path / "again"
    assert (
        main(
            [
                f"hydra.run.dir={again}",
                f"data.cache_dir={tmp_path / 'cache'}",
                *BASE[:6],
                "model=deeponet",
                "method=none",
                f"checkpoint={out / 'checkpoint.pt'}",
            ]
        )
        == 0
    )
    reloaded = json.loads((again / "metrics.json").read_text())["train"]
    assert reloaded["test_rel_l2"] == pytest.approx(train["test_rel_l2"], rel=1e-12)


def test_checkpoint_reloads_the_same_predictions(tmp_path):
    settings = load_settings(compose_config(SMALL))
    generator = torch.Generator().manual_seed(0)
    a = 3 + 9 * torch.rand(6, 12, 12, dtype=torch.float64, generator=generator)
    u = torch.sin(a.reshape(6, -1).cumsum(1) / 100) / a.reshape(6, -1)
    model, metrics = train_or_load_model(settings, (a, u), None, tmp_path, MPI.COMM_WORLD)
    assert metrics["optimizer"] == "gnvpro" and metrics["iterations"] == 3
    with torch.no_grad():
        expected = model(a)
        assert torch.equal(load_model(tmp_path / "checkpoint.pt")(a), expected)
    # GNvpro fits the MSE: the model is better than its initial state and than the mean
    assert metrics["train_mse"] < float(u.var())
    assert metrics["train_loss"] == pytest.approx(metrics["train_mse"] / float(u.var()), rel=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["model=fno", "model.modes=3"],
            "method=gnvpro cannot train model=fno: GNvpro eliminates the network's final "
            "affine layer",
        ),
        (["~model"], "method=gnvpro needs a model to train"),
        (["checkpoint=model.pt"], "method=gnvpro trains a new model"),
        (["method.globalization=newton"], "method.globalization must be one of"),
        (
            ["method.curvature_batch_size=9"],
            "method.curvature_batch_size must be null, a fraction in (0, 1) or an integer in "
            "[1, data.n_train=8]",
        ),
        (["+method.radius0=1"], "bad method=gnvpro setting"),
        (["train.resume=true"], "train.resume applies to gradient training only"),
    ],
)
def test_gnvpro_settings_name_the_problem(overrides, message):
    base = BASE if overrides[0] in ("model=fno", "~model") else SMALL
    with pytest.raises(ValueError) as info:
        load_settings(compose_config([*base, *overrides]))
    assert message in str(info.value)


def test_gnvpro_settings_accept_the_supported_models():
    for model in (["model=deeponet"], ["model=mlp", "model.width=8"]):
        assert load_settings(compose_config([*BASE, *model])).gnvpro is not None
    assert load_settings(compose_config(["model=fno", "method=lsr"])).gnvpro is None


def test_gnvpro_with_fno_is_a_usage_error(tmp_path, capsys):
    assert run(tmp_path, "model=fno", "model.modes=3", base=BASE) == 2
    assert "method=gnvpro cannot train model=fno" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
