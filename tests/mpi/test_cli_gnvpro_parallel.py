"""``method=gnvpro`` under 2 ranks: every rank trains the same model on its share of the samples."""

import json

import numpy as np
import torch

from pinn_lsr.run.cli import main
from tests.run.test_cli_gnvpro import SMALL
from pinn_lsr.train.checkpoint import load_model

# SMALL: a small DeepONet, a few GNvpro iterations, no physics stage


def test_gnvpro_run_under_two_ranks(comm, shared_tmp_path):
    out = shared_tmp_path / "run"
    code = main([f"hydra.run.dir={out}", f"data.cache_dir={shared_tmp_path / 'cache'}", *SMALL])
    assert comm.allgather(code) == [0, 0]
    metrics = json.loads((out / "metrics.json").read_text())
    train = metrics["train"]
    assert metrics["n_ranks"] == 2 and "lsr" not in metrics
    assert (
        train["optimizer"] == "gnvpro" and train["iterations"] == 3 and len(train["history"]) == 4
    )
    assert train["train_loss"] < train["history"][0]["loss"]
    for key in ("train_rel_l2", "test_rel_l2", "test_mse"):
        assert np.isfinite(train[key]), key
    assert (out / "gnvpro.png").exists()
    # rank 0's checkpoint loads on every rank
    model = load_model(out / "checkpoint.pt")
    with torch.no_grad():
        prediction = model(torch.ones(1, 12, 12, dtype=torch.float64) * 3)
    predictions = comm.allgather(prediction)
    assert torch.equal(predictions[0], predictions[1])
