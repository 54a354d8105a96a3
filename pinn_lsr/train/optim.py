"""Optimisers and learning-rate schedules by name."""

from collections.abc import Iterable

import torch

OPTIMIZERS = ("adam", "sgd", "lbfgs")
SCHEDULERS = ("none", "step", "plateau", "cosine")


def make_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: str,
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    lbfgs_max_iter: int = 20,
) -> torch.optim.Optimizer:
    """``adam`` (Adam with decoupled-free L2 ``weight_decay``), ``sgd`` (with momentum) or
    ``lbfgs`` (full batch, strong Wolfe line search, ``lbfgs_max_iter`` iterations per step)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "lbfgs":
        return torch.optim.LBFGS(
            params, lr=lr, max_iter=lbfgs_max_iter, history_size=50, line_search_fn="strong_wolfe"
        )
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    *,
    epochs: int,
    step_size: int = 100,
    gamma: float = 0.5,
    patience: int = 10,
):
    """Per-epoch schedule: ``none``, ``step`` (×gamma every step_size epochs), ``plateau``
    (×gamma after ``patience`` epochs without improvement of the training loss) or ``cosine``
    (to zero over ``epochs``). Returns None for ``none``."""
    if name == "none":
        return None
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=gamma, patience=patience
        )
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    raise ValueError(f"unknown scheduler {name!r}; choose one of {SCHEDULERS}")
