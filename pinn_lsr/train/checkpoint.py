"""Checkpoints: written atomically by rank 0, read by every rank; models rebuilt from their spec."""

from pathlib import Path

import torch
from torch import nn

from pinn_lsr.io.atomic import atomic_path
from pinn_lsr.models import build_model
from pinn_lsr.models.parameters import set_precision


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters and buffers, on the CPU (neuraloperator adds non-tensor
    ``_metadata``; dropped)."""
    return {name: t.cpu() for name, t in model.state_dict().items() if isinstance(t, torch.Tensor)}


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` (must hold ``model_spec`` and ``model_state``) with ``torch.save``,
    atomically. Local."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint's dictionary. Raises ValueError naming the file if it is missing or
    unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise ValueError(f"checkpoint {path} cannot be read: {exc}") from exc
    if not isinstance(state, dict) or "model_spec" not in state or "model_state" not in state:
        raise ValueError(f"checkpoint {path} holds no pinn_lsr model")
    return state


def load_model(path: str | Path, *, dtype: torch.dtype | None = None) -> nn.Module:
    """Rebuild the trained model saved in checkpoint ``path`` (weights and normalisation), in
    eval mode.

    This is the entry point for refining a trained model (LSR) in another run or script::

        model = load_model("outputs/.../checkpoint.pt")
        u = model(a)  # a: (batch, s, s) -> (batch, s*s)
    """
    state = read_checkpoint(path)
    spec = state["model_spec"]
    model = build_model(spec["name"], **spec["kwargs"])
    set_precision(model, dtype if dtype is not None else saved_precision(state))
    model.load_state_dict(state["model_state"])
    return model.eval()


def saved_precision(state: dict) -> torch.dtype:
    """The floating-point precision of the model saved in checkpoint ``state``."""
    real = [t.dtype for t in state["model_state"].values() if t.is_floating_point()]
    return torch.float64 if torch.float64 in real else torch.float32
