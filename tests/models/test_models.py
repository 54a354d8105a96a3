from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.func import functional_call

from pinn_lsr.models import MODELS, build_model
from pinn_lsr.models.parameters import (
    as_model_parameters,
    count_real_parameters,
    real_parameters,
    set_precision,
)

S = 8
SMALL = {
    "fno": {"grid_size": S, "modes": 3, "width": 6, "layers": 2},
    "deeponet": {
        "grid_size": S,
        "latent": 8,
        "width": 16,
        "depth": 2,
        "trunk_width": 16,
        "trunk_depth": 2,
    },
    "mlp": {"in_features": S * S, "out_features": S * S, "width": 16, "depth": 2},
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_model_maps_batch_of_grids_to_grid_values(name, dtype):
    torch.manual_seed(0)
    model = set_precision(build_model(name, **SMALL[name]), dtype)
    a = torch.rand(3, S, S, dtype=dtype) * 9 + 3
    u = model(a)
    assert u.shape == (3, S * S) and u.dtype == dtype and torch.isfinite(u).all()
    assert model.spec == {"name": name, "kwargs": SMALL[name]}


@pytest.mark.parametrize("name", ["fno", "deeponet"])
def test_wrong_resolution_or_channels_raise_clear_errors(name):
    model = build_model(name, **SMALL[name])
    with pytest.raises(ValueError, match=rf"shape \(batch, {S}, {S}\), got \(2, 9, 9\)"):
        model(torch.ones(2, 9, 9))
    with pytest.raises(ValueError, match=r"got \(2, 2, 8, 8\)"):
        model(torch.ones(2, 2, S, S))


def test_mlp_and_deeponet_points_errors():
    with pytest.raises(ValueError, match="64 input features"):
        build_model("mlp", **SMALL["mlp"])(torch.ones(2, 9, 9))
    with pytest.raises(ValueError, match=r"points of shape \(n_points, 2\)"):
        build_model("deeponet", **SMALL["deeponet"])(torch.ones(1, S, S), torch.ones(5, 3))


def test_unknown_model_and_bad_arguments():
    with pytest.raises(ValueError, match="choose one of: deeponet, fno, mlp"):
        build_model("unet")
    with pytest.raises(ValueError, match="bad arguments for model 'fno'"):
        build_model("fno", grid_size=S, depth=3)
    with pytest.raises(ValueError, match="modes=9 exceed"):
        build_model("fno", grid_size=S, modes=9)


def test_complex_weights_as_real_pairs():
    torch.manual_seed(1)
    model = build_model("fno", **SMALL["fno"])
    complex_names = [n for n, p in model.named_parameters() if p.is_complex()]
    assert complex_names, "FNO should have complex spectral weights"
    real = real_parameters(model)
    assert all(not t.is_complex() for t in real.values())
    assert count_real_parameters(model) == sum(t.numel() for t in real.values())
    name = complex_names[0]
    assert real[name].shape == (*dict(model.named_parameters())[name].shape, 2)
    a = torch.rand(2, S, S)
    # a perturbation written through the real view changes the model, and functional_call agrees
    shifted = {n: t + 0.01 for n, t in real.items()}
    expected = functional_call(model, as_model_parameters(shifted, model), (a,))
    with torch.no_grad():
        for n, t in real.items():
            t.add_(0.01)
    torch.testing.assert_close(model(a), expected)


def test_set_precision_keeps_imaginary_parts():
    model = build_model("fno", **SMALL["fno"])
    name, weight = next(
        (n, p.detach().clone()) for n, p in model.named_parameters() if p.is_complex()
    )
    set_precision(model, torch.float64)
    after = dict(model.named_parameters())[name]
    assert after.dtype == torch.complex128
    torch.testing.assert_close(after.detach(), weight.to(torch.complex128))


@pytest.mark.parametrize("name", ["fno", "deeponet"])
def test_vector_output_channels_are_channel_major(name):
    torch.manual_seed(0)
    model = set_precision(build_model(name, **SMALL[name], out_channels=2), torch.float64)
    a = torch.rand(3, S, S, dtype=torch.float64) * 9 + 3
    u = model(a)
    assert u.shape == (3, 2 * S * S) and torch.isfinite(u).all()
    # the channels are distinct fields (not a copy), and each sample's block is (2, S, S) in C order
    channels = u.reshape(3, 2, S * S)
    assert not torch.allclose(channels[:, 0], channels[:, 1])
    if (
        name == "deeponet"
    ):  # channel c at the grid points is branch group c · trunk group c + bias c
        b = model.branch(model.input_normalizer.encode(a)).reshape(3, 2, -1)
        t = model.trunk(model.grid_points).reshape(S * S, 2, -1)
        expected = torch.einsum("bl,pl->bp", b[:, 1], t[:, 1]) + model.bias[1]
        torch.testing.assert_close(channels[:, 1], model.output_normalizer.decode(expected))


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("fno", SMALL["fno"]),
        ("deeponet", SMALL["deeponet"]),
        ("deeponet", {**SMALL["deeponet"], "branch": "cnn"}),
    ],
)
def test_one_dimensional_grids(name, kwargs):
    torch.manual_seed(0)
    model = set_precision(build_model(name, **{**kwargs, "grid_size": 16, "dim": 1}), torch.float64)
    a = torch.rand(3, 16, dtype=torch.float64)
    u = model(a)
    assert u.shape == (3, 16) and torch.isfinite(u).all()
    # each sample its own output: the grid axis is not mistaken for a batch or channel axis
    torch.testing.assert_close(model(a[1:2]), u[1:2])
    with pytest.raises(ValueError, match=r"shape \(batch, 16\), got \(3, 16, 16\)"):
        model(torch.ones(3, 16, 16))
    with pytest.raises(ValueError, match="1D or 2D, got dim=3"):
        build_model(name, **{**kwargs, "dim": 3})


def test_deeponet_trunk_reads_one_coordinate_in_1d():
    model = build_model("deeponet", **SMALL["deeponet"], dim=1)
    torch.testing.assert_close(model.grid_points, torch.linspace(0, 1, S)[:, None])
    assert model(torch.ones(2, S), torch.rand(5, 1)).shape == (2, 5)
    with pytest.raises(ValueError, match=r"points of shape \(n_points, 1\)"):
        model(torch.ones(2, S), torch.rand(5, 2))


def test_the_burgers_deeponet_config_has_the_authors_parameter_count():
    # branch 128 -> [128] x 4, trunk 1 -> [128] x 4, ReLU, one bias: 115 841 (the LSR authors' log)
    conf = OmegaConf.load(Path(__file__).parents[2] / "pinn_lsr/conf/model/deeponet_burgers.yaml")
    kwargs = {k: v for k, v in OmegaConf.to_container(conf.model).items() if k != "name"}
    model = build_model(conf.model.name, grid_size=128, dim=1, **kwargs)
    assert count_real_parameters(model) == 115_841 and kwargs["activation"] == "relu"
