import pytest
import torch
from mpi4py import MPI

from tests.physics.physics_cases import FieldModel, tiny_fno

COMM = MPI.COMM_SELF


@pytest.mark.parametrize("norm", ["energy", "l2"])
def test_gradient_is_the_adjoint_of_the_tangent_images(fem, norm):
    """``gᵀ t = Σ_k (W A Φ_k t)ᵀ r0_k``: the reverse-mode pullback and the forward-mode tangent
    agree (in the energy norm W A = I on the tangent side, A symmetric). FieldModel computes in
    float64 throughout (the tiny FNO agrees only to ~1e-7 here)."""
    residual = fem.residual(FieldModel(36), norm=norm)
    t = torch.randn(residual.jacobian.n_params, 1, generator=torch.Generator().manual_seed(0))
    Phi = residual.tangent_fields(t.to(residual.jacobian.dtype))
    K, Y = residual.images(Phi)
    forward = sum(float(X[:, 0] @ r) for X, r in zip(Y if norm == "energy" else K, residual.r0))
    backward = float(residual.gradient() @ t[:, 0].double())
    assert backward == pytest.approx(forward, rel=1e-10)


def test_nan_in_the_network_output_is_rejected(fem):
    model = tiny_fno(6)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        fem.residual(model)


@pytest.mark.parametrize("norm", ["energy", "l2"])
def test_the_gradient_strips_sum_to_the_gradient_and_each_holds_one_band(fem, norm):
    residual = fem.residual(tiny_fno(6), norm=norm)
    strips = residual.gradient_strips(3)
    assert strips.shape == (residual.jacobian.n_params, 3)
    g = residual.gradient()
    # as far as the network's products are exact (the tiny FNO: ~1e-9 of the largest entry)
    torch.testing.assert_close(strips.sum(dim=1), g, rtol=0, atol=1e-7 * float(g.abs().max()))
    # the pieces are independent directions (each band of grid rows pulls back its own gradient)
    assert torch.linalg.matrix_rank(strips) == 3
