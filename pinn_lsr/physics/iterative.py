"""Iterative LSR (I-LSR): alternate one-shot physics LSR with supervised alignment.

Each outer iteration linearizes the FEM residual at the network's current weights, refines the
field in a fresh subspace (:func:`pinn_lsr.physics.refine.refine_physics`, seed ``seed + it``),
then trains the network to reproduce the refined fields (a well-conditioned supervised fit), so
the next linearization starts closer. Both the refined fields and the network are tracked: the
refined field is the method's answer; the aligned network is what it can carry to the next step.

Where alignment happens depends on the instance set:

* built-in problems (``FEMInstances.from_pde``): on the model's grid, against the refined fields'
  grid values (:func:`align`; every rank holds the same targets);
* a user's PETSc systems or forms: on the owned dofs, against the refined owned dof values
  (:func:`align_dofs`; the squared errors and norms are summed over ranks).
"""

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from mpi4py import MPI
from torch import nn

from pinn_lsr.physics.instances import FEMInstances
from pinn_lsr.physics.refine import PhysicsRefinement, refine_physics
from pinn_lsr.train.loop import allreduce_gradients, broadcast_parameters
from pinn_lsr.train.optim import make_optimizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlignSettings:
    """Supervised alignment of the network to the refined fields (relative squared error)."""

    optimizer: str = "lbfgs"  # lbfgs (full batch, strong Wolfe) | adam
    iterations: int = 200
    lr: float = 1.0


@dataclass(frozen=True)
class ILSRSettings:
    """Outer iterations of I-LSR and the one-shot physics LSR inside each."""

    iterations: int = 5
    rank: int = 64
    norm: str = "energy"
    subspace: str = "krylov"
    block_size: int = 1  # krylov: columns per block product (block Lanczos)
    oversampling: int = 10
    petsc_options: Mapping | None = None
    align: AlignSettings = field(default_factory=AlignSettings)


def align(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    settings: AlignSettings,
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> float:
    """Fit ``model(inputs)`` to ``targets`` (K, n_outputs): mean relative squared error. Every rank
    holds the same data; rank 0's weights are broadcast at the end. Returns the final loss."""
    targets = targets.to(inputs.dtype).reshape(len(inputs), -1)
    scale = targets.pow(2).sum(dim=1)
    optimizer = make_optimizer(
        model.parameters(), settings.optimizer, lr=settings.lr, lbfgs_max_iter=settings.iterations
    )

    def loss_value():
        return ((model(inputs).reshape(len(inputs), -1) - targets).pow(2).sum(dim=1) / scale).mean()

    def closure():
        optimizer.zero_grad()
        loss = loss_value()
        loss.backward()
        return loss

    _take_steps(model, optimizer, closure, settings, comm)
    with torch.no_grad():
        return float(loss_value())


def align_dofs(
    model: nn.Module,
    fem: FEMInstances,
    targets: list[np.ndarray],
    settings: AlignSettings,
) -> float:
    """Fit the model's predictions at the owned dofs (:meth:`FEMInstances.dof_predictions`) to
    owned dof ``targets`` (n_owned,) per instance: mean over instances of
    ``||u_k − U_k||² / ||U_k||²``, both norms summed over ranks, so every rank sees the same loss
    and gradient (allreduced) and takes the same steps; rank 0's weights are broadcast at the
    end. Returns the final loss. Collective on ``fem.comm``."""
    comm = fem.comm
    dtype = next(model.parameters()).dtype
    U = torch.as_tensor(np.stack(targets).reshape(len(fem), -1)).to(dtype)
    scale = U.pow(2).sum(dim=1).double().numpy()
    comm.Allreduce(MPI.IN_PLACE, scale, op=MPI.SUM)
    scale = torch.from_numpy(scale).to(dtype)
    optimizer = make_optimizer(
        model.parameters(), settings.optimizer, lr=settings.lr, lbfgs_max_iter=settings.iterations
    )

    def local_loss():
        return ((fem.dof_predictions(model) - U).pow(2).sum(dim=1) / scale).mean()

    def closure():
        optimizer.zero_grad()
        loss = local_loss()
        loss.backward()
        allreduce_gradients(model, comm)
        return torch.tensor(comm.allreduce(float(loss.detach()), op=MPI.SUM), dtype=dtype)

    _take_steps(model, optimizer, closure, settings, comm)
    with torch.no_grad():
        return comm.allreduce(float(local_loss()), op=MPI.SUM)


def _take_steps(model: nn.Module, optimizer, closure, settings: AlignSettings, comm) -> None:
    """The alignment's optimiser steps (one L-BFGS call of ``settings.iterations`` iterations, or
    ``settings.iterations`` Adam steps), then rank 0's weights to every rank. Collective."""
    model.train()
    steps = 1 if settings.optimizer == "lbfgs" else settings.iterations
    for _ in range(steps):
        optimizer.step(closure)
    model.eval()
    broadcast_parameters(model, comm)


def iterative_lsr(
    model: nn.Module,
    fem: FEMInstances,
    settings: ILSRSettings,
    *,
    seed: int = 0,
    first: PhysicsRefinement | None = None,
    progress=None,
) -> tuple[list[np.ndarray], list[dict]]:
    """Run I-LSR on ``fem``'s instances jointly, aligning ``model`` in place. Collective.

    ``first``: a one-shot refinement of this model on these instances already computed with
    these settings and ``seed`` (it is then the first iteration's, not computed again).

    Returns the last refined fields (owned dofs per instance) and the history: one entry per
    outer iteration with ``network_rel_l2`` / ``network_residual`` (before refining),
    ``refined_rel_l2`` / ``refined_residual`` (after), ``align_loss`` and cumulative ``seconds``
    (errors: mean relative error against the FEM solutions, :meth:`FEMInstances.errors`, left
    out when the set has no references; residuals: ``||A u − b||₂``).

    Raises:
        SolverError: a reduced solve did not converge (the history so far is in the message's log).
    """
    # the clock includes a reused first refinement, so the seconds are those of the whole method
    start = time.perf_counter() - (first.report.seconds["total"] if first is not None else 0.0)
    history, fields = [], None
    inputs = fem.model_inputs(model)
    for it in range(settings.iterations):
        network = fem.network_fields(model)
        if it == 0 and first is not None:
            result = first
        else:
            result = refine_physics(
                fem.residual(model, norm=settings.norm),
                settings.rank,
                subspace=settings.subspace,
                block_size=settings.block_size,
                oversampling=settings.oversampling,
                petsc_options=settings.petsc_options,
                seed=seed + it,
            )
        fields = result.fields
        if fem.pde is not None:  # a built-in problem: align on the model's grid
            targets = torch.from_numpy(fem.on_grid(fields).reshape(len(fem), -1))
            loss = align(model, inputs, targets, settings.align, comm=fem.comm)
        else:
            loss = align_dofs(model, fem, fields, settings.align)
        entry = {
            "iteration": it + 1,
            **_errors(fem, "network_rel_l2", network),
            "network_residual": fem.residual_norm(network),
            **_errors(fem, "refined_rel_l2", fields),
            "refined_residual": fem.residual_norm(fields),
            "align_loss": loss,
            "ksp_iterations": result.report.ksp_iterations,
            "seconds": time.perf_counter() - start,
        }
        history.append(entry)
        log.info(
            "I-LSR %d/%d: network %.3e -> refined %.3e (rel. error vs FEM), residual %.3e -> "
            "%.3e, align %.2e, %.1f s",
            it + 1,
            settings.iterations,
            entry.get("network_rel_l2", np.nan),
            entry.get("refined_rel_l2", np.nan),
            entry["network_residual"],
            entry["refined_residual"],
            loss,
            entry["seconds"],
        )
        if progress is not None:
            progress(entry)
    final = fem.network_fields(model)
    history.append(
        {
            "iteration": settings.iterations + 1,
            **_errors(fem, "network_rel_l2", final),
            "network_residual": fem.residual_norm(final),
            "seconds": time.perf_counter() - start,
        }
    )
    return fields, history


def _errors(fem: FEMInstances, key: str, fields: list[np.ndarray]) -> dict:
    """``{key: mean relative error}`` against the references, or ``{}`` without them."""
    if fem.references is None:
        return {}
    return {key: float(np.mean(fem.errors(fields)))}
