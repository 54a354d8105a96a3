"""run/stages.py: train-or-load and data-LSR stages, shared by every kind of run."""

import json
from types import SimpleNamespace

import pytest
import torch
from mpi4py import MPI

from pinn_lsr.run.cli import compose_config
from pinn_lsr.run.config import load_settings
from pinn_lsr.run.stages import (
    refine_model,
    share,
    summary,
    train_or_load_model,
    write_metrics,
)

FIT = ["problem=fit2d", "model=mlp", "model.width=16", "model.depth=2", "train.epochs=3"]


def fit2d_data(settings):
    problem = settings.problem
    train = problem.training_data(settings.data.n_train, seed=settings.seed)
    test = problem.test_data(10)
    return tuple(map(torch.as_tensor, train)), tuple(map(torch.as_tensor, test))


def test_share_gives_each_rank_a_contiguous_block():
    data = (torch.arange(10.0)[:, None], torch.arange(10.0)[:, None])
    shares = [share(data, SimpleNamespace(size=3, rank=r))[0].ravel().tolist() for r in range(3)]
    assert shares == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_summary_of_an_exact_predictor_is_zero():
    data = (torch.rand(5, 2, dtype=torch.float64), torch.rand(5, 3, dtype=torch.float64) + 1)
    errors = summary(lambda x: data[1], data, MPI.COMM_WORLD, "test")
    assert errors["test_rel_l2"] == 0 and errors["test_mse"] == 0


def test_train_refine_and_reload(tmp_path):
    settings = load_settings(
        compose_config([*FIT, "data.n_train=200", "method.rank=8", "output.progress=false"])
    )
    train_data, test_data = fit2d_data(settings)
    model, metrics = train_or_load_model(settings, train_data, test_data, tmp_path, MPI.COMM_WORLD)
    assert metrics["model"] == "mlp" and metrics["epochs"] == 3
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "loss.png").is_file()
    lsr, refined = refine_model(settings, model, train_data, test_data, tmp_path, MPI.COMM_WORLD)
    assert 1 <= lsr["rank"] <= lsr["max_rank"] == 8 and len(lsr["scan"]) >= 1
    assert lsr["test_mse"] < metrics["test_mse"]  # LSR improves a barely trained MLP
    assert (tmp_path / "lsr_rank.png").is_file()
    # the saved model, loaded through the same stage, predicts the same
    loaded = load_settings(
        compose_config([*FIT, "data.n_train=200", f"checkpoint={tmp_path / 'checkpoint.pt'}"])
    )
    _, again = train_or_load_model(loaded, train_data, test_data, tmp_path / "b", MPI.COMM_WORLD)
    assert again["test_mse"] == pytest.approx(metrics["test_mse"], rel=1e-12)


def test_write_metrics_adds_the_seconds_and_the_peak_memory(tmp_path):
    metrics = write_metrics(tmp_path, {"a": 1}, {"train": 2.0}, MPI.COMM_WORLD)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert metrics["a"] == 1 and metrics["seconds"] == {"train": 2.0}
    assert 10 < metrics["peak_memory_mb"] < 1e6
