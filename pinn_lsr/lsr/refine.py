"""One-shot linearized subspace refinement (LSR) of a trained model: at θ0, with the data
residual ``f(θ) = w ⊙ (q(θ) - y)`` and ``G = ∂f/∂θ``, solve ``min_c ||G V c + f(θ0)||`` in a
subspace V (m × r); the refined predictor is ``q(θ0, x) + J(x) V c``. The rank regularises: with
held-out data every rank ``r' ≤ r`` is scored and the best kept. Phases: :mod:`.planning`,
:mod:`.basis`, :mod:`.reduction`, :mod:`.scan`; options: :class:`.settings.LSRSettings`."""

import copy
import time

import torch
from mpi4py import MPI
from torch import nn

from pinn_lsr.lsr.allocator import retain_freed_memory
from pinn_lsr.lsr.basis import build_subspace
from pinn_lsr.lsr.denormals import flush_denormals
from pinn_lsr.lsr.jacobian import select_parameters
from pinn_lsr.lsr.planning import (
    check_rank,
    check_shares,
    plan_rank,
    planned_jacobian,
    sketch_samples,
)
from pinn_lsr.lsr.reduction import solve_reduced
from pinn_lsr.lsr.refined import RefinedModel
from pinn_lsr.lsr.report import LSRReport
from pinn_lsr.lsr.residual import DataResidual
from pinn_lsr.lsr.restart import open_restart_store
from pinn_lsr.lsr.scan import Probe, probe_residuals, ranks_to_scan, scan
from pinn_lsr.lsr.settings import LSRSettings
from pinn_lsr.models.parameters import set_precision
from pinn_lsr.parallel.device import reset_peak_device_memory, resolve_device
from pinn_lsr.parallel.memory import peak_memory_mb

Data = tuple[torch.Tensor, torch.Tensor]  # (inputs (n_samples, ...), targets (n_samples, ...))


def refine(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    settings: LSRSettings | None = None,
    *,
    validation: Data | None = None,
    evaluate: dict[str, Data] | None = None,
    forward=None,
    progress: bool = False,
    comm: MPI.Comm = MPI.COMM_WORLD,
    **overrides,
) -> tuple[RefinedModel, LSRReport]:
    """Refine ``model`` on ``(inputs, targets)`` by LSR. Collective on ``comm``: each rank passes
    its own share of the samples; every rank gets the same result.

    Args:
        model: any ``torch.nn.Module`` at its trained state θ0 (not modified).
        inputs: (n_samples, ...) this rank's inputs; targets: (n_samples, n_outputs) or any
            shape with n_samples first matching the model's outputs.
        settings: the options (rank, budgets, subspace, solver, ...); ``overrides`` are
            :class:`LSRSettings` fields applied on top, e.g. ``refine(model, x, y, rank=40)``.
        validation: held-out (inputs, targets) on this rank; with it, every rank in
            ``settings.scan_ranks`` (default: about 20 up to r) is scored and the best kept.
        evaluate: more named (inputs, targets) sets (e.g. ``{"test": ...}``) whose errors of
            the linear predictor are reported for every scanned rank.
        forward: ``forward(model, inputs) -> outputs`` when the model is not called as model(x).
        progress: progress bars (rank 0) over the passes.

    Returns:
        The refined model (on the CPU, whatever ``settings.device``) and the report.

    Raises:
        ValueError: a bad or unknown setting, mismatched lengths, NaN/Inf in the data or
            residual, a rank above the parameter or row count, too few rows left by
            ``row_fraction``, no trainable parameters, a budget too small; on every rank
            before any heavy work.

    Note:
        Calls :func:`pinn_lsr.lsr.denormals.flush_denormals` (process-wide: a trained network's
        products run several times faster) and
        :func:`pinn_lsr.lsr.allocator.retain_freed_memory` (process-wide): the vectorised
        products allocate and free large temporaries, which glibc would otherwise unmap each time.
    """
    total_start = time.perf_counter()
    retain_freed_memory()
    flush_denormals()
    s = LSRSettings.from_mapping(overrides) if settings is None else settings.replace(**overrides)
    device = resolve_device(s.device, comm)
    reset_peak_device_memory(device)
    held_out = {**(evaluate or {}), **({} if validation is None else {"validation": validation})}
    if s.dtype is not None:  # a copy of the model in that precision, and the data with it
        dtype = getattr(torch, s.dtype)
        if next(model.parameters()).dtype != dtype:
            model = set_precision(copy.deepcopy(model), dtype)
        inputs, targets = inputs.to(dtype), targets.to(dtype)
        held_out = {name: (x.to(dtype), y.to(dtype)) for name, (x, y) in held_out.items()}
    check_shares({"training": (inputs, targets), **held_out}, comm)
    index = select_parameters(model, names=s.parameters, fraction=s.fraction, seed=s.seed)
    # the work on the device: a copy of the model there, and the data with it (no copy on the CPU)
    working = model if device.type == "cpu" else copy.deepcopy(model).to(device)
    inputs, targets = inputs.to(device), targets.to(device)
    held_out = {name: (x.to(device), y.to(device)) for name, (x, y) in held_out.items()}
    jacobian = planned_jacobian(
        working, inputs, index=index, forward=forward, settings=s, comm=comm
    )
    residual = DataResidual.create(jacobian, targets, relative=s.relative, comm=comm)
    n_samples, n_rows = comm.allreduce(len(inputs)), comm.allreduce(jacobian.n_rows)
    check_rank(s.rank, jacobian.n_params, n_rows)
    sketch, n_sketch_rows = sketch_samples(len(inputs), jacobian.n_outputs, s, comm)
    held_out_residuals = probe_residuals(  # checked now, before the heavy work
        working,
        held_out,
        index=index,
        forward=forward,
        chunks=jacobian.chunks,
        settings=s,
        comm=comm,
    )
    f0 = residual.value()
    if not comm.allreduce(bool(torch.isfinite(f0).all()), op=MPI.LAND):
        raise ValueError("the residual at θ0 contains NaN or infinite values (outputs or targets)")

    rank, predicted = s.rank, {}
    if s.budgeted:
        rank, predicted = plan_rank(
            residual,
            s,
            n_rows=n_rows,
            n_sketch_samples=len(inputs) if sketch is None else int(sketch.sum()),
            n_sketch_rows=n_sketch_rows,
            n_probe_samples=sum(len(x) for x, _ in held_out.values()),
            comm=comm,
        )
    store = open_restart_store(
        s, rank, n_rows=jacobian.n_rows, index=index, theta0=jacobian.theta0, f0=f0, comm=comm
    )
    basis = build_subspace(
        residual if sketch is None else residual.subset(sketch),
        rank,
        s,
        held_out=held_out_residuals.get("validation"),
        store=store,
        progress=progress,
        comm=comm,
    )
    rank = basis.V.shape[1]  # a Krylov basis stops early when the held-out error turns up
    report = LSRReport(rank, rank, jacobian.n_params, n_rows, predicted=predicted)
    report.chunks, report.seconds = jacobian.chunks, dict(basis.seconds)
    report.peak_memory_mb_after["subspace"] = peak_memory_mb(comm)

    start = time.perf_counter()
    reduced = solve_reduced(residual, basis.V, f0, s, store=store, progress=progress, comm=comm)
    report.seconds["gv_pass_and_qr"] = time.perf_counter() - start
    report.peak_memory_mb_after["reduced"] = peak_memory_mb(comm)

    start = time.perf_counter()
    report.record_reduced(reduced, n_samples)
    probes = {name: Probe(r, basis.V, comm) for name, r in held_out_residuals.items()}
    report.peak_memory_mb_after["probes"] = peak_memory_mb(comm)
    report.scan = scan(reduced, probes, ranks_to_scan(rank, s.scan_ranks), n_samples)
    if validation is not None:
        report.rank = min(report.scan, key=lambda e: e["validation_objective"])["rank"]
    delta = basis.correction(torch.from_numpy(reduced.coefficients(report.rank)))
    report.svd_fallback_ranks = list(reduced.fallback_ranks)
    delta = delta.to(jacobian.dtype)
    report.linearized_objective = reduced.residual_norm(report.rank) ** 2 / n_samples
    nonlinear = float(residual.value(jacobian.theta0 + delta).double().pow(2).sum())
    report.nonlinear_objective = comm.allreduce(nonlinear) / n_samples
    report.seconds["solve_and_scan"] = time.perf_counter() - start
    report.seconds["total"] = time.perf_counter() - total_start
    report.record_peak_memory(comm, device)
    report.log_summary()
    return RefinedModel(model, index, delta.cpu(), forward), report
