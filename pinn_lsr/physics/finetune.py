"""Physics fine-tuning by gradient descent on the FEM residual loss: the baseline of physics LSR.

The loss of instance k in the ``energy`` norm is the discrete energy functional
``E_k(u) = ½ uᵀ A_k u − b_kᵀ u`` of the network's dof field u = P u_θ(a_k) (for SPD A_k,
``E_k(u) − E_k(u*) = ½ ||u − u*||²_A``: the same norm physics LSR minimises); in the ``l2`` norm it
is ``½ ||F_k(u)||²`` (``F_k(u) = A_k u − b_k`` for linear problems; any residual for nonlinear
ones); in the ``dual`` norm (the norm physics LSR uses for non-symmetric and nonlinear problems)
it is ``½ F(u)ᵀ S(u)⁻¹ F(u)``, S the instance's SPD weighting. Its gradient with respect to u
(``A u − b``, ``(∂F/∂u)ᵀ F``, or ``(∂F/∂u)ᵀ S⁻¹ F``) comes from PETSc and is pulled back through
the network by autograd. For a weighting that depends on u (nonlinear problems) the dual
gradient leaves out the term of ``∂S/∂u``, which is quadratic in F: exact for linear problems,
exact to first order at a solution otherwise.
"""

import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from mpi4py import MPI
from torch import nn

from pinn_lsr.fem.instance import LinearInstance
from pinn_lsr.physics.instances import FEMInstances
from pinn_lsr.train.loop import broadcast_parameters
from pinn_lsr.train.optim import make_optimizer

LOSS_NORMS = ("energy", "dual", "l2")


def instance_loss(system: LinearInstance, u: np.ndarray, norm: str, *, gradient: bool = True):
    """One instance's FEM loss on this rank's owned dof values ``u`` (n_owned,) and its gradient
    with respect to them (None without ``gradient``): the local share, to be summed over ranks.
    Collective on the system."""
    r = system.residual(u)
    if norm == "energy":  # ½ uᵀAu − bᵀu = ½ uᵀ(r − b)
        if system.b is None:
            raise ValueError(
                "the energy loss needs a linear SPD problem; use norm='l2' for nonlinear residuals"
            )
        return 0.5 * float(u @ (r - system.b.getArray(readonly=True)[: len(u)])), r
    if norm == "dual":  # ½ rᵀ S⁻¹ r and Aᵀ S⁻¹ r, A = ∂F/∂u and S at u
        system.linearize(u)  # (nothing to do for linear problems)
        w = system.solve_weight(r[:, None])[:, 0]
        value = 0.5 * float(r @ w)
        return value, system.apply(w[:, None], transpose=True)[:, 0] if gradient else None
    if not gradient:
        return 0.5 * float(r @ r), None
    system.linearize(u)  # Aᵀ r with A = ∂F/∂u at u (nothing to do for linear problems)
    return 0.5 * float(r @ r), system.apply(r[:, None], transpose=True)[:, 0]


def fem_loss(fem: FEMInstances, fields: list[np.ndarray], norm: str) -> float:
    """The summed FEM loss of owned dof fields (n_owned,) per instance, identical on all ranks.
    Collective."""
    if norm not in LOSS_NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {LOSS_NORMS}")
    local = sum(
        instance_loss(system, u, norm, gradient=False)[0] for system, u in zip(fem.systems, fields)
    )
    return float(fem.comm.allreduce(local, op=MPI.SUM))


def fem_loss_and_grid_gradient(
    fem: FEMInstances, grid: np.ndarray, norm: str
) -> tuple[float, np.ndarray]:
    """The summed FEM loss of grid fields (K, n_grid) and its gradient with respect to them,
    identical on all ranks. Collective."""
    if norm not in LOSS_NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {LOSS_NORMS}")
    if fem.to_dofs is None:
        raise ValueError(
            "the FEM loss is computed from grid values through to_dofs; these instances are "
            "evaluated at the dof coordinates"
        )
    loss, gradient = 0.0, np.zeros_like(grid)
    for k, system in enumerate(fem.systems):
        value, du = instance_loss(system, fem.to_dofs @ grid[k], norm)
        loss += value
        gradient[k] = fem.to_dofs.T @ du
    total = np.array([loss])
    fem.comm.Allreduce(MPI.IN_PLACE, total, op=MPI.SUM)
    fem.comm.Allreduce(MPI.IN_PLACE, gradient, op=MPI.SUM)
    return float(total[0]), gradient


def physics_finetune(
    model: nn.Module,
    fem: FEMInstances,
    *,
    seconds: float,
    optimizer: str = "adam",
    lr: float = 1e-3,
    norm: str = "energy",
    lbfgs_max_iter: int = 20,
    evaluation: Mapping[str, FEMInstances] | None = None,
    record_at: Sequence[float] | None = None,
    keep_best: bool = True,
    track_kept: bool = False,
) -> list[dict]:
    """Minimise the FEM loss of ``model`` on ``fem``'s instances for ``seconds`` of wall time
    spent in optimiser steps (checked between steps; an L-BFGS step does up to
    ``lbfgs_max_iter`` iterations). Every rank computes the same steps; rank 0's weights are
    broadcast at the end. Collective.

    Returns one entry per step: ``step``, ``seconds`` (the optimiser's time so far: the error
    recorded after each step is measured off the clock, so the baseline is not charged for our
    bookkeeping), ``loss``, ``rel_l2`` (mean relative L2 against the FEM solutions; with
    ``kept_rel_l2`` left out when ``fem`` has no references), with
    ``evaluation`` (name -> instances) also ``{name}_rel_l2`` (the same on those instances, e.g.
    unseen inputs of an operator trained on ``fem``'s), the first entry being the starting
    network. With
    ``record_at`` (seconds), only the start and the first step at or past each time are
    recorded (the last step is always recorded).

    With ``keep_best`` (default) the model is left at the iterate of lowest loss among those the
    optimiser evaluated (each step's starting point, L-BFGS's line-search points, and the last
    iterate, whose loss costs one more forward pass on the clock): the network a user keeps
    without knowing the solution, so a last step that overshoots does not decide the result. One
    more entry, with ``kept`` True, then ends the history and describes that network (its
    ``loss`` is its own; an ordinary entry's ``loss`` is that of the iterate the step started
    from, its ``rel_l2`` that of the iterate the step produced). With ``track_kept`` as well,
    every entry has ``kept_rel_l2``: the error of the lowest-loss iterate evaluated so far, the
    network a user would hold at that time (one more evaluation off the clock whenever that
    iterate has changed since the last record).
    """
    if track_kept and not keep_best:
        raise ValueError("track_kept=True needs keep_best=True (it reports the kept network)")
    inputs = fem.model_inputs(model)
    parameters = list(model.parameters())
    opt = make_optimizer(parameters, optimizer, lr=lr, lbfgs_max_iter=lbfgs_max_iter)
    best = {"loss": np.inf, "parameters": None, "error": None}

    def remember(loss: float) -> None:
        """Copy the current parameters when ``loss`` (theirs) is the lowest seen so far."""
        if keep_best and loss < best["loss"]:
            best["loss"] = loss
            best["parameters"] = [p.detach().clone() for p in parameters]
            best["error"] = None

    def closure():
        opt.zero_grad()
        output = model(inputs).reshape(len(fem), -1)
        loss, gradient = fem_loss_and_grid_gradient(fem, output.detach().double().numpy(), norm)
        remember(loss)
        output.backward(torch.from_numpy(gradient).to(output.dtype))
        return torch.tensor(loss)

    def current_loss() -> float:
        with torch.no_grad():
            output = model(inputs).reshape(len(fem), -1).double().numpy()
        return fem_loss_and_grid_gradient(fem, output, norm)[0]

    def error() -> float:
        return float(np.mean(fem.errors(fem.network_fields(model))))

    def kept_error() -> float:
        """The error of the lowest-loss iterate so far (the current one before any step)."""
        if best["parameters"] is None:
            return error()
        if best["error"] is not None:
            return best["error"]
        current = [p.detach().clone() for p in parameters]
        with torch.no_grad():
            for p, kept in zip(parameters, best["parameters"]):
                p.copy_(kept)
            value = error()
            for p, now in zip(parameters, current):
                p.copy_(now)
        best["error"] = value
        return value

    def record(step, loss):
        entry = {"step": step, "seconds": elapsed, "loss": loss}
        if fem.references is not None:  # (a user's own systems may have none: the loss is all)
            entry["rel_l2"] = error()
            if keep_best and track_kept:
                entry["kept_rel_l2"] = kept_error()
        for name, other in (evaluation or {}).items():
            entry[f"{name}_rel_l2"] = float(np.mean(other.errors(other.network_fields(model))))
        history.append(entry)

    elapsed = 0.0
    history: list[dict] = []
    model.eval()
    record(0, current_loss())
    step = 0
    pending = sorted(record_at) if record_at is not None else []
    # every rank takes the same decision: the clock of rank 0
    while fem.comm.bcast(elapsed < seconds, root=0):
        step += 1
        start = time.perf_counter()
        model.train()
        loss = float(opt.step(closure))
        model.eval()
        elapsed += time.perf_counter() - start
        due = fem.comm.bcast(bool(pending) and elapsed >= pending[0], root=0)
        last = fem.comm.bcast(elapsed >= seconds, root=0)
        if record_at is None or due or last:
            record(step, loss)
        while pending and elapsed >= pending[0]:
            pending.pop(0)
    if keep_best:
        start = time.perf_counter()
        remember(current_loss())  # the last iterate's loss: no step evaluated it
        with torch.no_grad():
            for p, kept in zip(parameters, best["parameters"]):
                p.copy_(kept)
        elapsed += time.perf_counter() - start
        record(step, best["loss"])
        history[-1]["kept"] = True
    broadcast_parameters(model, fem.comm)
    return history
