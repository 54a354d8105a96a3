"""Networks seen as separable models: outputs bilinear in eliminated linear weights.

A :class:`SeparableModel` splits a network's trainable parameters into θ (one flat real vector)
and linear weights ``(W, β)`` (:class:`LinearWeights`) such that, for fixed θ, the outputs are
linear in ``(W, β)``:

    ŷ[i, x] = scale · ([h(θ; a_i), 1] Wᵀ t(θ; x)ᵀ + β) + shift,

``h`` (n_samples, n_left) the left features of each sample, ``t`` (n_values, n_right) the right
features of each output value (or the identity when the model has none: then ``x`` indexes the
n_right outputs), ``W`` (n_right, n_left + 1) a linear layer with its bias in the last column,
``β`` a scalar offset (or none), ``scale`` and ``shift`` the model's output normalisation (1 and
0 when it has none). The structure is the one a model declares
(:class:`~pinn_lsr.models.bilinear.BilinearOutput`):

* :class:`~pinn_lsr.models.mlp.MLP` and ``nn.Sequential`` ending in ``nn.Linear``: W is the last
  layer, no right features, no offset (the affine case);
* :class:`~pinn_lsr.models.deeponet.DeepONet`: W is the branch net's last linear layer, ``t`` the
  trunk net at the target points, ``β`` its bias: ``Σ_l (W [h(a_i), 1])_l t_l(x) + β``.
"""

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn
from torch.func import functional_call

from pinn_lsr.models.bilinear import BilinearOutput, HasBilinearOutput, split_last_linear


class LinearWeights(NamedTuple):
    """The eliminated linear parameters of a :class:`SeparableModel`."""

    W: torch.Tensor  # (n_right, n_left + 1), the linear layer's weight with its bias last
    offset: torch.Tensor | None  # () the scalar β added to every output; None without one


class FlatParameters:
    """The trainable parameters of ``module`` as one flat vector θ (m,), and back. Local."""

    def __init__(self, module: nn.Module):
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        complex_names = [n for n, p in named if p.is_complex()]
        if complex_names:
            raise TypeError(f"GNvpro supports real parameters only; complex: {complex_names}")
        self.module = module
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.buffers = dict(module.named_buffers())

    def flatten(self) -> torch.Tensor:
        """θ (m,): a detached copy of the current parameters."""
        params = dict(self.module.named_parameters())
        return torch.cat([params[n].detach().reshape(-1) for n in self.names]).clone()

    def as_dict(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """``name -> tensor`` views of θ plus the module's buffers, for ``functional_call``."""
        pieces = torch.split(theta, self.sizes)
        return {
            **dict(zip(self.names, (p.reshape(s) for p, s in zip(pieces, self.shapes)))),
            **self.buffers,
        }

    @torch.no_grad()
    def write(self, theta: torch.Tensor) -> None:
        """Copy θ into the module's parameters."""
        params = dict(self.module.named_parameters())
        for name, piece in zip(self.names, torch.split(theta.detach(), self.sizes)):
            params[name].copy_(piece.reshape(params[name].shape))


class FeatureLinearization:
    """Features at θ and products with their Jacobian ``J = ∂(features)/∂θ``. Local (this rank's
    rows).

    ``features(θ)`` returns a tuple of tensors (the left features, and the right features where the
    model has them); products take and return tuples of the same shapes. The forward graph is
    kept: ``vjp`` is one backward pass through it; ``jvp`` differentiates the backward pass once
    more (the double-vjp identity J v = ∂/∂u ⟨Jᵀ u, v⟩), a graph built on the first call and
    reused, which is 3× faster than torch.func.jvp on small networks.

    Attributes:
        values: the features at θ, detached: a tuple of (n_rows_k, n_features_k) tensors.
    """

    def __init__(
        self, features: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], theta: torch.Tensor
    ):
        self._theta = theta.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            self._values = features(self._theta)
        self.values = tuple(value.detach() for value in self._values)
        self._dual = None

    def vjp(self, cotangents: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Jᵀ G for cotangents G shaped like ``values`` -> (m,), this rank's rows only."""
        return torch.autograd.grad(
            self._values, self._theta, cotangents, retain_graph=True, allow_unused=True
        )[0].detach()

    def jvp(self, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """J v for v (m,) -> tensors shaped like ``values``."""
        if self._dual is None:
            with torch.enable_grad():
                u = tuple(torch.zeros_like(value, requires_grad=True) for value in self._values)
                pulled = torch.autograd.grad(self._values, self._theta, u, create_graph=True)[0]
            self._dual = (u, pulled)
        u, pulled = self._dual
        return tuple(d.detach() for d in torch.autograd.grad(pulled, u, v, retain_graph=True))


class SeparableModel:
    """Trainable parameters θ (``theta_parameters``) and the features they give; subclasses
    define ``prepare``, ``_features``, ``rows``, ``weights`` and ``set_weights``."""

    theta_parameters: FlatParameters
    scale: float  # output normalisation: ŷ = scale · (...) + shift
    shift: float

    def prepare(self, inputs: torch.Tensor):
        """The network's inputs for :meth:`features` (e.g. normalised). Local."""
        raise NotImplementedError

    def _features(self, params: dict, prepared) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def rows(self, targets: torch.Tensor) -> torch.Tensor:
        """Targets as (n_samples, n_values), one row per sample."""
        raise NotImplementedError

    def weights(self) -> LinearWeights:
        """The eliminated weights as currently in the model (copies)."""
        raise NotImplementedError

    def set_weights(self, weights: LinearWeights) -> None:
        raise NotImplementedError

    def features(self, theta: torch.Tensor, prepared) -> tuple[torch.Tensor, ...]:
        """The features at θ (see the subclass)."""
        return self._features(self.theta_parameters.as_dict(theta), prepared)

    def linearize(self, theta: torch.Tensor, prepared) -> FeatureLinearization:
        """Features at θ with Jacobian products. Local."""
        return FeatureLinearization(lambda t: self.features(t, prepared), theta)

    def theta(self) -> torch.Tensor:
        """θ (m,) as currently in the model."""
        return self.theta_parameters.flatten()

    def write(self, theta: torch.Tensor, weights: LinearWeights) -> None:
        """Put θ and the weights into the model, in place."""
        self.theta_parameters.write(theta)
        self.set_weights(weights)


class _Features(nn.Module):
    """(prepared inputs, points) -> (h (n, n_left),) or (h, t (n_points, n_right))."""

    def __init__(self, left: nn.Module, right: nn.Module | None):
        super().__init__()
        self.left = left
        self.right = right

    def forward(self, prepared: torch.Tensor, points: torch.Tensor | None):
        h = self.left(prepared)
        return (h,) if self.right is None else (h, self.right(points.to(h.dtype)))


class BilinearSeparable(SeparableModel):
    """The separable view of a :class:`~pinn_lsr.models.bilinear.BilinearOutput` (module
    docstring): θ = the left and right features' parameters, weights = (head, offset).

    Attributes:
        n_left, n_right: the head's input and output sizes (W is (n_right, n_left + 1)).
        has_right: the model has right features (else t is the identity).
        n_values: output values per sample: the number of points, or n_right.
    """

    def __init__(self, structure: BilinearOutput, points: torch.Tensor | None = None):
        if structure.right is None and points is not None:
            raise ValueError("points apply to models with right features (a DeepONet's trunk)")
        self.structure = structure
        self.head = structure.head
        self.offset = structure.offset
        self.n_left, self.n_right = self.head.in_features, self.head.out_features
        self.has_right = structure.right is not None
        self.points = structure.points if points is None else points
        self.n_values = len(self.points) if self.has_right else self.n_right
        self.body = _Features(structure.left, structure.right)
        self.theta_parameters = FlatParameters(self.body)
        normalizer = structure.output_normalizer
        self.scale = float(normalizer.std) if normalizer is not None else 1.0
        self.shift = float(normalizer.mean) if normalizer is not None else 0.0

    def prepare(self, inputs):
        normalizer = self.structure.input_normalizer
        return normalizer.encode(inputs) if normalizer is not None else inputs

    def _features(self, params, prepared):
        return functional_call(self.body, params, (prepared, self.points))

    def rows(self, targets):
        return targets.reshape(targets.shape[0], self.n_values)

    def weights(self) -> LinearWeights:
        W = torch.cat([self.head.weight.detach(), self.head.bias.detach()[:, None]], dim=1)
        offset = self.offset.detach().clone() if self.offset is not None else None
        return LinearWeights(W.clone(), offset)

    @torch.no_grad()
    def set_weights(self, weights: LinearWeights) -> None:
        self.head.weight.copy_(weights.W[:, :-1])
        self.head.bias.copy_(weights.W[:, -1])
        if self.offset is not None:
            self.offset.copy_(weights.offset)


def as_separable(model: nn.Module, *, points: torch.Tensor | None = None) -> BilinearSeparable:
    """The separable view of ``model`` (shares its parameters: :meth:`SeparableModel.write`
    changes it).

    Args:
        model: a model with ``bilinear_output()`` (MLP, DeepONet;
            :class:`~pinn_lsr.models.bilinear.HasBilinearOutput`), or an ``nn.Sequential`` whose
            last module is ``nn.Linear``.
        points: models with right features only: (n_points, d) target points (default: the
            model's, e.g. a DeepONet's grid nodes).

    Raises:
        ValueError: the model declares no bilinear output and has no final affine layer (the
            message names the last layer found), or a DeepONet with several output channels.
        TypeError: complex parameters (FNO's spectral weights are not supported).
    """
    if isinstance(model, HasBilinearOutput):
        structure = model.bilinear_output()
    elif isinstance(model, nn.Sequential):
        left, head = split_last_linear(model)
        structure = BilinearOutput(left=left, head=head)
    else:
        last_name, last = list(model.named_modules())[-1]
        raise ValueError(
            "GNvpro needs a model that declares bilinear_output() (MLP, DeepONet) or an "
            f"nn.Sequential ending in nn.Linear; got {type(model).__name__}, whose last layer is "
            f"{last_name!r} ({type(last).__name__})"
        )
    return BilinearSeparable(structure, points)
