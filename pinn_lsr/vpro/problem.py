"""The reduced problem interface shared by the squared and cross-entropy losses, and work units.

A reduced problem is ``Φ(θ) = min_w L(θ, w) + (α_W/2)‖w‖² + (α_θ/2)‖θ − θ_ref‖²`` (w the
eliminated linear weights (W, β), :class:`~pinn_lsr.vpro.separable.LinearWeights`), the
variable projection of Newman, Ruthotto, Hart and van Bloemen Waanders, "Train Like a (Var)Pro:
Efficient Training of Neural Networks with Variable Projection", SIAM J. Math. Data Sci. 2021.
:meth:`ReducedProblem.evaluate` computes w(θ) and Φ(θ) and returns a :class:`Point`; gradients
and Gauss–Newton products are taken at a point.

Work units (the paper's accounting), counted in passes over the *whole* training set: a
forward pass of the network through the data is 1, a backward pass 1, a Gauss–Newton product
``Jᵀ C J v`` (one forward-mode and one reverse-mode Jacobian product) 2. Work on the features
alone (solving for w, the cross-entropy inner Newton–Krylov iterations) is not counted: it does
not touch the network. A problem built on a mini-batch counts its passes by the batch's share.
"""

from dataclasses import dataclass, field

import torch
from mpi4py import MPI

from pinn_lsr.vpro.reductions import allreduce_sum
from pinn_lsr.vpro.separable import LinearWeights, SeparableModel


@dataclass
class WorkCounter:
    """Work units spent so far (see the module docstring)."""

    units: float = 0.0


@dataclass
class Point:
    """A reduced problem evaluated at θ. Identical on every rank except the local caches."""

    theta: torch.Tensor  # (m,), the nonlinear parameters
    weights: LinearWeights  # w(θ) = (W(θ), β(θ)), the eliminated linear weights
    objective: float  # Φ(θ), regularisation included
    loss: float  # the data term: mean squared error over all target entries, or mean cross-entropy
    info: dict = field(default_factory=dict)  # solver facts for the history (e.g. inner iterations)


class ReducedProblem:
    """Common data handling of the reduced problems. Collective on ``comm`` (every method).

    Args:
        separable: the model's separable view (:func:`~pinn_lsr.vpro.separable.as_separable`).
        inputs: (n_samples_local, ...) this rank's inputs.
        targets: this rank's targets, one row per feature row after ``separable.rows``.
        alpha_W, alpha_theta: Tikhonov weights α_W, α_θ ≥ 0.
        theta_ref: θ_ref (m,) (default zeros).
        work: counter shared with the optimiser.
        fraction: share of the whole training set these samples are (for work units).
    """

    def __init__(
        self,
        separable: SeparableModel,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        *,
        alpha_W: float,
        alpha_theta: float,
        theta_ref: torch.Tensor | None,
        comm: MPI.Comm,
        work: WorkCounter,
        fraction: float = 1.0,
    ):
        if alpha_W < 0 or alpha_theta < 0:
            raise ValueError(
                f"Tikhonov weights must be >= 0, got alpha_W={alpha_W}, alpha_theta={alpha_theta}"
            )
        self.separable = separable
        self.inputs = inputs
        self.targets = targets
        self.prepared = separable.prepare(inputs)
        self.alpha_W = float(alpha_W)
        self.alpha_theta = float(alpha_theta)
        theta0 = separable.theta()
        self.theta_ref = (
            torch.zeros_like(theta0) if theta_ref is None else theta_ref.to(theta0.dtype)
        )
        if self.theta_ref.shape != theta0.shape:
            raise ValueError(
                f"theta_ref must have shape {tuple(theta0.shape)}, "
                f"got {tuple(self.theta_ref.shape)}"
            )
        self.comm = comm
        self.work = work
        self.fraction = fraction
        self.n_samples = comm.allreduce(len(inputs))

    def subset(self, samples: torch.Tensor) -> "ReducedProblem":
        """The same problem on this rank's samples ``samples`` (local indices). Collective."""
        n_subset = self.comm.allreduce(len(samples))
        return type(self)(
            self.separable,
            self.inputs[samples],
            self.targets[samples],
            alpha_W=self.alpha_W,
            alpha_theta=self.alpha_theta,
            theta_ref=self.theta_ref,
            comm=self.comm,
            work=self.work,
            fraction=self.fraction * n_subset / self.n_samples,
        )

    def theta_penalty(self, theta: torch.Tensor) -> float:
        """(α_θ/2)‖θ − θ_ref‖²."""
        return 0.5 * self.alpha_theta * float((theta - self.theta_ref).pow(2).sum())

    def allreduce(self, tensor: torch.Tensor) -> torch.Tensor:
        return allreduce_sum(tensor, self.comm)

    def count(self, passes: float) -> None:
        self.work.units += passes * self.fraction

    def evaluate(self, theta: torch.Tensor, start: Point | None = None) -> Point:
        """w(θ) and Φ(θ); ``start`` may warm-start an iterative inner solve. 1 work unit."""
        raise NotImplementedError

    def gradient(self, point: Point) -> torch.Tensor:
        """∇Φ(θ) (m,). 1 work unit."""
        raise NotImplementedError

    def gn_product(self, point: Point, v: torch.Tensor) -> torch.Tensor:
        """(J_redᵀ C J_red + α_θ I) v for v (m,): the Gauss–Newton matrix of Φ at the point.
        2 work units."""
        raise NotImplementedError

    def write(self, point: Point) -> None:
        """Put θ and the weights of ``point`` into the model."""
        self.separable.write(point.theta, point.weights)
