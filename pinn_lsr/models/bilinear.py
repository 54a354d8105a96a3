"""A network's output declared bilinear in one linear layer's weights (for variable projection).

A model whose output is

    y[i, x] = decode([h(a_i), 1] Wᵀ t(x)ᵀ + β),  W = [head.weight, head.bias] (n_right, n_left + 1)

with ``h`` (the *left* features of sample ``a_i``) and ``t`` (the *right* features of output
point ``x``) not depending on ``W`` or ``β``, is linear in ``(W, β)`` for fixed features:
``pinn_lsr.vpro`` eliminates them by a least-squares solve. A model declares the structure by a
``bilinear_output()`` method (:class:`HasBilinearOutput`):

* an MLP: ``h`` = the last hidden layer, ``head`` = the last ``nn.Linear``, no right features
  (``t`` is the identity: ``x`` indexes the ``n_right`` outputs), no ``β``;
* a DeepONet: ``h`` = the branch net before its last ``nn.Linear`` (the ``head``), ``t`` = the
  trunk net at the points, ``β`` = its scalar bias.
"""

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from pinn_lsr.models.normalization import Normalizer


@dataclass(frozen=True)
class BilinearOutput:
    """The bilinear structure of a model's output (module docstring). Shares the model's
    parameters.

    Attributes:
        left: encoded inputs (n, ...) -> h (n, n_left).
        head: ``nn.Linear(n_left, n_right)``, the eliminated weights W (with its bias).
        right: points (n_points, d) -> t (n_points, n_right); None: t is the identity.
        points: the default points (n_points, d) of ``right`` (None when ``right`` is None).
        offset: the scalar β () added to every output, or None.
        input_normalizer: ``encode`` applied to the inputs before ``left``, or None.
        output_normalizer: ``decode`` applied to the output (scalar statistics), or None.
    """

    left: nn.Module
    head: nn.Linear
    right: nn.Module | None = None
    points: torch.Tensor | None = None
    offset: nn.Parameter | None = None
    input_normalizer: Normalizer | None = None
    output_normalizer: Normalizer | None = None


@runtime_checkable
class HasBilinearOutput(Protocol):
    """A model that declares its :class:`BilinearOutput`."""

    def bilinear_output(self) -> BilinearOutput: ...


def split_last_linear(module: nn.Sequential, name: str = "") -> tuple[nn.Sequential, nn.Linear]:
    """``module`` as (everything before its last leaf, that leaf), descending into trailing
    nested ``nn.Sequential``s; the pieces share ``module``'s parameters.

    Raises:
        ValueError: the last leaf is not ``nn.Linear`` or nothing precedes it; the message names
            the last layer found (``name`` prefixes its path).
    """
    body: list[nn.Module] = []
    last, path = module, name
    while isinstance(last, nn.Sequential) and len(last):
        *before, last = last
        body += before
        path = f"{path + '.' if path else ''}{len(before)}"
    if not isinstance(last, nn.Linear) or not body:
        raise ValueError(
            f"expected a final affine layer (nn.Linear) after at least one other layer; the last "
            f"layer {path or 'of the network'} is {type(last).__name__}"
        )
    return nn.Sequential(*body), last
