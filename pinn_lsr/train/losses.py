"""Per-sample losses: (batch, n_points) predictions and targets -> (batch,) losses."""

import torch


def relative_l2(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||prediction - target||_2 / ||target||_2`` per sample (the FNO papers' loss)."""
    return torch.linalg.vector_norm(prediction - target, dim=1) / torch.linalg.vector_norm(
        target, dim=1
    ).clamp_min(1e-30)


def mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the points, per sample."""
    return (prediction - target).pow(2).mean(dim=1)


LOSSES = {"rel_l2": relative_l2, "mse": mse}
