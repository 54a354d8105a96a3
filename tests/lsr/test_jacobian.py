import pytest
import torch
from torch import nn

from pinn_lsr.lsr.jacobian import ModelJacobian, select_parameters
from pinn_lsr.models import build_model
from pinn_lsr.models.parameters import set_precision


def small_fno():
    torch.manual_seed(0)
    return set_precision(build_model("fno", grid_size=8, modes=3, width=4, layers=1), torch.float64)


class ComplexFilter(nn.Module):
    """y = Re(ifft(w ⊙ fft(x))) + b: a complex parameter in a float64 computation throughout."""

    def __init__(self, n):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(n // 2 + 1, dtype=torch.complex128, generator=g))
        self.b = nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, x):
        return torch.tanh(torch.fft.irfft(self.w * torch.fft.rfft(x), n=x.shape[-1])) + self.b


def central_difference(jac, t, eps):
    return (jac.outputs(jac.theta0 + eps * t) - jac.outputs(jac.theta0 - eps * t)) / (2 * eps)


def test_complex_parameter_products_match_finite_differences():
    model = ComplexFilter(16)
    x = torch.randn(4, 16, dtype=torch.float64)
    jac = ModelJacobian(model, x, chunk_samples=3, chunk_tangents=2)
    assert jac.n_params == 2 * 9 + 1
    T = torch.randn(jac.n_params, 3, dtype=torch.float64)
    for k in range(3):
        torch.testing.assert_close(
            jac.jvp(T[:, k]), central_difference(jac, T[:, k], 1e-6), rtol=1e-7, atol=1e-9
        )


def test_fno_products_match_finite_differences_to_its_single_precision_core():
    """neuraloperator 2.0.0's SpectralConv accumulates its Fourier modes in complex64 whatever
    the weights' dtype, so even a float64 FNO is single-precision inside (evaluation noise
    ~1e-10 against a curvature error ~eps²): the best central difference has ~1e-5 relative
    error."""
    model = small_fno()
    a = torch.rand(3, 8, 8, dtype=torch.float64) * 9 + 3
    jac = ModelJacobian(model, a, chunk_samples=2, chunk_tangents=3)
    t = torch.randn(jac.n_params, dtype=torch.float64)
    fd = central_difference(jac, t, 3e-4)
    torch.testing.assert_close(jac.jvp(t), fd, rtol=0, atol=1e-4 * fd.abs().max().item())
    # the complex weights are among the parameters that move
    assert jac.n_params == sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


def test_vjp_is_the_adjoint_of_jvp_and_full_matches():
    model = small_fno()
    a = torch.rand(3, 8, 8, dtype=torch.float64)
    jac = ModelJacobian(model, a, chunk_samples=2, chunk_tangents=2)
    T = torch.randn(jac.n_params, 5, dtype=torch.float64)
    W = torch.randn(jac.n_rows, 4, dtype=torch.float64)
    torch.testing.assert_close(
        W.T @ jac.jvp(T), jac.vjp(W).T @ T, rtol=1e-6, atol=1e-8
    )  # single-precision core
    sub = ModelJacobian(model, a[:1], index=select_parameters(model, fraction=0.05, seed=1))
    torch.testing.assert_close(sub.full() @ T[sub.index, 0], sub.jvp(T[sub.index, 0]))


def test_parameter_selection():
    model = build_model("mlp", in_features=2, out_features=1, width=8, depth=2)
    index = select_parameters(model, names=["net.4"])
    assert len(index) == 9 and index.max() == 8 * 2 + 8 + 64 + 8 + 9 - 1
    fraction = select_parameters(model, fraction=0.5, seed=3)
    assert 0.3 * 105 < len(fraction) < 0.7 * 105
    torch.testing.assert_close(fraction, select_parameters(model, fraction=0.5, seed=3))
    with pytest.raises(ValueError, match="no parameter matches"):
        select_parameters(model, names=["head"])


def test_model_without_trainable_parameters_is_rejected():
    frozen = nn.Linear(2, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        ModelJacobian(frozen, torch.ones(3, 2))


def test_products_through_the_kept_single_chunk_maps_equal_the_chunked_ones():
    """One sample chunk keeps its pullback and its transpose (the one-tangent jvp): the same
    products as fresh forward- and reverse-mode ones over several chunks."""
    model = ComplexFilter(16)
    x = torch.randn(4, 16, dtype=torch.float64)
    kept = ModelJacobian(model, x, chunk_samples=4)
    chunked = ModelJacobian(model, x, chunk_samples=3)
    t = torch.randn(kept.n_params, dtype=torch.float64)
    W = torch.randn(kept.n_rows, 3, dtype=torch.float64)
    for _ in range(2):  # the second call reuses the kept maps
        torch.testing.assert_close(kept.jvp(t), chunked.jvp(t), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(kept.vjp(W), chunked.vjp(W), rtol=1e-12, atol=1e-12)
    assert kept._kept_maps() is not None and chunked._kept_maps() is None
