"""Multilayer perceptrons: the building block of DeepONet and a model of its own."""

import torch
from torch import nn

from pinn_lsr.models.bilinear import BilinearOutput, split_last_linear
from pinn_lsr.models.normalization import Normalizer

ACTIVATIONS = {"tanh": nn.Tanh, "gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


def mlp_layers(sizes: list[int], activation: str) -> nn.Sequential:
    """Affine layers ``sizes[0] -> ... -> sizes[-1]`` with ``activation`` between them (none
    after the last)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[k], sizes[k + 1]))
        if k < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class MLP(nn.Module):
    """``x`` (batch, *in_shape) -> (batch, out_features); trailing input dimensions are flattened.

    For function fitting (the LSR paper's 2-[128×6]-1 tanh network: ``in_features=2,
    width=128, depth=6``) or as a grid-to-grid operator on flattened fields
    (``in_features = out_features = s*s``). Inputs and outputs are normalised inside.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        width: int = 128,
        depth: int = 6,
        activation: str = "tanh",
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.net = mlp_layers([in_features] + [width] * depth + [out_features], activation)
        self.input_normalizer = Normalizer()
        self.output_normalizer = Normalizer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.in_features:
            raise ValueError(
                f"MLP expects {self.in_features} input features per sample, "
                f"got shape {tuple(x.shape)}"
            )
        return self.output_normalizer.decode(self.net(self.input_normalizer.encode(flat)))

    def bilinear_output(self) -> BilinearOutput:
        """The output as linear in the last ``nn.Linear`` (:mod:`pinn_lsr.models.bilinear`): left
        features = the last hidden layer (of the flattened inputs), no right features, no offset."""
        left, head = split_last_linear(self.net, "net")
        return BilinearOutput(
            left=nn.Sequential(nn.Flatten(), left),
            head=head,
            input_normalizer=self.input_normalizer,
            output_normalizer=self.output_normalizer,
        )
