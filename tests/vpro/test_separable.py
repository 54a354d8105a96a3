"""The separable view reproduces the network from its features and weights and writes θ and
(W, β) back."""

import pytest
import torch
from torch import nn

from pinn_lsr.models.deeponet import DeepONet
from pinn_lsr.models.fno import FNOOperator
from pinn_lsr.vpro.separable import LinearWeights, as_separable


def _outputs(separable, x, weights):
    """scale · ([h, 1] Wᵀ Tᵀ + β) + shift from the features at the model's θ: (n, n_values)."""
    values = separable.features(separable.theta(), separable.prepare(x))
    H = torch.cat([values[0], torch.ones(len(values[0]), 1, dtype=values[0].dtype)], dim=1)
    T = values[1] if separable.has_right else torch.eye(separable.n_right, dtype=H.dtype)
    offset = weights.offset if weights.offset is not None else 0.0
    return separable.scale * (H @ weights.W.T @ T.T + offset) + separable.shift


def test_mlp_features_times_weights_is_the_model(regression):
    model, x, y = regression(20, 3)
    separable = as_separable(model)
    assert not separable.has_right and separable.offset is None and separable.n_values == 3
    torch.testing.assert_close(_outputs(separable, x, separable.weights()), model(x).detach())


@pytest.mark.parametrize("branch", ["mlp", "cnn"])
def test_deeponet_is_bilinear_in_the_branch_head_and_the_bias(operator, branch):
    model, a, _ = operator(branch)
    separable = as_separable(model)
    assert (separable.n_left, separable.n_right, separable.n_values) == (6, 5, 16)
    n_head = 5 * 6 + 5 + 1
    assert len(separable.theta()) == sum(p.numel() for p in model.parameters()) - n_head
    torch.testing.assert_close(_outputs(separable, a, separable.weights()), model(a).detach())
    g = torch.Generator().manual_seed(2)
    weights = LinearWeights(
        torch.randn(5, 7, dtype=torch.float64, generator=g), torch.tensor(0.3, dtype=torch.float64)
    )
    expected = _outputs(separable, a, weights)
    theta = separable.theta()
    separable.write(theta, weights)
    torch.testing.assert_close(model(a).detach(), expected)
    torch.testing.assert_close(separable.theta(), theta)
    points = torch.rand(3, 2, dtype=torch.float64, generator=g)
    at_points = as_separable(model, points=points)
    assert at_points.n_values == 3
    torch.testing.assert_close(
        _outputs(at_points, a, weights), model(a, points).detach(), rtol=1e-12, atol=1e-12
    )


def test_sequential_and_write_round_trip():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    separable = as_separable(model)
    weights = separable.weights()
    theta, W = separable.theta() + 0.1, weights.W - 0.2
    separable.write(theta, LinearWeights(W, None))
    torch.testing.assert_close(separable.theta(), theta)
    torch.testing.assert_close(model[2].bias.detach(), W[:, -1])


def test_unsupported_networks_are_named():
    with pytest.raises(ValueError, match=r"last layer 2 is Tanh"):
        as_separable(nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 1), nn.Tanh()))
    fno = FNOOperator(8, modes=2, width=4, layers=1)
    with pytest.raises(ValueError, match=r"FNOOperator, whose last layer is"):
        as_separable(fno)
    vector = DeepONet(4, latent=3, width=4, depth=1, trunk_width=4, trunk_depth=1, out_channels=2)
    with pytest.raises(ValueError, match=r"one output channel, got out_channels=2"):
        as_separable(vector)
    with pytest.raises(ValueError, match=r"points apply to models with right features"):
        as_separable(
            nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)), points=torch.zeros(3, 2)
        )
