"""Parameters seen as real numbers: complex ones (FNO's spectral weights) as (real, imag) pairs.

Jacobian products and optimisers that treat every model alike work on these real views; they
share storage with the model, so writing into a view changes the model.
"""

import torch
from torch import nn


def real_parameters(model: nn.Module, *, trainable_only: bool = True) -> dict[str, torch.Tensor]:
    """``name -> real tensor``: real parameters as they are, complex ones as ``view_as_real``
    (shape ``(*shape, 2)``), sharing storage with the model."""
    return {
        name: torch.view_as_real(p) if p.is_complex() else p
        for name, p in model.named_parameters()
        if p.requires_grad or not trainable_only
    }


def as_model_parameters(real: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Inverse of :func:`real_parameters`: views complex where the model's parameter is complex,
    ready for ``torch.func.functional_call(model, ...)``."""
    params = dict(model.named_parameters())
    return {
        name: torch.view_as_complex(t) if params[name].is_complex() else t
        for name, t in real.items()
    }


@torch.no_grad()
def add_to_real_parameters(model: nn.Module, index: torch.Tensor, delta: torch.Tensor) -> None:
    """``θ[index] += δ`` in place, θ the flat vector of :func:`real_parameters` (in their order)."""
    real = real_parameters(model)
    flat = torch.cat([t.detach().reshape(-1) for t in real.values()])
    flat[index] += delta.to(flat.dtype)
    for t, piece in zip(real.values(), torch.split(flat, [t.numel() for t in real.values()])):
        t.copy_(piece.reshape(t.shape))


def count_real_parameters(model: nn.Module) -> int:
    """Number of real trainable parameters (a complex one counts twice)."""
    return sum(t.numel() for t in real_parameters(model).values())


def set_precision(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast real parameters and buffers to ``dtype`` (float32/float64) and complex ones to the
    complex type of the same precision; returns ``model``.

    ``model.to(dtype)`` would drop the imaginary part of FNO's spectral weights.
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    complex_dtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_complex():
                tensor.data = tensor.data.to(complex_dtype)
            elif tensor.is_floating_point():
                tensor.data = tensor.data.to(dtype)
    return model
