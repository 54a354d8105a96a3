"""Iterative LSR (I-LSR): alternate one-shot physics LSR with an update of the network.

Each outer iteration linearizes the FEM residual at the network's current weights, refines the
field in a subspace (:func:`pinn_lsr.physics.refine.refine_physics`, seed ``seed + it``), then
moves the network toward the refined fields, so the next linearization starts closer. Both the
refined fields and the network are tracked: the refined field is the method's answer; the
network is what it can carry to the next step.

The update (``ILSRSettings.update``):

* ``align`` (default): train the network to reproduce the refined fields U*, by the target of
  ``AlignSettings.target``:

  - ``field``: the mean relative squared error to U* (a well-conditioned supervised fit). Built-in
    problems (``FEMInstances.from_pde``) align on the model's grid against U*'s grid values
    (:func:`align`; every rank holds the same targets); a user's PETSc systems or forms on the
    owned dofs (:func:`align_dofs`; errors and norms summed over ranks);
  - ``pseudo_time``: one implicit pseudo-time step from U*, as the LSR authors do for PINNs, in
    the energy norm (:func:`align_pseudo_time`): ``E(u) + ||u − U*||²_A / (2 Δτ)``, ``E`` the FEM
    energy. With ``E(u) − E(u*) = ½ ||u − u*||²_A`` both terms are in the same norm, so ``Δτ`` is
    a dimensionless ratio whatever the units of the data, the coefficient or the mesh (the mass
    matrix would give it the units of A's eigenvalues, ~κ/h²): over all fields the minimiser is
    ``(U* + Δτ u*) / (1 + Δτ)``, the implicit Euler step of ``du/dτ = −A⁻¹(A u − b)``.
    ``Δτ → 0`` fits U* in the energy norm, ``Δτ → ∞`` minimises the FEM energy alone.

* ``commit``: no alignment: the weights become ``θ + α δ`` (δ the reduced Gauss–Newton step,
  :attr:`PhysicsRefinement.delta`), α the first of 1, ½, ¼, ... whose true FEM loss
  (:func:`~pinn_lsr.physics.finetune.fem_loss`) is below the current one, 0 when none is
  (:func:`commit`): the FEM loss of the network never increases.

The subspace of each outer iteration is fresh, or (``recycle``) the previous iteration's basis
with the new gradient's Krylov directions orthogonal to it
(:func:`~pinn_lsr.physics.refine.krylov_physics_subspace`); its new rank is ``rank`` or the
iteration's entry of ``ranks`` (a rank schedule).
"""

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from mpi4py import MPI
from torch import nn

from pinn_lsr.models.parameters import add_to_real_parameters
from pinn_lsr.physics.finetune import fem_loss, instance_loss
from pinn_lsr.physics.instances import FEMInstances
from pinn_lsr.physics.refine import PRECONDITIONERS, PhysicsRefinement, refine_physics
from pinn_lsr.train.loop import allreduce_gradients, broadcast_parameters
from pinn_lsr.train.optim import make_optimizer

log = logging.getLogger(__name__)


ALIGN_TARGETS = ("field", "pseudo_time")
UPDATES = ("align", "commit")
MAX_HALVINGS = 20  # commit: step lengths tried, 1 down to 2^-19; beyond that the step is 0


@dataclass(frozen=True)
class AlignSettings:
    """Alignment of the network to the refined fields (module docstring)."""

    optimizer: str = "lbfgs"  # lbfgs (full batch, strong Wolfe) | adam
    iterations: int = 200
    lr: float = 1.0
    target: str = "field"  # field (relative squared error) | pseudo_time (energy + proximal term)
    dtau: float = 1.0  # pseudo_time: the pseudo-time step, dimensionless (energy norm)

    def __post_init__(self):
        if self.target not in ALIGN_TARGETS:
            raise ValueError(f"align target must be one of {ALIGN_TARGETS}, got {self.target!r}")
        if not self.dtau > 0:
            raise ValueError(f"align dtau must be positive, got {self.dtau!r}")


@dataclass(frozen=True)
class ILSRSettings:
    """Outer iterations of I-LSR and the one-shot physics LSR inside each."""

    iterations: int = 5
    rank: int = 64
    norm: str = "energy"
    subspace: str = "krylov"
    block_size: int = 1  # krylov: columns per block product (block Lanczos)
    precondition: str = "none"  # krylov: none | diagonal (refine_physics)
    probes: int = 64  # precondition=diagonal: probes of the diagonal estimate
    oversampling: int = 10
    petsc_options: Mapping | None = None
    align: AlignSettings = field(default_factory=AlignSettings)
    update: str = "align"  # align | commit (θ + αδ, backtracking on the FEM loss)
    recycle: bool = False  # krylov: keep the previous basis, add new directions orthogonal to it
    ranks: tuple[int, ...] | None = None  # new directions per outer iteration (None: rank each)

    def __post_init__(self):
        if self.update not in UPDATES:
            raise ValueError(f"update must be one of {UPDATES}, got {self.update!r}")
        if self.recycle and self.subspace != "krylov":
            raise ValueError(f"recycle needs subspace='krylov', got {self.subspace!r}")
        if self.precondition not in PRECONDITIONERS:
            raise ValueError(
                f"precondition must be one of {PRECONDITIONERS}, got {self.precondition!r}"
            )
        if self.precondition != "none" and self.subspace != "krylov":
            raise ValueError(
                f"precondition={self.precondition!r} needs subspace='krylov', got {self.subspace!r}"
            )
        if self.update == "align" and self.align.target == "pseudo_time" and self.norm != "energy":
            raise ValueError(
                "the pseudo_time alignment is in the energy norm (linear SPD problems); got "
                f"norm={self.norm!r}"
            )
        if self.ranks is not None and (
            len(self.ranks) != self.iterations or any(int(r) < 1 for r in self.ranks)
        ):
            raise ValueError(
                f"ranks must hold one positive rank per outer iteration ({self.iterations}), got "
                f"{self.ranks!r}"
            )

    def subspace_options(self) -> dict:
        """The keyword arguments of :func:`refine_physics` / ``refine_operator`` that choose and
        build the subspace (one place, so every caller passes all of them)."""
        return {
            "subspace": self.subspace,
            "block_size": self.block_size,
            "precondition": self.precondition,
            "probes": self.probes,
            "oversampling": self.oversampling,
            "petsc_options": self.petsc_options,
        }

    def rank_at(self, iteration: int) -> int:
        """The new directions of outer iteration ``iteration`` (from 0)."""
        return self.rank if self.ranks is None else int(self.ranks[iteration])


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


def align_pseudo_time(
    model: nn.Module,
    fem: FEMInstances,
    targets: list[np.ndarray],
    settings: AlignSettings,
) -> float:
    """One implicit pseudo-time step from owned dof ``targets`` U_k (n_owned,) per instance: fit
    the model's dof predictions u_k (:meth:`FEMInstances.dof_predictions`) by minimising the mean
    over instances of ``[E_k(u_k) + ||u_k − U_k||²_{A_k} / (2 Δτ)] / ||U_k||²_{A_k}`` (module
    docstring; the division makes the loss dimensionless), its gradient from PETSc
    (``A u − b + A (u − U) / Δτ``) pulled back by autograd and allreduced, so every rank takes the
    same steps; rank 0's weights are broadcast at the end. Returns the final loss. Collective on
    ``fem.comm``."""
    comm, dtype = fem.comm, next(model.parameters()).dtype
    U = [np.asarray(t, dtype=np.float64) for t in targets]
    scale = np.array([float(t @ s.apply(t[:, None])[:, 0]) for s, t in zip(fem.systems, U)])
    comm.Allreduce(MPI.IN_PLACE, scale, op=MPI.SUM)
    scale *= len(fem)

    def objective(u: np.ndarray) -> tuple[float, np.ndarray]:
        loss, gradient = 0.0, np.empty_like(u)
        for k, system in enumerate(fem.systems):
            energy, r = instance_loss(system, u[k], "energy")
            d = u[k] - U[k]
            Ad = system.apply(d[:, None])[:, 0]
            loss += (energy + 0.5 * float(d @ Ad) / settings.dtau) / scale[k]
            gradient[k] = (r + Ad / settings.dtau) / scale[k]
        return comm.allreduce(loss, op=MPI.SUM), gradient

    optimizer = make_optimizer(
        model.parameters(), settings.optimizer, lr=settings.lr, lbfgs_max_iter=settings.iterations
    )

    def closure():
        optimizer.zero_grad()
        u = fem.dof_predictions(model)
        loss, gradient = objective(u.detach().double().numpy())
        u.backward(torch.from_numpy(gradient).to(u.dtype))
        allreduce_gradients(model, comm)
        return torch.tensor(loss, dtype=dtype)

    _take_steps(model, optimizer, closure, settings, comm)
    with torch.no_grad():
        return float(objective(fem.dof_predictions(model).double().numpy())[0])


def commit(model: nn.Module, fem: FEMInstances, result: PhysicsRefinement) -> float:
    """Set ``model``'s weights to ``θ + α δ`` (``result`` a refinement of this model on ``fem``),
    α the first of 1, ½, ¼, ... (:data:`MAX_HALVINGS` tries) whose true FEM loss (energy for the
    energy norm, else ½||F(u)||²) is below the current one, or leave them when none is. Returns
    α (0.0: not moved). Collective."""
    residual = result.problem.residual
    jacobian = residual.jacobian
    norm = "energy" if residual.norm == "energy" else "l2"
    before = fem_loss(fem, residual.u0, norm)
    alpha = 1.0
    for _ in range(MAX_HALVINGS):
        step = alpha * result.delta
        outputs = jacobian.outputs(jacobian.theta0 + step)
        trial = fem_loss(fem, [u[:, 0] for u in residual.fields(outputs[:, None])], norm)
        if fem.comm.bcast(trial < before, root=0):  # every rank takes rank 0's decision
            add_to_real_parameters(model, jacobian.index, step)
            return alpha
        alpha /= 2
    return 0.0


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
    these settings (rank ``settings.rank_at(0)``) and ``seed`` (it is then the first iteration's,
    not computed again).

    Returns the last refined fields (owned dofs per instance) and the history: one entry per
    outer iteration with ``network_rel_l2`` / ``network_residual`` (before refining),
    ``refined_rel_l2`` / ``refined_residual`` (after), ``align_loss`` (align) or ``step`` (commit:
    α), the subspace's ``rank`` (with recycling: old and new directions) and cumulative seconds:
    ``refined_seconds`` when the refined field was ready, ``seconds`` after the update
    (errors: mean relative error against the FEM solutions, :meth:`FEMInstances.errors`, left
    out when the set has no references; residuals: ``||A u − b||₂``).

    Raises:
        SolverError: a reduced solve did not converge (the history so far is in the message's log).
    """
    # the clock includes a reused first refinement, so the seconds are those of the whole method
    start = time.perf_counter() - (first.report.seconds["total"] if first is not None else 0.0)
    history, fields, basis = [], None, None
    inputs = fem.model_inputs(model)
    for it in range(settings.iterations):
        network = fem.network_fields(model)
        if it == 0 and first is not None:
            result = first
        else:
            result = refine_physics(
                fem.residual(model, norm=settings.norm),
                settings.rank_at(it),
                **settings.subspace_options(),
                seed=seed + it,
                recycle=basis if settings.recycle else None,
            )
        basis = result.problem.subspace.V
        fields = result.fields
        refined_at = time.perf_counter() - start
        if settings.update == "commit":
            update = {"step": commit(model, fem, result)}
        elif settings.align.target == "pseudo_time":
            update = {"align_loss": align_pseudo_time(model, fem, fields, settings.align)}
        elif fem.pde is not None:  # a built-in problem: align on the model's grid
            targets = torch.from_numpy(fem.on_grid(fields).reshape(len(fem), -1))
            update = {"align_loss": align(model, inputs, targets, settings.align, comm=fem.comm)}
        else:
            update = {"align_loss": align_dofs(model, fem, fields, settings.align)}
        entry = {
            "iteration": it + 1,
            **_errors(fem, "network_rel_l2", network),
            "network_residual": fem.residual_norm(network),
            **_errors(fem, "refined_rel_l2", fields),
            "refined_residual": fem.residual_norm(fields),
            **update,
            "rank": result.report.rank,
            "ksp_iterations": result.report.ksp_iterations,
            "refined_seconds": refined_at,
            "seconds": time.perf_counter() - start,
        }
        history.append(entry)
        log.info(
            "I-LSR %d/%d: network %.3e -> refined %.3e (rel. error vs FEM), residual %.3e -> "
            "%.3e, %s %.2e, rank %d, %.1f s",
            it + 1,
            settings.iterations,
            entry.get("network_rel_l2", np.nan),
            entry.get("refined_rel_l2", np.nan),
            entry["network_residual"],
            entry["refined_residual"],
            *next(iter(update.items())),
            entry["rank"],
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
