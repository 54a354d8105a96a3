"""Stages shared by every kind of run: fit a model (train, or load a checkpoint) and refine it
by LSR. ``method=gnvpro`` trains by GNvpro (:mod:`pinn_lsr.vpro`) instead of gradients. They
take tensors (inputs, targets) whole, identical on every rank, and split rows across ranks
themselves; metrics come from :func:`pinn_lsr.train.metrics.error_summary`.
"""

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from mpi4py import MPI

from pinn_lsr.io.atomic import write_json
from pinn_lsr.io.plots import plot_gnvpro_history, plot_history, plot_rank_scan
from pinn_lsr.models.parameters import count_real_parameters, set_precision
from pinn_lsr.parallel.memory import peak_memory_mb
from pinn_lsr.run.checkpoints import run_identity
from pinn_lsr.run.config import RunSettings, build_configured_model
from pinn_lsr.train.metrics import error_summary

log = logging.getLogger(__name__)

Data = tuple[torch.Tensor, torch.Tensor]  # (inputs (n, ...), targets (n, n_outputs))


def write_metrics(run_dir: Path, metrics: dict, seconds: dict, comm: MPI.Comm) -> dict:
    """Add ``seconds`` and the run's peak memory (MB, the largest rank) and write
    ``metrics.json`` (rank 0, atomically; last, as it marks a complete run); return the metrics.
    Collective."""
    metrics["seconds"] = seconds
    metrics["peak_memory_mb"] = peak_memory_mb(comm)
    if comm.rank == 0:
        write_json(run_dir / "metrics.json", metrics)
    comm.Barrier()
    return metrics


def share(data: Data, comm: MPI.Comm) -> Data:
    """This rank's contiguous share of the rows."""
    rows = torch.from_numpy(np.array_split(np.arange(len(data[0])), comm.size)[comm.rank])
    return data[0][rows], data[1][rows]


def summary(predict: Callable, data: Data, comm: MPI.Comm, prefix: str) -> dict:
    """``{prefix_mse, prefix_rel_l2, prefix_global_rel_l2}`` of ``predict`` on ``data``.
    Collective."""
    return {f"{prefix}_{k}": v for k, v in error_summary(predict, *share(data, comm), comm).items()}


def train_or_load_model(
    settings: RunSettings,
    train_data: Data,
    test_data: Data | None,
    run_dir: Path,
    comm: MPI.Comm,
) -> tuple[torch.nn.Module, dict]:
    """Train the configured model (``settings.train``, or GNvpro with ``method=gnvpro``), or load
    ``settings.model_file``; return (model, metrics). Collective.

    ``train_data``/``test_data`` are float64 tensors, cast to the model's dtype here.
    """
    from pinn_lsr.train.checkpoint import load_model
    from pinn_lsr.train.loop import train

    if settings.model_file is not None:
        model = load_model(settings.model_file)
        dtype = next(model.parameters()).dtype
        metrics = {
            "model": model.spec["name"],
            "checkpoint": str(Path(settings.model_file).resolve()),
        }
        log.info(
            "loaded %s (%d real parameters) from %s",
            model.spec["name"],
            count_real_parameters(model),
            settings.model_file,
        )
    elif settings.method == "gnvpro":
        dtype = torch.float64
        model, metrics = _train_by_gnvpro(settings, train_data, run_dir, comm)
    else:
        dtype = {"float32": torch.float32, "float64": torch.float64}[settings.train.dtype]
        torch.manual_seed(settings.seed)
        model = set_precision(build_configured_model(settings), dtype)
        loop = settings.train.loop
        log.info(
            "training %s (%d real parameters) on %d samples for %d epochs",
            settings.model.name,
            count_real_parameters(model),
            len(train_data[0]),
            loop.epochs,
        )
        cast = lambda d: (d[0].to(dtype), d[1].to(dtype))  # noqa: E731
        result = train(
            model,
            cast(train_data),
            cast(test_data) if test_data is not None else None,
            loop,
            comm=comm,
            checkpoint=run_dir / "checkpoint.pt",
            resume=settings.train.resume,
            progress=settings.output.progress,
            identity=run_identity(settings),
            device=settings.device,
        )
        if comm.rank == 0:
            plot_history(
                run_dir / "loss.png",
                result.history,
                title=f"{settings.model.name} on {settings.problem.name}",
            )
        metrics = {
            "model": settings.model.name,
            "seconds": result.counters.seconds,
            "epochs": result.counters.epochs,
            "optimizer_steps": result.counters.optimizer_steps,
            "forward_samples": result.counters.forward_samples,
            "backward_samples": result.counters.backward_samples,
            "checkpoint": str(run_dir / "checkpoint.pt"),
            "history": result.history,
        }
        if result.resumed is not None:
            metrics["resumed"] = result.resumed
    model.eval()
    predict = lambda x: model(x.to(dtype))  # noqa: E731
    metrics["n_parameters"] = count_real_parameters(model)
    metrics.update(summary(predict, train_data, comm, "train"))
    if test_data is not None:
        metrics.update(summary(predict, test_data, comm, "test"))
    which = "test" if test_data is not None else "train"  # no test samples: training errors
    log.info(
        "model: %s rel-L2 %.3e per sample, %.3e over all values; %s MSE %.3e",
        which,
        metrics[f"{which}_rel_l2"],
        metrics[f"{which}_global_rel_l2"],
        which,
        metrics[f"{which}_mse"],
    )
    return model, metrics


def _train_by_gnvpro(
    run: RunSettings, train_data: Data, run_dir: Path, comm: MPI.Comm
) -> tuple[torch.nn.Module, dict]:
    """Train the configured model in float64 by GNvpro on the training MSE (``run.gnvpro``);
    write ``checkpoint.pt`` and ``gnvpro.png``; return (model, metrics). Collective."""
    from pinn_lsr import vpro
    from pinn_lsr.train.checkpoint import model_state, save_checkpoint

    torch.manual_seed(run.seed)
    # Gauss–Newton needs the accuracy
    model = set_precision(build_configured_model(run), torch.float64)
    settings = run.gnvpro
    log.info(
        "training %s (%d real parameters) on %d samples by GNvpro (%s, at most %d iterations)",
        run.model.name,
        count_real_parameters(model),
        len(train_data[0]),
        settings.globalization,
        settings.max_iterations,
    )
    # targets in units of their standard deviation, so the reported loss is MSE / variance (the
    # optimiser does not depend on the data's scale); the output normaliser takes it back after
    inputs, targets = train_data[0].double(), train_data[1].double()
    mean, std = targets.mean(), targets.std().clamp_min(1e-12)
    result = vpro.train_gnvpro_on_dataset(model, inputs, (targets - mean) / std, settings, comm)
    with torch.no_grad():
        model.output_normalizer.mean.mul_(std).add_(mean)
        model.output_normalizer.std.mul_(std)
    history = [
        {k: v.item() if hasattr(v, "item") else v for k, v in entry.items()}
        for entry in result.history
    ]
    log.info(
        "GNvpro: %s after %d iterations, %.0f work units, %.1f s; training MSE / variance %.3e",
        result.status,
        result.iterations,
        result.work_units,
        result.seconds,
        result.loss,
    )
    checkpoint = run_dir / "checkpoint.pt"
    if comm.rank == 0:
        save_checkpoint(
            checkpoint,
            {
                "model_spec": model.spec,
                "model_state": model_state(model),
                "optimizer": "gnvpro",
                "settings": dataclasses.asdict(settings),
                "history": history,
                "identity": run_identity(run),
            },
        )
        plot_gnvpro_history(
            run_dir / "gnvpro.png",
            history,
            title=f"{run.model.name} on {run.problem.name}: GNvpro",
        )
    comm.Barrier()
    metrics = {
        "model": run.model.name,
        "optimizer": "gnvpro",
        "seconds": result.seconds,
        "work_units": result.work_units,
        "iterations": result.iterations,
        "status": result.status,
        "train_loss": result.loss,
        "checkpoint": str(checkpoint),
        "history": history,
    }
    return model, metrics


def refine_model(
    run: RunSettings,
    model: torch.nn.Module,
    train_data: Data,
    test_data: Data | None,
    run_dir: Path,
    comm: MPI.Comm,
):
    """Refine ``model`` by LSR on the training rows (split across ranks), the rank picked on the
    last ``run.lsr.validation_fraction`` of them; return (metrics, refined model). Collective."""
    from pinn_lsr.lsr.refine import refine

    settings = run.lsr
    dtype = getattr(torch, settings.dtype) if settings.dtype else next(model.parameters()).dtype
    n = len(train_data[0])
    n_fit = int(round(n * (1 - settings.validation_fraction)))
    fit = (train_data[0][:n_fit].to(dtype), train_data[1][:n_fit].to(dtype))
    held_out = (train_data[0][n_fit:].to(dtype), train_data[1][n_fit:].to(dtype))
    test = (test_data[0].to(dtype), test_data[1].to(dtype)) if test_data is not None else None
    refined, report = refine(
        model,
        *share(fit, comm),
        settings,
        validation=share(held_out, comm),
        evaluate={"test": share(test, comm)} if test is not None else None,
        progress=run.output.progress,
        comm=comm,
    )
    metrics = {
        "rank": report.rank,
        "max_rank": report.max_rank,
        "n_parameters": report.n_params,
        "n_rows": report.n_rows,
        "seconds": report.seconds["total"],
        "seconds_by_phase": report.seconds,
        "condition_number": report.condition_number,
        "effective_rank": report.effective_rank,
        "conditioning_estimated": report.conditioning_estimated,
        "svd_fallback_ranks": report.svd_fallback_ranks,
        "peak_memory_mb": report.peak_memory_mb,
        "total_peak_memory_mb": report.total_peak_memory_mb,
        "peak_device_memory_mb": report.peak_device_memory_mb,
        "device": settings.device,
        "peak_memory_mb_after": report.peak_memory_mb_after,
        "predicted": report.predicted,
        "objective": {
            "initial": report.initial_objective,
            "linearized": report.linearized_objective,
            "nonlinear": report.nonlinear_objective,
        },
        "scan": report.scan,
    }
    linear = lambda x: refined.predict(x.to(dtype))  # noqa: E731
    metrics.update(summary(linear, fit, comm, "train"))
    metrics.update(summary(linear, held_out, comm, "validation"))
    if test is not None:
        metrics.update(summary(linear, test, comm, "test"))
        committed = refined.committed()
        metrics.update(summary(lambda x: committed(x), test, comm, "committed_test"))
    log.info(
        "LSR rank %d: test rel-L2 %.3e per sample, %.3e over all values, MSE %.3e "
        "(linear predictor); MSE %.3e (committed weights)",
        report.rank,
        metrics.get("test_rel_l2", float("nan")),
        metrics.get("test_global_rel_l2", float("nan")),
        metrics.get("test_mse", float("nan")),
        metrics.get("committed_test_mse", float("nan")),
    )
    if comm.rank == 0:
        # relative weights: per-sample relative L2 errors; plain weights: the objective is the MSE
        plot_rank_scan(
            run_dir / "lsr_rank.png",
            report.scan,
            chosen=report.rank,
            suffix="_rel_l2" if settings.relative else "_objective",
        )
    return metrics, refined
