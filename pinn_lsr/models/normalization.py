"""Input/output normalisation stored with the model (as buffers, so not trained)."""

import torch
from torch import nn


class Normalizer(nn.Module):
    """``encode(x) = (x - mean) / std``, ``decode(y) = y * std + mean`` with scalar statistics.

    Starts as the identity; :meth:`fit` sets the statistics from data. Scalar statistics keep a
    model usable at any set of target points.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))

    @torch.no_grad()
    def fit(self, data: torch.Tensor) -> "Normalizer":
        """Set mean and standard deviation from ``data`` (any shape, all entries pooled)."""
        self.mean.copy_(data.mean())
        self.std.copy_(data.std().clamp_min(1e-12))
        return self

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std + self.mean
