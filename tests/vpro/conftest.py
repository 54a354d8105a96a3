"""Small float64 problems shared by the GNvpro tests."""

import pytest
import torch

from pinn_lsr.models.deeponet import DeepONet
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


@pytest.fixture
def operator():
    """``make(branch="mlp") -> (DeepONet, a (7, 4, 4), u (7, 16))``, float64, latent 5, normalisers
    fitted: the left features h (7, 6), the right features t (16, 5), W (5, 7) and the bias."""

    def make(branch: str = "mlp"):
        torch.manual_seed(0)
        model = DeepONet(
            4, branch=branch, latent=5, width=6, depth=1, trunk_width=6, trunk_depth=1
        ).double()
        g = torch.Generator().manual_seed(1)
        a = 1 + torch.rand(7, 4, 4, dtype=torch.float64, generator=g)
        u = 2.0 + torch.sin(a.reshape(7, -1).cumsum(1) / 4) / a.reshape(7, -1)
        model.input_normalizer.fit(a)
        model.output_normalizer.fit(u)
        return model, a, u

    return make
