"""Networks seen as separable models ``ŷ = scale · [z(θ; x), 1] Wᵀ + shift``.

``z(θ; x)`` are the features before the final affine layer (θ: every other trainable
parameter, as one flat real vector) and ``W`` (n_outputs, n_features + 1) is the affine layer
with its bias in the last column. ``scale`` and ``shift`` are the model's output normalisation
(1 and 0 when it has none). Supported:

* :class:`~pinn_lsr.models.mlp.MLP`: ``W`` is the last ``nn.Linear`` of ``model.net``;
* ``nn.Sequential`` ending in ``nn.Linear``;
* :class:`~pinn_lsr.models.deeponet.DeepONet`: ``u(a)(x) = Σ_k w_k b_k(a) t_k(x) + b_0``, the
  combination weights ``w`` over the latent features plus the bias ``b_0`` form ``W``
  (1, latent + 1); the features of a row (sample, point) are ``b_k(a) t_k(x)``. The model
  itself has ``w = 1``;
  :meth:`SeparableModel.write` folds ``w`` into the branch net's last linear layer.
"""

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

from pinn_lsr.models.deeponet import DeepONet
from pinn_lsr.models.mlp import MLP


class FlatParameters:
    """The trainable parameters of ``module`` as one flat vector θ (m,), and back. Local."""

    def __init__(self, module: nn.Module, *, exclude: tuple[str, ...] = ()):
        named = [
            (n, p) for n, p in module.named_parameters() if p.requires_grad and n not in exclude
        ]
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
    """Features at θ and products with their Jacobian ``J_Z = ∂vec(Z)/∂θ``. Local (this rank's
    rows).

    The forward graph is kept: ``vjp`` is one backward pass through it; ``jvp`` differentiates
    the backward pass once more (the double-vjp identity J v = ∂/∂u ⟨J_Zᵀ u, v⟩), a graph
    built on the first call and reused, which is 3× faster than torch.func.jvp on small networks.

    Attributes:
        Z: (n_rows_local, n_features) the features z(θ) (no constant column), detached.
    """

    def __init__(self, features: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor):
        self._theta = theta.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            self._Z = features(self._theta)
        self.Z = self._Z.detach()
        self._dual = None

    def vjp(self, G: torch.Tensor) -> torch.Tensor:
        """J_Zᵀ G for G (n_rows_local, n_features) -> (m,), summed over this rank's rows."""
        return torch.autograd.grad(self._Z, self._theta, G, retain_graph=True, allow_unused=True)[
            0
        ].detach()

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """J_Z v for v (m,) -> (n_rows_local, n_features)."""
        if self._dual is None:
            with torch.enable_grad():
                u = torch.zeros_like(self._Z, requires_grad=True)
                pulled = torch.autograd.grad(self._Z, self._theta, u, create_graph=True)[0]
            self._dual = (u, pulled)
        u, pulled = self._dual
        return torch.autograd.grad(pulled, u, v, retain_graph=True)[0].detach()


class SeparableModel:
    """A model split into features z(θ; x) and a final affine layer W. See the module docstring.

    Subclasses define ``prepare``, ``_features`` and ``rows``; ``theta_parameters`` holds θ.
    """

    theta_parameters: FlatParameters
    scale: float  # output normalisation: ŷ = scale · (...) + shift
    shift: float
    n_outputs: int  # rows of W

    def prepare(self, inputs: torch.Tensor):
        """The network's inputs for :meth:`features` (e.g. normalised). Local."""
        raise NotImplementedError

    def _features(self, params: dict, prepared) -> torch.Tensor:
        raise NotImplementedError

    def rows(self, targets: torch.Tensor) -> torch.Tensor:
        """Targets as (n_rows, n_outputs), one row per feature row."""
        raise NotImplementedError

    rows_per_sample: int = 1  # feature rows per input sample

    def get_weights(self) -> torch.Tensor:
        """W (n_outputs, n_features + 1) as currently in the model (bias last)."""
        raise NotImplementedError

    def set_weights(self, W: torch.Tensor) -> None:
        raise NotImplementedError

    def features(self, theta: torch.Tensor, prepared) -> torch.Tensor:
        """z(θ; x): (n_rows, n_features)."""
        return self._features(self.theta_parameters.as_dict(theta), prepared)

    def linearize(self, theta: torch.Tensor, prepared) -> FeatureLinearization:
        """Features at θ with Jacobian products. Local."""
        return FeatureLinearization(lambda t: self.features(t, prepared), theta)

    def theta(self) -> torch.Tensor:
        """θ (m,) as currently in the model."""
        return self.theta_parameters.flatten()

    def write(self, theta: torch.Tensor, W: torch.Tensor) -> None:
        """Put θ and W into the model, in place."""
        self.theta_parameters.write(theta)
        self.set_weights(W)


class LinearHeadSeparable(SeparableModel):
    """``body`` (a module) followed by ``head`` (nn.Linear); optional input/output normalisers."""

    def __init__(
        self, body: nn.Module, head: nn.Linear, *, input_normalizer=None, output_normalizer=None
    ):
        self.body = body
        self.head = head
        self.input_normalizer = input_normalizer
        self.theta_parameters = FlatParameters(body)
        self.scale = float(output_normalizer.std) if output_normalizer is not None else 1.0
        self.shift = float(output_normalizer.mean) if output_normalizer is not None else 0.0
        self.n_outputs = head.out_features

    def prepare(self, inputs: torch.Tensor) -> torch.Tensor:
        flat = inputs.reshape(inputs.shape[0], -1)
        return self.input_normalizer.encode(flat) if self.input_normalizer is not None else flat

    def _features(self, params, prepared):
        return functional_call(self.body, params, (prepared,))

    def rows(self, targets):
        return targets.reshape(targets.shape[0], self.n_outputs)

    def get_weights(self):
        return torch.cat(
            [self.head.weight.detach(), self.head.bias.detach()[:, None]], dim=1
        ).clone()

    @torch.no_grad()
    def set_weights(self, W):
        self.head.weight.copy_(W[:, :-1])
        self.head.bias.copy_(W[:, -1])


class _DeepONetFeatures(nn.Module):
    """Row (sample i, point j) -> b(a_i) ⊙ t(x_j), the latent features before the contraction."""

    def __init__(self, model: DeepONet):
        super().__init__()
        self.branch = model.branch
        self.trunk = model.trunk

    def forward(self, a: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        b = self.branch(a)  # (batch, latent)
        t = self.trunk(points.to(b.dtype))  # (n_points, latent)
        return (b[:, None, :] * t[None, :, :]).reshape(-1, b.shape[1])


class DeepONetSeparable(SeparableModel):
    """DeepONet with W = (combination weights over the latent features, bias), rows (sample,
    point)."""

    def __init__(self, model: DeepONet, points: torch.Tensor | None = None):
        self.model = model
        self.points = model.grid_points if points is None else points
        self.body = _DeepONetFeatures(model)
        self.theta_parameters = FlatParameters(self.body)
        self.scale = float(model.output_normalizer.std)
        self.shift = float(model.output_normalizer.mean)
        self.n_outputs = 1
        self.rows_per_sample = len(self.points)
        self._latent_map = _last_linear(model.branch)
        self.latent = self._latent_map.out_features

    def prepare(self, inputs):
        return self.model.input_normalizer.encode(inputs)

    def _features(self, params, prepared):
        return functional_call(self.body, params, (prepared, self.points))

    def rows(self, targets):
        return targets.reshape(-1, 1)

    def get_weights(self):
        ones = torch.ones(1, self.latent, dtype=self.model.bias.dtype)
        return torch.cat([ones, self.model.bias.detach().reshape(1, 1)], dim=1)

    @torch.no_grad()
    def set_weights(self, W):
        w = W[0, :-1]
        self._latent_map.weight.mul_(w[:, None])
        self._latent_map.bias.mul_(w)
        self.model.bias.copy_(W[0, -1])


def _last_linear(module: nn.Module) -> nn.Linear:
    last = list(module.modules())[-1]
    if not isinstance(last, nn.Linear):
        raise ValueError(
            f"expected the branch net to end in nn.Linear, found {type(last).__name__}"
        )
    return last


def as_separable(model: nn.Module, *, points: torch.Tensor | None = None) -> SeparableModel:
    """The separable view of ``model`` (shares its parameters: :meth:`SeparableModel.write`
    changes it).

    Args:
        model: an MLP, a DeepONet, or an ``nn.Sequential`` whose last module is ``nn.Linear``.
        points: DeepONet only: (n_points, 2) target points (default: the grid nodes).

    Raises:
        ValueError: the model has no final affine layer; the message names the last layer found.
        TypeError: complex parameters (FNO's spectral weights are not supported).
    """
    if isinstance(model, DeepONet):
        if model.out_channels != 1:
            raise ValueError(
                "GNvpro supports DeepONets with one output channel, "
                f"got out_channels={model.out_channels}"
                " (a vector problem: use model=mlp)"
            )
        return DeepONetSeparable(model, points)
    if isinstance(model, MLP):
        body, name = model.net, "net"
        normalizers = {
            "input_normalizer": model.input_normalizer,
            "output_normalizer": model.output_normalizer,
        }
    elif isinstance(model, nn.Sequential):
        body, name, normalizers = model, "", {}
    else:
        last_name, last = list(model.named_modules())[-1]
        raise ValueError(
            f"GNvpro needs an MLP, a DeepONet or an nn.Sequential ending in nn.Linear; "
            f"got {type(model).__name__}, whose last layer is {last_name!r} ({type(last).__name__})"
        )
    if len(body) < 2 or not isinstance(body[-1], nn.Linear):
        index = len(body) - 1
        raise ValueError(
            f"GNvpro needs a final affine layer (nn.Linear); the last layer "
            f"{name + '.' if name else ''}{index} is {type(body[-1]).__name__}"
        )
    return LinearHeadSeparable(nn.Sequential(*body[:-1]), body[-1], **normalizers)
