"""Fourier neural operator on the s × s grid: a wrapper of ``neuralop.models.FNO``."""

import torch
from neuralop.models import FNO
from torch import nn

from pinn_lsr.models.normalization import Normalizer


class FNOOperator(nn.Module):
    """Coefficient on the grid -> solution at the grid nodes.

    ``forward(a)``: ``a`` (batch, s, s) -> (batch, s*s), grid nodes flattened in C order
    (``k = i * s + j``, as :class:`pinn_lsr.fem.transfer.Grid`); with ``out_channels = c > 1``
    (a vector field) (batch, c*s*s), the (c, s, s) field flattened in C order. Inputs and outputs
    are normalised inside the model. The spectral weights are complex: use
    :func:`pinn_lsr.models.parameters.real_parameters` to see them as real pairs.
    """

    def __init__(
        self,
        grid_size: int,
        *,
        modes: int = 8,
        width: int = 24,
        layers: int = 4,
        out_channels: int = 1,
    ):
        super().__init__()
        if modes > grid_size // 2 + 1:
            raise ValueError(
                f"FNO modes={modes} exceed what a {grid_size}-point grid resolves "
                f"({grid_size // 2 + 1})"
            )
        self.grid_size = grid_size
        self.out_channels = out_channels
        self.fno = FNO(
            n_modes=(modes, modes),
            in_channels=1,
            out_channels=out_channels,
            hidden_channels=width,
            n_layers=layers,
        )
        self.input_normalizer = Normalizer()
        self.output_normalizer = Normalizer()

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        s = self.grid_size
        if a.dim() != 3 or a.shape[1:] != (s, s):
            raise ValueError(
                f"FNO expects coefficients of shape (batch, {s}, {s}), got {tuple(a.shape)}"
            )
        y = self.fno(self.input_normalizer.encode(a).unsqueeze(1))  # (batch, out_channels, s, s)
        return self.output_normalizer.decode(y).reshape(a.shape[0], self.out_channels * s * s)
