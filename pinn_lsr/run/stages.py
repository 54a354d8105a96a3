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
from omegaconf import DictConfig, OmegaConf

from pinn_lsr.io.atomic import write_json
from pinn_lsr.io.plots import plot_gnvpro_history, plot_history, plot_rank_scan
from pinn_lsr.models.parameters import count_real_parameters, set_precision
from pinn_lsr.train.metrics import error_summary

log = logging.getLogger(__name__)

Data = tuple[torch.Tensor, torch.Tensor]  # (inputs (n, ...), targets (n, n_outputs))


def build_configured_model(cfg: DictConfig) -> torch.nn.Module:
    """The model ``cfg.model`` for ``cfg.problem``: grid operators take the s × s grid (an MLP
    maps the flattened grid to itself); function fitting takes an MLP from 2 inputs to 1 output.
    A vector problem (``components = c > 1``) gets c output channels (MLP: c·s·s outputs).

    Raises:
        ValueError: bad model arguments, or a model that does not fit the problem.
    """
    import problems
    from pinn_lsr.models import build_model

    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "name"}
    s = int(cfg.problem.resolution)
    problem = problems.PROBLEMS[cfg.problem.name]
    if problem.kind == "function":
        if cfg.model.name != "mlp":
            raise ValueError(
                f"problem={cfg.problem.name} fits a function of (x, y): use model=mlp, "
                f"not {cfg.model.name}"
            )
        kwargs.update(in_features=2, out_features=1)
    elif cfg.model.name == "mlp":
        kwargs.update(in_features=s * s, out_features=problem.components * s * s)
    else:
        channels = problem.components
        kwargs.update(grid_size=s, **({"out_channels": channels} if channels > 1 else {}))
    return build_model(cfg.model.name, **kwargs)


def write_metrics(run_dir: Path, metrics: dict, seconds: dict, comm: MPI.Comm) -> dict:
    """Add ``seconds`` and write ``metrics.json`` (rank 0, atomically; last, as it marks a
    complete run); return the metrics. Collective."""
    metrics["seconds"] = seconds
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


def fit_model(
    cfg: DictConfig,
    build: Callable[[], torch.nn.Module],
    train_data: Data,
    test_data: Data | None,
    run_dir: Path,
    comm: MPI.Comm,
) -> tuple[torch.nn.Module, dict]:
    """Train ``build()`` as ``cfg.train`` says, or load ``cfg.checkpoint``; return (model,
    metrics). Collective.

    ``train_data``/``test_data`` are float64 tensors, cast to the model's dtype here.
    """
    from pinn_lsr.train.checkpoint import load_model
    from pinn_lsr.train.loop import TrainSettings, train

    if cfg.checkpoint is not None:
        model = load_model(cfg.checkpoint)
        dtype = next(model.parameters()).dtype
        metrics = {"model": model.spec["name"], "checkpoint": str(Path(cfg.checkpoint).resolve())}
        log.info(
            "loaded %s (%d real parameters) from %s",
            model.spec["name"],
            count_real_parameters(model),
            cfg.checkpoint,
        )
    elif cfg.method.name == "gnvpro":
        dtype = torch.float64
        model, metrics = train_gnvpro(cfg, build, train_data, run_dir, comm)
    else:
        dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.train.dtype]
        torch.manual_seed(int(cfg.seed))
        model = set_precision(build(), dtype)
        settings = TrainSettings(
            seed=int(cfg.seed),
            **{
                k: v
                for k, v in OmegaConf.to_container(cfg.train).items()
                if k not in ("dtype", "resume")
            },
        )
        log.info(
            "training %s (%d real parameters) on %d samples for %d epochs",
            cfg.model.name,
            count_real_parameters(model),
            len(train_data[0]),
            settings.epochs,
        )
        cast = lambda d: (d[0].to(dtype), d[1].to(dtype))  # noqa: E731
        result = train(
            model,
            cast(train_data),
            cast(test_data) if test_data is not None else None,
            settings,
            comm=comm,
            checkpoint=run_dir / "checkpoint.pt",
            resume=bool(cfg.train.resume),
            progress=bool(cfg.output.progress),
        )
        if comm.rank == 0:
            plot_history(
                run_dir / "loss.png",
                result.history,
                title=f"{cfg.model.name} on {cfg.problem.name}",
            )
        metrics = {
            "model": cfg.model.name,
            "seconds": result.counters.seconds,
            "epochs": result.counters.epochs,
            "optimizer_steps": result.counters.optimizer_steps,
            "forward_samples": result.counters.forward_samples,
            "backward_samples": result.counters.backward_samples,
            "checkpoint": str(run_dir / "checkpoint.pt"),
            "history": result.history,
        }
    model.eval()
    predict = lambda x: model(x.to(dtype))  # noqa: E731
    metrics["n_parameters"] = count_real_parameters(model)
    metrics.update(summary(predict, train_data, comm, "train"))
    if test_data is not None:
        metrics.update(summary(predict, test_data, comm, "test"))
    log.info(
        "model: test rel-L2 %.3e per sample, %.3e over all values; test MSE %.3e",
        metrics.get("test_rel_l2", float("nan")),
        metrics.get("test_global_rel_l2", float("nan")),
        metrics.get("test_mse", float("nan")),
    )
    return model, metrics


def gnvpro_settings(cfg: DictConfig):
    """The :class:`~pinn_lsr.vpro.GNSettings` of ``cfg.method`` (squared loss, seeded by
    ``cfg.seed``); a ``curvature_batch_size`` or ``batch_size`` in (0, 1) is a fraction of
    ``data.n_train``.

    Raises:
        TypeError: a key that is not a GNSettings field.
    """
    from pinn_lsr.vpro import GNSettings

    options = {k: v for k, v in OmegaConf.to_container(cfg.method).items() if k != "name"}
    for key in ("curvature_batch_size", "batch_size"):
        if isinstance(options.get(key), float) and 0 < options[key] < 1:
            options[key] = max(1, round(options[key] * int(cfg.data.n_train)))
    return GNSettings(**{"loss": "squared", "seed": int(cfg.seed), **options})


def validate_gnvpro(cfg: DictConfig) -> None:
    """Check that ``method=gnvpro`` can train ``cfg.model`` with the settings ``cfg.method``
    (nothing to check for other methods). Local; cheap enough to call before anything is written.

    Raises:
        ValueError: no model to train, a checkpoint (nothing to train), ``train.resume``, a model
            without a final affine layer (model=fno), or a bad setting; the message names it.
    """
    from pinn_lsr.vpro import as_separable
    from pinn_lsr.vpro.optimizer import GLOBALIZATIONS

    if cfg.method.name != "gnvpro":
        return
    if cfg.checkpoint is not None:
        raise ValueError(
            "method=gnvpro trains a new model; to use checkpoint=PATH choose method=none or "
            "method=lsr"
        )
    if cfg.get("model") is None:
        raise ValueError("method=gnvpro needs a model to train: choose model=deeponet or model=mlp")
    if cfg.train.resume:
        raise ValueError("train.resume applies to gradient training only, not to method=gnvpro")
    try:
        settings = gnvpro_settings(cfg)
    except TypeError as exc:
        raise ValueError(
            f"bad method=gnvpro setting: {exc}; see pinn_lsr.vpro.GNSettings"
        ) from None
    if settings.loss != "squared":
        raise ValueError(
            "method=gnvpro fits the data with the squared loss only, "
            f"got method.loss={settings.loss!r}"
        )
    if settings.globalization not in GLOBALIZATIONS:
        raise ValueError(
            f"method.globalization must be one of {GLOBALIZATIONS}, got {settings.globalization!r}"
        )
    for key, minimum in (("max_iterations", 0), ("krylov_max_iterations", 1), ("monitor_every", 1)):
        value = getattr(settings, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"method.{key} must be an integer >= {minimum}, got {value!r}")
    n_train = int(cfg.data.n_train)
    for key in ("curvature_batch_size", "batch_size"):
        value = getattr(settings, key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= n_train
        ):
            raise ValueError(
                f"method.{key} must be null, a fraction in (0, 1) or an integer in "
                f"[1, data.n_train={n_train}], got {value!r}"
            )
    if settings.batch_size is not None and settings.curvature_batch_size is not None:
        raise ValueError("choose method.batch_size or method.curvature_batch_size, not both")
    model = build_configured_model(cfg)  # raises ValueError for bad model arguments
    try:
        as_separable(model)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"method=gnvpro cannot train model={cfg.model.name}: GNvpro eliminates the network's "
            "final affine layer, which model=deeponet and model=mlp have; "
            f"choose one of them ({exc})"
        ) from None


def train_gnvpro(
    cfg: DictConfig,
    build: Callable[[], torch.nn.Module],
    train_data: Data,
    run_dir: Path,
    comm: MPI.Comm,
) -> tuple[torch.nn.Module, dict]:
    """Train ``build()`` in float64 by GNvpro on the training MSE (settings ``cfg.method``); write
    ``checkpoint.pt`` and ``gnvpro.png``; return (model, metrics). Collective."""
    from pinn_lsr import vpro
    from pinn_lsr.train.checkpoint import model_state, save_checkpoint

    torch.manual_seed(int(cfg.seed))
    model = set_precision(build(), torch.float64)  # Gauss–Newton needs the accuracy
    settings = gnvpro_settings(cfg)
    log.info(
        "training %s (%d real parameters) on %d samples by GNvpro (%s, at most %d iterations)",
        cfg.model.name,
        count_real_parameters(model),
        len(train_data[0]),
        settings.globalization,
        settings.max_iterations,
    )
    # targets in units of their standard deviation, so the settings (damping, gradient_tol, alpha_*)
    # do not depend on the data's scale; the model's output normaliser takes the scale back after
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
            },
        )
        plot_gnvpro_history(
            run_dir / "gnvpro.png", history, title=f"{cfg.model.name} on {cfg.problem.name}: GNvpro"
        )
    comm.Barrier()
    metrics = {
        "model": cfg.model.name,
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


def lsr_settings(cfg: DictConfig):
    """The :class:`~pinn_lsr.lsr.settings.LSRSettings` of ``cfg.method`` (without its ``name``),
    seeded by ``cfg.seed``. Local.

    Raises:
        ValueError: an unknown key or a bad value; the message names it as ``method.<key>``.
    """
    from pinn_lsr.lsr.settings import LSRSettings

    options = {k: v for k, v in OmegaConf.to_container(cfg.method).items() if k != "name"}
    settings = LSRSettings.from_mapping(options, prefix="method.")
    return dataclasses.replace(settings, seed=int(cfg.seed))


def refine_model(
    cfg: DictConfig,
    model: torch.nn.Module,
    train_data: Data,
    test_data: Data | None,
    run_dir: Path,
    comm: MPI.Comm,
):
    """Refine ``model`` by LSR on the training rows (split across ranks), the rank picked on the
    last ``cfg.method.validation_fraction`` of them; return (metrics, refined model). Collective."""
    from pinn_lsr.lsr.refine import refine

    settings = lsr_settings(cfg)
    dtype = next(model.parameters()).dtype
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
        progress=bool(cfg.output.progress),
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
        "peak_memory_mb": report.peak_memory_mb,
        "total_peak_memory_mb": report.total_peak_memory_mb,
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
