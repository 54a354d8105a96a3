"""Small float64 problems shared by the GNvpro tests."""

import pytest
import torch

from pinn_lsr.models.mlp import MLP


@pytest.fixture
def regression():
    """``make(n, out_features) -> (model, x (n, 2), y (n, out_features))``, float64, normalisers
    fitted."""

    def make(n: int = 60, out_features: int = 2):
        torch.manual_seed(0)
        model = MLP(2, out_features, width=6, depth=2, activation="tanh").double()
        x = (
            torch.rand(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
            - 1
        )
        y = torch.cat([torch.sin(3 * x[:, :1]) * x[:, 1:] + k for k in range(out_features)], dim=1)
        model.input_normalizer.fit(x)
        model.output_normalizer.fit(y)
        return model, x, y

    return make


@pytest.fixture
def classification():
    """``(model, x (90, 3), labels (90,))`` with 4 classes, float64."""
    torch.manual_seed(0)
    model = MLP(3, 4, width=5, depth=2, activation="tanh").double()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(90, 3, dtype=torch.float64, generator=g)
    labels = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return model, x, labels
