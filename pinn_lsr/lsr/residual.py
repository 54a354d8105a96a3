"""Residuals for LSR: ``f(θ) = w ⊙ (q(θ) - y)`` with rows split across MPI ranks.

``q`` are the model outputs on this rank's samples (flattened), ``y`` the targets, ``w`` row
weights (per-sample weights repeated over each sample's outputs, e.g. ``1/||y_i||`` so that
the squared residual is the sum of squared relative errors). Its Jacobian is ``G = diag(w) J``.
"""

from dataclasses import dataclass

import torch
from mpi4py import MPI

from pinn_lsr.lsr.jacobian import ModelJacobian


def relative_weights(targets: torch.Tensor) -> torch.Tensor:
    """Per-sample weights ``1 / ||y_i||`` (targets (n_samples, n_outputs) -> (n_samples,))."""
    norms = torch.linalg.vector_norm(targets.reshape(len(targets), -1), dim=1)
    if not torch.all(norms > 0):
        raise ValueError("relative weights need targets with non-zero norm in every sample")
    return 1.0 / norms


@dataclass
class DataResidual:
    """``f(θ) = w ⊙ (q(θ) - y)`` on this rank's rows.

    Attributes:
        jacobian: products with J for this rank's inputs.
        targets: (n_rows,) flattened targets.
        row_weights: (n_rows,) or None for unit weights.
    """

    jacobian: ModelJacobian
    targets: torch.Tensor
    row_weights: torch.Tensor | None = None

    @classmethod
    def create(
        cls,
        jacobian: ModelJacobian,
        targets: torch.Tensor,
        *,
        relative: bool = False,
        comm: MPI.Comm = MPI.COMM_WORLD,
    ) -> "DataResidual":
        """Check the shapes and values (collectively) and build the residual; ``relative``
        weighs each sample by ``1/||y_i||``.

        Raises (on every rank alike): ValueError for mismatched lengths, NaN/Inf, or a target of
        zero norm with ``relative``.
        """
        n_samples = len(jacobian.inputs)
        problems = []
        if len(targets) != n_samples:
            problems.append(f"inputs and targets differ in length: {n_samples} vs {len(targets)}")
        elif targets.reshape(n_samples, -1).shape[1] != jacobian.n_outputs:
            problems.append(
                f"targets have {targets.reshape(n_samples, -1).shape[1]} values per sample, "
                f"the model gives {jacobian.n_outputs}"
            )
        elif not torch.isfinite(targets).all():
            problems.append("targets contain NaN or infinite values")
        elif relative and not torch.all(
            torch.linalg.vector_norm(targets.reshape(n_samples, -1), dim=1) > 0
        ):
            problems.append("relative weights need targets with non-zero norm in every sample")
        problems = sorted(set(sum(comm.allgather(problems), [])))
        if problems:
            raise ValueError("; ".join(problems))
        targets = targets.to(jacobian.device)
        rows = None
        if relative:
            rows = (
                relative_weights(targets).to(jacobian.dtype).repeat_interleave(jacobian.n_outputs)
            )
        return cls(jacobian, targets.reshape(-1).to(jacobian.dtype), rows)

    def subset(self, samples: torch.Tensor) -> "DataResidual":
        """The residual restricted to this rank's samples ``samples`` (indices or a boolean
        mask)."""
        jac = self.jacobian
        samples = samples.to(jac.device)
        per_sample = lambda rows: rows.reshape(len(jac.inputs), -1)[samples].reshape(-1)  # noqa: E731
        weights = None if self.row_weights is None else per_sample(self.row_weights)
        return DataResidual(
            self._jacobian_on(jac.inputs[samples]), per_sample(self.targets), weights
        )

    def rechunked(self, **chunks) -> "DataResidual":
        """The same residual with other Jacobian-product chunk sizes (``chunk_samples``,
        ``chunk_tangents``, ``vjp_chunk_samples``)."""
        return DataResidual(
            self._jacobian_on(self.jacobian.inputs, **chunks), self.targets, self.row_weights
        )

    def _jacobian_on(self, inputs: torch.Tensor, **chunks) -> ModelJacobian:
        jac = self.jacobian
        return ModelJacobian(
            jac.model, inputs, index=jac.index, forward=jac.forward, **{**jac.chunks, **chunks}
        )

    def weigh(self, rows: torch.Tensor) -> torch.Tensor:
        """Apply the row weights to (n_rows,) or (n_rows, k)."""
        if self.row_weights is None:
            return rows
        return rows * (self.row_weights if rows.dim() == 1 else self.row_weights[:, None])

    def value(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """``f(θ)`` (default θ0), (n_rows,)."""
        return self.weigh(self.jacobian.outputs(theta) - self.targets)

    def G(self, T: torch.Tensor) -> torch.Tensor:
        """``G T = w ⊙ (J T)``: T (m, k) -> (n_rows, k)."""
        return self.weigh(self.jacobian.jvp(T))

    def G_blocks(self, T: torch.Tensor, f: torch.Tensor | None = None):
        """Yield ``(G T)[rows]`` and ``f(θ0)[rows]`` block by block: ((rows, k), (rows,)).

        Pass ``f = self.value()`` when it is already at hand, to save a forward pass.
        """
        f = self.value() if f is None else f
        for first, block in self.jacobian.jvp_blocks(T):
            rows = slice(first, first + len(block))
            weights = None if self.row_weights is None else self.row_weights[rows, None]
            yield (
                (block if weights is None else block.mul_(weights)),
                f[rows],
            )  # block is ours: weigh in place

    def Gt(self, W: torch.Tensor) -> torch.Tensor:
        """``Gᵀ W = Jᵀ (w ⊙ W)``: W (n_rows, k) -> (m, k), this rank's rows only."""
        return self.jacobian.vjp(self.weigh(W))
