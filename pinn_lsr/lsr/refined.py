"""The refined predictor of an LSR: ``q(θ0, x) + J(x) δ`` (linear in δ), its committed
weights ``θ0 + δ``, and saving / loading it."""

import copy
from pathlib import Path

import torch
from torch import nn

from pinn_lsr.io.atomic import atomic_path
from pinn_lsr.lsr.jacobian import ModelJacobian
from pinn_lsr.models.parameters import add_to_real_parameters


class RefinedModel:
    """``q(θ0, x) + J(x) δ`` for a model at θ0 and a correction δ of its selected parameters."""

    def __init__(self, model: nn.Module, index: torch.Tensor, delta: torch.Tensor, forward=None):
        self.model = model
        self.index = index
        self.delta = delta
        self.forward = forward

    def predict(self, inputs: torch.Tensor, *, chunk_samples: int = 256) -> torch.Tensor:
        """Linear-model outputs (n_samples, n_outputs) with one forward-mode product per chunk,
        in the refined model's precision (the inputs are cast to it)."""
        inputs = inputs.to(next(p.dtype for p in self.model.parameters() if not p.is_complex()))
        jacobian = ModelJacobian(
            self.model, inputs, index=self.index, forward=self.forward, chunk_samples=chunk_samples
        )
        return (jacobian.outputs() + jacobian.jvp(self.delta)).reshape(len(inputs), -1)

    def committed(self) -> nn.Module:
        """A copy of the model with weights θ0 + δ."""
        model = copy.deepcopy(self.model)
        add_to_real_parameters(model, self.index, self.delta)
        return model

    def save(self, path: str | Path) -> None:
        """Write θ0 (the model's state), the selection and δ, atomically. Local (call on one
        rank)."""
        state = {
            "model_state": self.model.state_dict(),
            "index": self.index,
            "delta": self.delta,
            "model_spec": getattr(self.model, "spec", None),
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    @classmethod
    def load(cls, path: str | Path, model: nn.Module) -> "RefinedModel":
        """Read a refinement saved by :meth:`save` into ``model`` (same architecture as saved)."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        model.load_state_dict(
            {k: v for k, v in state["model_state"].items() if isinstance(v, torch.Tensor)}
        )
        return cls(model, state["index"], state["delta"])
