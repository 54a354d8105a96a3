"""The physics stage of a run: refine the trained network against the FEM residual of test
instances (one-shot physics LSR, then I-LSR), beside gradient fine-tuning on the same FEM loss
for the same wall time, and that fine-tuning finished by physics LSR within the same time
(:mod:`pinn_lsr.physics.finetune_lsr`), each instance on its own (test-time fine-tuning of a copy
of the network).

Every figure is a relative L2 error (mass matrix) against the FEM solution on the distributed
mesh, averaged over the instances, so the table compares the stages on one measure.
"""

import copy
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from mpi4py import MPI

import dolfinx.fem
from pinn_lsr.fem.linear_pde import LinearPDE
from pinn_lsr.io.fields import xdmf_series
from pinn_lsr.io.plots import plot_fields, plot_ilsr_history, plot_stage_errors
from pinn_lsr.physics.finetune import physics_finetune
from pinn_lsr.physics.finetune_lsr import FinetuneLSRSettings, finetune_then_refine
from pinn_lsr.physics.instances import FEMInstances
from pinn_lsr.physics.iterative import iterative_lsr
from pinn_lsr.physics.refine import refine_physics
from pinn_lsr.run.config import RunSettings

log = logging.getLogger(__name__)


def run_physics(
    run: RunSettings,
    model: torch.nn.Module,
    pde: LinearPDE,
    inputs: np.ndarray,
    predictors: dict[str, Callable[[torch.Tensor], np.ndarray]],
    run_dir: Path,
    comm: MPI.Comm,
) -> dict:
    """Physics LSR, I-LSR, the gradient baseline and the baseline finished by physics LSR (in
    I-LSR's time) on the instances ``inputs`` (K, s, s).

    ``predictors``: earlier stages' grid predictions (name -> inputs -> (K, s*s)), scored on the
    same instances. Writes ``physics.png``, ``physics_errors.png``, ``ilsr.png`` and
    ``physics_fields/physics.xdmf``; returns the metrics (``physics_lsr``, ``ilsr``,
    ``baseline``, ``finetune_lsr``, ``stages``). Collective.
    """
    p = run.physics
    settings = p.ilsr  # the one-shot physics LSR inside I-LSR too
    norm = settings.norm
    # each instance solved once by the FEM solver, timed: what users will ask against
    fem = FEMInstances.from_pde(pde, inputs)
    n_dofs = pde.n_dofs
    ranks = {"physics.rank": settings.rank}
    if p.finetune_lsr_share > 0:
        ranks["physics.finetune_lsr.rank"] = p.finetune_lsr_rank
    for key, rank in ranks.items():
        if rank > n_dofs // 4:
            log.warning(
                "%s=%d exceeds a quarter of the %d dofs: the subspace may do the work of a full "
                "solve",
                key,
                rank,
                n_dofs,
            )
    stages = {
        name: fem.errors([fem.to_dofs @ g for g in predict(fem.model_inputs(model))])
        for name, predict in predictors.items()
    }
    one_shot, ilsr, baseline, finished = [], [], [], []
    fields = {"physics LSR": [], "I-LSR": [], "gradient then LSR": []}
    for k in range(len(fem)):
        instance = fem.subset([k])
        result = refine_physics(
            instance.residual(model, norm=norm),
            settings.rank,
            **settings.subspace_options(),
            seed=run.seed,
        )
        fields["physics LSR"].append(result.fields[0])
        one_shot.append(
            {
                "fem_rel_l2": instance.errors(result.fields)[0],
                "ksp_iterations": result.report.ksp_iterations,
                "ksp_reason": result.report.ksp_reason,
                "residual_before": result.report.residual_l2_before,
                "residual_after": result.report.residual_l2_after,
                "seconds": result.report.seconds["total"],
            }
        )
        if settings.iterations:
            # the one-shot refinement is I-LSR's first when a rank schedule starts at its rank
            reuse = result if settings.rank_at(0) == settings.rank else None
            refined, history = iterative_lsr(
                copy.deepcopy(model), instance, settings, seed=run.seed, first=reuse
            )
            fields["I-LSR"].append(refined[0])
            ilsr.append(history)
            if p.baseline_optimizer != "none":
                baseline.append(
                    physics_finetune(
                        copy.deepcopy(model),
                        instance,
                        seconds=history[-1]["seconds"],
                        optimizer=p.baseline_optimizer,
                        lr=p.baseline_lr,
                        norm=norm,  # the norm physics LSR minimises (energy, dual or l2)
                    )
                )
                if p.finetune_lsr_share > 0:
                    refined, summary = finetune_then_refine(
                        copy.deepcopy(model),
                        instance,
                        FinetuneLSRSettings(
                            seconds=history[-1]["seconds"],
                            share=p.finetune_lsr_share,
                            rank=p.finetune_lsr_rank,
                            optimizer=p.baseline_optimizer,
                            lr=p.baseline_lr,
                            norm=norm,
                            block_size=settings.block_size,
                        ),
                        seed=run.seed,
                    )
                    fields["gradient then LSR"].append(refined.fields[0])
                    finished.append(summary)
    stages["physics LSR"] = [e["fem_rel_l2"] for e in one_shot]
    metrics = {
        "instances": len(fem),
        "n_dofs": n_dofs,
        "fem_solve_seconds_median": float(np.median(fem.solve_seconds)),
        "physics_lsr": {
            "rank": settings.rank,
            "norm": norm,
            "subspace": settings.subspace,
            "fem_rel_l2": float(np.mean(stages["physics LSR"])),
            "seconds_median": float(np.median([e["seconds"] for e in one_shot])),
            "per_instance": one_shot,
        },
    }
    if ilsr:
        stages["I-LSR"] = [h[-2]["refined_rel_l2"] for h in ilsr]
        metrics["ilsr"] = {
            "iterations": settings.iterations,
            "fem_rel_l2": float(np.mean(stages["I-LSR"])),
            "network_rel_l2": float(np.mean([h[-1]["network_rel_l2"] for h in ilsr])),
            "seconds_median": float(np.median([h[-1]["seconds"] for h in ilsr])),
            "history": _mean_history(ilsr),
            "per_instance": ilsr,
        }
    if baseline:
        name = f"gradient ({p.baseline_optimizer}, same time)"
        stages[name] = [h[-1]["rel_l2"] for h in baseline]
        metrics["baseline"] = {
            "optimizer": p.baseline_optimizer,
            "lr": p.baseline_lr,
            "norm": norm,
            "fem_rel_l2": float(np.mean(stages[name])),
            "steps": [h[-1]["step"] for h in baseline],
            "per_instance": baseline,
        }
    if finished:
        name = f"{p.baseline_optimizer}, then physics LSR (same time)"
        stages[name] = [e["refined_rel_l2"] for e in finished]
        metrics["finetune_lsr"] = {
            "share": p.finetune_lsr_share,
            "rank": p.finetune_lsr_rank,
            "fem_rel_l2": float(np.mean(stages[name])),
            "ranks_reached": [e["rank"] for e in finished],
            "per_instance": finished,
        }
    metrics["stages"] = {name: float(np.mean(errors)) for name, errors in stages.items()}
    _report(metrics, fem, predictors, model, fields, ilsr, baseline, finished, run_dir, comm)
    fem.destroy()
    return metrics


def _mean_history(histories: list[list[dict]]) -> list[dict]:
    """Per outer iteration, the mean over instances of every number in the entries."""
    return [
        {key: float(np.mean([h[i][key] for h in histories])) for key in histories[0][i]}
        for i in range(len(histories[0]))
    ]


def _report(
    metrics, fem, predictors, model, fields, ilsr, baseline, finished, run_dir, comm
) -> None:
    """The stage table in the log, the figures and the XDMF fields. Collective."""
    lines = [f"{'stage':<34} {'rel. L2 vs FEM':>14}", "-" * 49]
    lines += [f"{name:<34} {error:>14.3e}" for name, error in metrics["stages"].items()]
    log.info(
        "test errors per stage (mean over %d instances, %d dofs; FEM solve %.3f s, physics LSR "
        "%.1f s%s):\n%s",
        metrics["instances"],
        metrics["n_dofs"],
        metrics["fem_solve_seconds_median"],
        metrics["physics_lsr"]["seconds_median"],
        f", I-LSR {metrics['ilsr']['seconds_median']:.1f} s" if ilsr else "",
        "\n".join(lines),
    )
    grids = {name: fem.on_grid(values) for name, values in fields.items() if values}
    network_dofs = fem.network_fields(model)
    network = fem.on_grid(network_dofs)
    reference = fem.on_grid(fem.references)
    if comm.rank == 0:
        plot_stage_errors(run_dir / "physics_errors.png", metrics["stages"])
        if ilsr:
            plot_ilsr_history(run_dir / "ilsr.png", ilsr, baseline, finished)
        last = list(grids)[-1]
        columns = [
            (fem.pde.input.name or "input", fem.inputs),
            ("FEM solution u", reference),
            ("network", network),
        ]
        columns += list(grids.items()) + [(f"|error| ({last})", np.abs(grids[last] - reference))]
        plot_fields(
            run_dir / "physics.png",
            columns,
            sample_labels=[f"test instance {k}" for k in range(len(fem))],
        )
    _write_fields(run_dir / "physics_fields", fem, network_dofs, fields)


def _write_fields(
    directory: Path, fem: FEMInstances, network: list[np.ndarray], fields: dict
) -> None:
    """Input, FEM solution, network and refined fields and the last one's error, one time step
    per instance, as ``directory/physics.xdmf``. Collective."""
    pde = fem.pde
    n = pde.n_owned
    functions = {
        name: dolfinx.fem.Function(pde.V, name=name.replace(" ", "_").replace("-", ""))
        for name in ["reference", "network", *[k for k, v in fields.items() if v], "error"]
    }
    with xdmf_series(directory, "physics", pde.domain.mesh) as xdmf:
        for k in range(len(fem)):
            pde.set_input(fem.inputs[k])
            values = {
                "reference": fem.references[k],
                "network": network[k],
                **{name: v[k] for name, v in fields.items() if v},
            }
            values["error"] = values[list(values)[-1]] - fem.references[k]
            xdmf.write_function(pde.input, float(k))
            for name, function in functions.items():
                function.x.array[:n] = values[name]
                function.x.scatter_forward()
                xdmf.write_function(function, float(k))
