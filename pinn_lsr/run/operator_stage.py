"""The physics stage with ``physics.mode=operator``: refine one network on the FEM residuals of
unlabeled training inputs (operator-level physics LSR), beside gradient fine-tuning on the same
inputs and FEM loss for the same wall time, and score both on unseen test inputs.

Every figure is a relative L2 error (mass matrix) against the FEM solution, averaged over the
instances. The training inputs' solutions are solved only to report the training error; neither
method uses them.
"""

import copy
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from mpi4py import MPI

from pinn_lsr.fem.linear_pde import LinearPDE
from pinn_lsr.io.plots import plot_fields, plot_stage_errors
from pinn_lsr.physics.finetune import physics_finetune
from pinn_lsr.physics.instances import FEMInstances
from pinn_lsr.physics.operator import refine_operator
from pinn_lsr.run.config import RunSettings

log = logging.getLogger(__name__)


def run_operator(
    run: RunSettings,
    model: torch.nn.Module,
    pde: LinearPDE,
    train_inputs: np.ndarray,
    test_inputs: np.ndarray,
    predictors: dict[str, Callable[[torch.Tensor], np.ndarray]],
    run_dir: Path,
    comm: MPI.Comm,
) -> dict:
    """Operator LSR on the first ``physics.operator.inputs`` of ``train_inputs`` (the rank chosen
    on the next ``physics.operator.select`` when > 0) and the gradient baseline, scored on
    ``test_inputs`` (K_test, s, s) with the earlier stages' ``predictors`` (name -> inputs ->
    (K_test, s*s)). Writes ``physics_errors.png`` and ``physics.png``; returns the metrics
    (``mode``, ``operator``, ``stages``). Collective.
    """
    p, settings = run.physics, run.physics.ilsr  # rank, norm, subspace ... as in instance mode
    n_train, n_select = p.operator_inputs, p.operator_select
    train = FEMInstances.from_pde(pde, train_inputs[:n_train])
    select = (
        FEMInstances.from_pde(pde, train_inputs[n_train : n_train + n_select], solve=False)
        if n_select
        else None
    )
    test = FEMInstances.from_pde(pde, test_inputs)
    stages = {
        name: test.errors([test.to_dofs @ g for g in predict(test.model_inputs(model))])
        for name, predict in predictors.items()
    }
    result = refine_operator(
        model,
        train,
        settings.rank,
        norm=settings.norm,
        **settings.subspace_options(),
        select=select,
        seed=run.seed,
    )
    report = result.report
    linear = result.fields(test)
    stages["operator LSR (linear predictor)"] = test.errors(linear)
    stages["operator LSR (committed weights)"] = test.errors(result.committed_fields(test))
    section = {
        "inputs": n_train,
        "select": n_select,
        "rank": report.rank,
        "chosen_rank": report.chosen_rank,
        "norm": report.norm,
        "subspace": report.subspace,
        "block_size": settings.block_size,
        "precondition": settings.precondition,
        "n_params": report.n_params,
        "loss_before": report.loss_before,
        "loss_after": report.loss_after,
        "residual_l2_before": report.residual_l2_before,
        "residual_l2_after": report.residual_l2_after,
        "selection": {str(r): v for r, v in report.selection.items()},
        "seconds": report.seconds,
        "train_rel_l2": {
            "network": float(np.mean(train.errors(train.network_fields(model)))),
            "linear_predictor": float(np.mean(train.errors(result.training_fields()))),
        },
    }
    if p.baseline_optimizer != "none":
        tuned = copy.deepcopy(model)
        history = physics_finetune(
            tuned,
            train,
            seconds=report.seconds["total"],
            optimizer=p.baseline_optimizer,
            lr=p.baseline_lr,
            norm=settings.norm,  # the norm operator LSR minimises
            record_at=[],
        )
        name = f"gradient ({p.baseline_optimizer}, same time)"
        stages[name] = test.errors(test.network_fields(tuned))
        section["baseline"] = {
            "optimizer": p.baseline_optimizer,
            "lr": p.baseline_lr,
            "steps": history[-1]["step"],
            "seconds": history[-1]["seconds"],
            "train_rel_l2": history[-1]["rel_l2"],
            "fem_rel_l2": float(np.mean(stages[name])),
        }
    metrics = {
        "mode": "operator",
        "instances": len(test),
        "n_dofs": pde.n_dofs,
        "operator": section,
        "stages": {name: float(np.mean(errors)) for name, errors in stages.items()},
    }
    _report(metrics, test, model, linear, run_dir, comm)
    for fem in (train, select, test):
        if fem is not None:
            fem.destroy()
    return metrics


def _report(metrics, test, model, linear, run_dir, comm) -> None:
    """The stage table in the log and the figures. Collective."""
    section = metrics["operator"]
    lines = [f"{'stage':<36} {'rel. L2 vs FEM':>14}", "-" * 51]
    lines += [f"{name:<36} {error:>14.3e}" for name, error in metrics["stages"].items()]
    log.info(
        "unseen test errors per stage (mean over %d test instances, %d dofs; operator LSR rank %d "
        "on %d unlabeled training inputs in %.1f s, training error %.3e -> %.3e):\n%s",
        metrics["instances"],
        metrics["n_dofs"],
        section["chosen_rank"],
        section["inputs"],
        section["seconds"]["total"],
        section["train_rel_l2"]["network"],
        section["train_rel_l2"]["linear_predictor"],
        "\n".join(lines),
    )
    network = test.on_grid(test.network_fields(model))
    reference = test.on_grid(test.references)
    refined = test.on_grid(linear)
    if comm.rank == 0:
        plot_stage_errors(run_dir / "physics_errors.png", metrics["stages"])
        plot_fields(
            run_dir / "physics.png",
            [
                (test.pde.input.name or "input", test.inputs),
                ("FEM solution u", reference),
                ("network", network),
                ("operator LSR", refined),
                ("|error| (operator LSR)", np.abs(refined - reference)),
            ],
            sample_labels=[f"unseen test instance {k}" for k in range(len(test))],
        )
