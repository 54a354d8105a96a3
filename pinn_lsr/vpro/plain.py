"""Gauss–Newton without variable projection: every parameter nonlinear (the baseline for GNvpro).

``Φ(θ) = ½‖(q(θ; x) − y)/√N‖² + (α_θ/2)‖θ − θ_ref‖²`` over all trainable parameters θ of the
model (final layer included), N the number of target entries; the same optimisers apply.
"""

import math

import torch
from torch import nn
from torch.func import functional_call

from pinn_lsr.vpro.problem import Point, ReducedProblem
from pinn_lsr.vpro.separable import FlatParameters, LinearWeights, SeparableModel


class WholeModel(SeparableModel):
    """The model's outputs (n, n_outputs) as the only 'features', nothing eliminated (W is
    empty)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.theta_parameters = FlatParameters(model)
        self.scale, self.shift = 1.0, 0.0

    def prepare(self, inputs):
        return inputs

    def _features(self, params, prepared):
        outputs = functional_call(self.model, params, (prepared,))
        return (outputs.reshape(len(prepared), -1),)

    def rows(self, targets):
        return targets.reshape(targets.shape[0], -1)

    def weights(self):
        return LinearWeights(torch.zeros(0, 0), None)

    def set_weights(self, weights):
        pass


class PlainPoint(Point):
    """A point of :class:`PlainSquaredProblem` with its local caches."""

    def __init__(self, *, linearization, E, **kwargs):
        super().__init__(**kwargs)
        self.linearization = linearization
        self.E = E  # (n_local, n_outputs), (q(θ) − y)/√N


class PlainSquaredProblem(ReducedProblem):
    """Mean squared error over all parameters. Collective on ``comm``."""

    def __init__(self, separable: WholeModel, inputs, targets, **kwargs):
        super().__init__(separable, inputs, targets, **kwargs)
        self.Y = separable.rows(targets)
        self.row_scale = 1.0 / math.sqrt(self.comm.allreduce(self.Y.numel()))

    def evaluate(self, theta, start=None) -> PlainPoint:
        linearization = self.separable.linearize(theta, self.prepared)
        self.count(1)
        E = self.row_scale * (linearization.values[0] - self.Y)
        mse = float(self.allreduce(E.pow(2).sum()))
        return PlainPoint(
            theta=theta,
            weights=self.separable.weights(),
            objective=0.5 * mse + self.theta_penalty(theta),
            loss=mse,
            linearization=linearization,
            E=E,
        )

    def gradient(self, point) -> torch.Tensor:
        self.count(1)
        return self.allreduce(
            point.linearization.vjp((self.row_scale * point.E,))
        ) + self.alpha_theta * (point.theta - self.theta_ref)

    def gn_product(self, point, v) -> torch.Tensor:
        self.count(2)
        (Jv,) = point.linearization.jvp(v)
        return (
            self.row_scale**2 * self.allreduce(point.linearization.vjp((Jv,)))
            + self.alpha_theta * v
        )
