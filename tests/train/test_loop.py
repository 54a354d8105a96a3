import dataclasses
import re

import numpy as np
import pytest
import torch

from pinn_lsr.models import build_model
from pinn_lsr.models.parameters import real_parameters, set_precision
from pinn_lsr.train import loop
from pinn_lsr.train.checkpoint import load_model, read_checkpoint
from pinn_lsr.train.loop import TrainSettings, resume_changes, train

S = 8
SMALL = {
    "fno": {"grid_size": S, "modes": 3, "width": 8, "layers": 2},
    "deeponet": {
        "grid_size": S,
        "latent": 16,
        "width": 32,
        "depth": 2,
        "trunk_width": 32,
        "trunk_depth": 2,
    },
    "mlp": {"in_features": S * S, "out_features": S * S, "width": 32, "depth": 2},
}
OPTIMIZERS = {
    "adam": {"optimizer": "adam", "lr": 1e-2, "epochs": 15, "batch_size": 4},
    "sgd": {"optimizer": "sgd", "lr": 0.1, "epochs": 30, "batch_size": 4, "momentum": 0.9},
    "lbfgs": {"optimizer": "lbfgs", "lr": 1.0, "epochs": 3, "lbfgs_max_iter": 10},
}


def fresh(name, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return set_precision(build_model(name, **SMALL[name]), dtype)


def flat_parameters(model):
    return torch.cat([t.detach().reshape(-1) for t in real_parameters(model).values()])


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("name", sorted(SMALL))
def test_loss_decreases(darcy_tensors, name, optimizer):
    a, u = darcy_tensors
    settings = TrainSettings(scheduler="none", weight_decay=0.0, **OPTIMIZERS[optimizer])
    result = train(fresh(name), (a[:16], u[:16]), (a[16:], u[16:]), settings, progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.9 * losses[0], f"{name}/{optimizer}: {losses}"
    assert result.counters.epochs == settings.epochs and result.counters.forward_samples > 0


@pytest.mark.parametrize("scheduler", ["step", "plateau", "cosine"])
def test_schedules_change_the_learning_rate(darcy_tensors, scheduler):
    a, u = darcy_tensors
    # a tiny rate leaves the loss flat, so the plateau schedule must cut it too
    settings = TrainSettings(
        epochs=6, batch_size=8, scheduler=scheduler, step_size=2, gamma=0.5, patience=1, lr=1e-6
    )
    result = train(fresh("mlp"), (a, u), None, settings, progress=False)
    lrs = [h["lr"] for h in result.history]
    assert lrs[-1] < lrs[0]


def test_resume_after_interruption_matches_uninterrupted_run(darcy_tensors, tmp_path, monkeypatch):
    a, u = darcy_tensors
    settings = TrainSettings(epochs=4, batch_size=8, lr=3e-3, checkpoint_every=2)
    reference = fresh("fno")
    train(reference, (a[:16], u[:16]), (a[16:], u[16:]), settings, progress=False)

    path = tmp_path / "checkpoint.pt"
    real_epoch = loop._minibatch_epoch

    def interrupted(*args):
        if args[7] == 2:  # the third epoch, after the checkpoint of epoch 2
            raise KeyboardInterrupt
        return real_epoch(*args)

    monkeypatch.setattr(loop, "_minibatch_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(
            fresh("fno"),
            (a[:16], u[:16]),
            (a[16:], u[16:]),
            settings,
            checkpoint=path,
            progress=False,
        )
    assert read_checkpoint(path)["epoch"] == 2
    monkeypatch.setattr(loop, "_minibatch_epoch", real_epoch)

    resumed = fresh("fno", seed=123)  # a different start: everything must come from the checkpoint
    result = train(
        resumed,
        (a[:16], u[:16]),
        (a[16:], u[16:]),
        settings,
        checkpoint=path,
        resume=True,
        progress=False,
    )
    assert result.counters.epochs == 4 and len(result.history) == 4
    torch.testing.assert_close(flat_parameters(resumed), flat_parameters(reference), rtol=0, atol=0)


def test_resume_allows_only_changes_an_uninterrupted_run_would_match():
    saved = TrainSettings(epochs=10, checkpoint_every=5)
    state = {"optimizer_state": {}, "epoch": 5, "settings": dataclasses.asdict(saved)}
    assert resume_changes(state, saved) == {}
    longer = dataclasses.replace(saved, epochs=20, checkpoint_every=2)
    assert resume_changes(state, longer) == {"epochs": [10, 20], "checkpoint_every": [5, 2]}
    for changed, message in (
        ({"epochs": 4}, "epochs=4 (checkpoint: 10) (5 epochs are done)"),
        ({"lr": 0.1, "batch_size": 4}, "batch_size=4 (checkpoint: 20); lr=0.1 (checkpoint: 0.001)"),
        ({"scheduler": "cosine", "epochs": 20}, "the cosine schedule's period"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            resume_changes(state, dataclasses.replace(saved, **changed))
    with pytest.raises(ValueError, match="no gradient-training state .* 'gnvpro'"):
        resume_changes({"optimizer": "gnvpro", "settings": {}}, saved)


def test_load_model_reproduces_predictions(darcy_tensors, tmp_path):
    a, u = darcy_tensors
    model = fresh("deeponet", dtype=torch.float32)
    train(
        model,
        (a.float(), u.float()),
        None,
        TrainSettings(epochs=1, batch_size=8),
        checkpoint=tmp_path / "c.pt",
        progress=False,
    )
    loaded = load_model(tmp_path / "c.pt")
    torch.testing.assert_close(loaded(a.float()), model.eval()(a.float()))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt cannot be read"):
        load_model(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        load_model(tmp_path / "missing.pt")


def test_bad_data_is_rejected(darcy_tensors):
    a, u = darcy_tensors
    with pytest.raises(ValueError, match="differ in length: 24 vs 23"):
        train(fresh("mlp"), (a, u[:-1]), None, TrainSettings(epochs=1), progress=False)
    bad = u.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        train(fresh("mlp"), (a, bad), None, TrainSettings(epochs=1), progress=False)
    with pytest.raises(ValueError, match="unknown loss"):
        train(fresh("mlp"), (a, u), None, TrainSettings(epochs=1, loss="l1"), progress=False)
    with pytest.raises(ValueError, match="unknown optimizer"):
        train(
            fresh("mlp"), (a, u), None, TrainSettings(epochs=1, optimizer="rmsprop"), progress=False
        )


def test_zero_epochs_save_the_initial_model_with_fitted_normalisers(darcy_tensors, tmp_path):
    a, u = darcy_tensors
    model = fresh("deeponet")
    start = flat_parameters(model).clone()
    path = tmp_path / "checkpoint.pt"
    result = train(model, (a, u), None, TrainSettings(epochs=0), checkpoint=path, progress=False)
    assert result.history == [] and read_checkpoint(path)["epoch"] == 0
    loaded = load_model(path)
    torch.testing.assert_close(flat_parameters(loaded), start)  # random features, untrained
    torch.testing.assert_close(loaded(a[:2]), model(a[:2]))  # normalisers fitted to the data


NO_CUDA = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA device")
def test_training_on_cuda_without_a_gpu_is_refused(darcy_tensors):
    a, u = darcy_tensors
    with pytest.raises(ValueError, match="device=cuda: torch sees no CUDA device"):
        train(fresh("mlp"), (a, u), None, TrainSettings(epochs=1), progress=False, device="cuda")


@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(SMALL))
def test_training_on_cuda_agrees_with_the_cpu_and_ends_on_the_cpu(darcy_tensors, name, tmp_path):
    a, u = darcy_tensors
    settings = TrainSettings(epochs=3, batch_size=8, lr=3e-3)
    models = {device: fresh(name) for device in ("cpu", "cuda")}
    for device, model in models.items():
        train(
            model,
            (a[:16], u[:16]),
            None,
            settings,
            progress=False,
            device=device,
            checkpoint=tmp_path / f"{device}.pt",
        )
    assert all(t.device.type == "cpu" for t in models["cuda"].state_dict().values())
    assert all(
        t.device.type == "cpu"
        for t in read_checkpoint(tmp_path / "cuda.pt")["model_state"].values()
    )
    torch.testing.assert_close(
        flat_parameters(models["cuda"]), flat_parameters(models["cpu"]), rtol=1e-8, atol=1e-10
    )
