"""Fourier neural operator on the s × s grid (or s nodes in 1D): a wrapper of
``neuralop.models.FNO``."""

import math

import torch
from neuralop.models import FNO
from torch import nn

from pinn_lsr.models.normalization import Normalizer


class FNOOperator(nn.Module):
    """Coefficient on the grid -> solution at the grid nodes.

    ``forward(a)``: ``a`` (batch, s, s) -> (batch, s*s), grid nodes flattened in C order
    (``k = i * s + j``, as :class:`pinn_lsr.fem.transfer.Grid`); with ``out_channels = c > 1``
    (a vector field) (batch, c*s*s), the (c, s, s) field flattened in C order. With ``dim = 1``
    (Burgers): (batch, s) -> (batch, c*s). Inputs and outputs are normalised inside the model.
    The spectral weights are complex: use :func:`pinn_lsr.models.parameters.real_parameters` to
    see them as real pairs.
    """

    def __init__(
        self,
        grid_size: int,
        *,
        dim: int = 2,
        modes: int = 8,
        width: int = 24,
        layers: int = 4,
        out_channels: int = 1,
    ):
        super().__init__()
        if dim not in (1, 2):
            raise ValueError(f"FNO grids are 1D or 2D, got dim={dim!r}")
        if modes > grid_size // 2 + 1:
            raise ValueError(
                f"FNO modes={modes} exceed what a {grid_size}-point grid resolves "
                f"({grid_size // 2 + 1})"
            )
        self.grid_size = grid_size
        self.grid_shape = (grid_size,) * dim
        self.out_channels = out_channels
        self.fno = FNO(
            n_modes=(modes,) * dim,
            in_channels=1,
            out_channels=out_channels,
            hidden_channels=width,
            n_layers=layers,
        )
        self.input_normalizer = Normalizer()
        self.output_normalizer = Normalizer()

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        grid = self.grid_shape
        if a.shape[1:] != grid:
            raise ValueError(
                f"FNO expects coefficients of shape (batch, {', '.join(map(str, grid))}), "
                f"got {tuple(a.shape)}"
            )
        y = self.fno(self.input_normalizer.encode(a).unsqueeze(1))  # (batch, out_channels, *grid)
        return self.output_normalizer.decode(y).reshape(
            a.shape[0], self.out_channels * math.prod(grid)
        )
