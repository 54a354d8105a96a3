"""The separable view reproduces the network and writes θ and W back."""

import pytest
import torch
from torch import nn

from pinn_lsr.models.deeponet import DeepONet
from pinn_lsr.models.fno import FNOOperator
from pinn_lsr.vpro.separable import as_separable


def _outputs(separable, model, x):
    prepared = separable.prepare(x)
    Z = separable.features(separable.theta(), prepared)
    A = torch.cat([Z, torch.ones(len(Z), 1, dtype=Z.dtype)], dim=1)
    return separable.scale * A @ separable.get_weights().T + separable.shift


def test_mlp_features_times_weights_is_the_model(regression):
    model, x, y = regression(20, 3)
    separable = as_separable(model)
    torch.testing.assert_close(_outputs(separable, model, x), model(x).detach())


def test_deeponet_combination_weights_fold_into_the_branch():
    torch.manual_seed(0)
    model = DeepONet(
        4, branch="mlp", latent=5, width=8, depth=1, trunk_width=8, trunk_depth=1
    ).double()
    a = torch.rand(3, 4, 4, dtype=torch.float64)
    separable = as_separable(model)
    torch.testing.assert_close(_outputs(separable, model, a).reshape(3, -1), model(a).detach())
    W = torch.randn(1, 6, dtype=torch.float64)
    prepared = separable.prepare(a)
    Z = separable.features(separable.theta(), prepared)
    expected = separable.scale * (Z @ W[0, :-1] + W[0, -1]) + separable.shift
    separable.write(separable.theta(), W)
    torch.testing.assert_close(model(a).detach().reshape(-1), expected.detach())


def test_sequential_and_write_round_trip():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    separable = as_separable(model)
    theta, W = separable.theta() + 0.1, separable.get_weights() - 0.2
    separable.write(theta, W)
    torch.testing.assert_close(separable.theta(), theta)
    torch.testing.assert_close(model[2].bias.detach(), W[:, -1])


def test_network_without_final_affine_layer_is_named():
    with pytest.raises(ValueError, match=r"last layer 2 is Tanh"):
        as_separable(nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 1), nn.Tanh()))
    fno = FNOOperator(8, modes=2, width=4, layers=1)
    with pytest.raises(ValueError, match=r"FNOOperator, whose last layer is"):
        as_separable(fno)
