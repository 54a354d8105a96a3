"""run/checkpoints.py: checkpoint=PATH and train.resume=true are checked against the run before
any work (exit 2, every difference listed); what may change on resume is applied and recorded."""

import json
import shutil

import pytest
import torch

from pinn_lsr.run.cli import main
from tests.run.test_cli import SMALL


BASE = [o for o in SMALL if not o.startswith("model.")]
FNO = {"model.width": "4", "model.modes": "3"}  # the trained model's, unless a test says otherwise


def solve(run_dir, cache, *overrides):
    keys = {o.split("=")[0] for o in overrides}
    model = [] if "model" in keys else [f"{k}={v}" for k, v in FNO.items() if k not in keys]
    args = [f"hydra.run.dir={run_dir}", f"data.cache_dir={cache}", *BASE, "method=none"]
    return main([*args, *model, *overrides])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 2-epoch run (FNO of width 4 on Darcy 12 × 12, float32) and its data cache."""
    root = tmp_path_factory.mktemp("trained")
    assert solve(root / "run", root / "cache", "train.checkpoint_every=1") == 0
    return root


def files_of(run_dir):
    return {p.name: p.stat().st_mtime_ns for p in run_dir.rglob("*")}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.lr=0.002"], "train.lr=0.002 (checkpoint: 0.001)"),
        (["train.optimizer=sgd", "train.batch_size=1"], "train.batch_size=1 (checkpoint: 2)"),
        (["train.epochs=1"], "train.epochs=1 (checkpoint: 2) (2 epochs are done"),
        (["train.scheduler=cosine", "train.epochs=3"], "train.scheduler='cosine'"),
        (["model.width=8"], "model.width=8 (checkpoint: 4)"),
        (["model=mlp"], "model=mlp (checkpoint: fno)"),
        (["problem=poisson"], "problem='poisson' (checkpoint: 'darcy')"),
        (["problem.resolution=10"], "problem.resolution=10 (checkpoint: 12)"),
        (["data.n_train=5"], "data.n_train=5 (checkpoint: 4)"),
        (["seed=1"], "seed=1 (checkpoint: 0)"),
        (["train.dtype=float64"], "train.dtype=float64 (checkpoint: float32)"),
    ],
)
def test_resume_with_other_settings_is_refused_before_any_work(trained, capsys, overrides, message):
    before = files_of(trained / "run")
    assert solve(trained / "run", trained / "cache", "train.resume=true", *overrides) == 2
    error = capsys.readouterr().err
    assert "error: train.resume=true with" in error and message in error
    assert files_of(trained / "run") == before  # the finished run is left as it was


def test_resume_with_more_epochs_applies_and_records_them(trained, tmp_path):
    shutil.copytree(trained / "run", tmp_path / "run")
    assert solve(tmp_path / "run", trained / "cache", "train.resume=true", "train.epochs=3") == 0
    train = json.loads((tmp_path / "run" / "metrics.json").read_text())["train"]
    changed = {"epochs": [2, 3], "checkpoint_every": [1, 10]}  # both may change
    assert train["resumed"] == {"from_epoch": 2, "changed": changed}
    assert [h["epoch"] for h in train["history"]] == [1, 2, 3]
    assert "epochs: 3" in (tmp_path / "run" / ".hydra" / "config.yaml").read_text()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=mlp"], "model=mlp (checkpoint: fno)"),
        (["model.width=8"], "model.width=8 (checkpoint: 4)"),
        (["problem=poisson"], "problem='poisson' (checkpoint: 'darcy')"),
        (["problem.resolution=10"], "problem.resolution=10 (checkpoint: 12)"),
    ],
)
def test_a_checkpoint_of_another_model_problem_or_grid_is_refused(
    trained, tmp_path, capsys, overrides, message
):
    checkpoint = trained / "run" / "checkpoint.pt"
    assert solve(tmp_path / "run", trained / "cache", f"checkpoint={checkpoint}", *overrides) == 2
    error = capsys.readouterr().err
    assert f"error: checkpoint={checkpoint} does not fit this run" in error and message in error
    assert not (tmp_path / "run").exists()


def test_the_checkpoints_model_runs_and_is_recorded(trained, tmp_path):
    checkpoint = trained / "run" / "checkpoint.pt"
    # no model keys: the checkpoint's width 4 and modes 3 run, not the group's 24 and 8
    args = [f"hydra.run.dir={tmp_path / 'run'}", f"data.cache_dir={trained / 'cache'}"]
    assert main([*args, *BASE, "method=none", f"checkpoint={checkpoint}"]) == 0
    recorded = (tmp_path / "run" / ".hydra" / "config.yaml").read_text()
    assert "width: 4" in recorded and "modes: 3" in recorded and "grid_size" not in recorded


def test_an_older_checkpoint_is_checked_by_its_models_shapes(trained, tmp_path, capsys):
    state = torch.load(trained / "run" / "checkpoint.pt", weights_only=False)
    del state["identity"]
    torch.save(state, tmp_path / "old.pt")
    overrides = [f"checkpoint={tmp_path / 'old.pt'}", "problem.resolution=10"]
    assert solve(tmp_path / "run", trained / "cache", *overrides) == 2
    assert "the model's grid_size=12 (this run needs 10)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, message",
    [
        ("truncated", "cannot be read"),
        ("text", "cannot be read"),
        ("foreign", "holds no pinn_lsr model"),
    ],
)
def test_a_corrupt_truncated_or_foreign_checkpoint_exits_2(
    trained, tmp_path, capsys, content, message
):
    path = tmp_path / "model.pt"
    if content == "truncated":
        data = (trained / "run" / "checkpoint.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "text":
        path.write_text("not a checkpoint")
    else:
        torch.save({"weights": torch.zeros(3)}, path)
    assert solve(tmp_path / "run", trained / "cache", f"checkpoint={path}") == 2
    assert f"checkpoint {path} {message}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_corrupt_checkpoint_to_resume_exits_2(trained, tmp_path, capsys):
    shutil.copytree(trained / "run", tmp_path / "run")
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"\x80\x04garbage")
    assert solve(tmp_path / "run", trained / "cache", "train.resume=true") == 2
    assert "cannot be read" in capsys.readouterr().err
