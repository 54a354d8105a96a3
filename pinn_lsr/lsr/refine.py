"""One-shot linearized subspace refinement (LSR) of a trained model.

At θ0, with the data residual ``f(θ) = w ⊙ (q(θ) - y)`` and ``G = ∂f/∂θ``, LSR restricts the
correction to ``δ = V c`` (V: m × r from :mod:`pinn_lsr.lsr.subspace`) and solves
``min_c ||G V c + f(θ0)||`` directly (:mod:`pinn_lsr.lsr.reduced`). The refined predictor is the
linear model ``q(θ0, x) + J(x) δ``; the committed model has weights ``θ0 + δ``. The rank is the
regulariser: with held-out data, every rank ``r' ≤ r`` is scored and the best one kept.
"""

import copy
import logging
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from mpi4py import MPI
from torch import nn
from tqdm import tqdm

from pinn_lsr.lsr.allocator import retain_freed_memory
from pinn_lsr.io.atomic import atomic_path
from pinn_lsr.lsr.jacobian import ModelJacobian, select_parameters
from pinn_lsr.lsr.budget import fastest_chunks, measure_costs
from pinn_lsr.lsr.checkpoint import CheckpointStore, tensor_digest
from pinn_lsr.lsr.lean import lean_randomized_subspace
from pinn_lsr.lsr.reduced import REDUCTIONS, ReducedSolution, accumulator, finish, solve_dense
from pinn_lsr.lsr.residual import DataResidual
from pinn_lsr.lsr.subspace import krylov_subspace, random_subspace, randomized_subspace
from pinn_lsr.models.parameters import real_parameters

log = logging.getLogger(__name__)

SOLVERS = ("streaming", "dense", "lsqr")
SUBSPACES = ("randomized", "krylov", "random")
ENGINES = ("lean", "plain")


@dataclass
class LSRReport:
    """What one refinement did (identical on every rank)."""

    rank: int  # rank kept (best on validation, or the maximum)
    max_rank: int
    n_params: int  # m, parameters LSR could change
    n_rows: int  # residual rows over all ranks
    scan: list[dict] = field(
        default_factory=list
    )  # per rank: train objective (linearized), validation errors
    singular_values: list[float] = field(default_factory=list)  # of G V
    condition_number: float = float("nan")
    effective_rank: int = 0
    initial_objective: float = float("nan")  # ||f(θ0)||² / n_samples
    linearized_objective: float = float("nan")  # ||G V c + f||² / n_samples
    nonlinear_objective: float = float("nan")  # ||f(θ0 + δ)||² / n_samples
    seconds: dict = field(default_factory=dict)
    peak_memory_mb: float = 0.0  # peak resident memory of this process so far (the largest rank)
    peak_memory_mb_after: dict = field(
        default_factory=dict
    )  # the same at the end of each phase: where it grows
    total_peak_memory_mb: float = 0.0  # the same summed over the ranks
    predicted: dict = field(
        default_factory=dict
    )  # with a budget: predicted memory_gb, seconds, unit costs
    chunks: dict = field(default_factory=dict)  # samples and tangents per Jacobian-product chunk


class RefinedModel:
    """``q(θ0, x) + J(x) δ`` for a model at θ0 and a correction δ of its selected parameters."""

    def __init__(self, model: nn.Module, index: torch.Tensor, delta: torch.Tensor, forward=None):
        self.model = model
        self.index = index
        self.delta = delta
        self.forward = forward

    def predict(self, inputs: torch.Tensor, *, chunk_samples: int = 256) -> torch.Tensor:
        """Linear-model outputs (n_samples, n_outputs) with one forward-mode product per chunk."""
        jacobian = ModelJacobian(
            self.model, inputs, index=self.index, forward=self.forward, chunk_samples=chunk_samples
        )
        return (jacobian.outputs() + jacobian.jvp(self.delta)).reshape(len(inputs), -1)

    def committed(self) -> nn.Module:
        """A copy of the model with weights θ0 + δ."""
        model = copy.deepcopy(self.model)
        real = real_parameters(model)
        flat = torch.cat([t.detach().reshape(-1) for t in real.values()])
        flat[self.index] += self.delta.to(flat.dtype)
        with torch.no_grad():
            for t, piece in zip(
                real.values(), torch.split(flat, [t.numel() for t in real.values()])
            ):
                t.copy_(piece.reshape(t.shape))
        return model

    def save(self, path: str | Path) -> None:
        """Write θ0 (the model's state), the selection and δ, atomically. Local (call on one rank)."""
        state = {
            "model_state": self.model.state_dict(),
            "index": self.index,
            "delta": self.delta,
            "model_spec": getattr(self.model, "spec", None),
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    @classmethod
    def load(cls, path: str | Path, model: nn.Module) -> "RefinedModel":
        """Read a refinement saved by :meth:`save` into ``model`` (same architecture as saved)."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        model.load_state_dict(
            {k: v for k, v in state["model_state"].items() if isinstance(v, torch.Tensor)}
        )
        return cls(model, state["index"], state["delta"])


def refine(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    rank: int | None,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    relative: bool = True,
    subspace: str = "randomized",
    krylov_patience: float | None = 2.0,
    oversampling: int = 10,
    power_iterations: int = 0,
    row_fraction: float | None = None,
    distribution: str = "gaussian",
    scaled: bool = True,
    parameters: list[str] | None = None,
    fraction: float | None = None,
    solver: str = "streaming",
    petsc_options: dict | None = None,
    scan_ranks: list[int] | None = None,
    evaluate: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    chunk_samples: int | str = 256,
    chunk_tangents: int = 64,
    engine: str = "lean",
    reduction: str = "qr",
    block_columns: int = 256,
    checkpoint: str | Path | None = None,
    checkpoint_seconds: float = 300.0,
    progress: bool = False,
    memory_budget_gb: float | None = None,
    time_budget_minutes: float | None = None,
    seed: int = 0,
    forward=None,
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> tuple[RefinedModel, LSRReport]:
    """Refine ``model`` on ``(inputs, targets)`` by LSR of rank ``rank``.

    Collective on ``comm``: each rank passes its own share of the samples; every rank gets the
    same result.

    Args:
        model: any ``torch.nn.Module`` at its trained state θ0 (not modified).
        inputs: (n_samples, ...) this rank's inputs; targets: (n_samples, n_outputs) or any
            shape with n_samples first matching the model's outputs.
        rank: r, the subspace dimension (≤ parameters selected and ≤ residual rows).
        validation: held-out (inputs, targets) on this rank; with it, every rank in
            ``scan_ranks`` (default: about 20 values up to r) is scored and the best kept.
        evaluate: more named (inputs, targets) sets (e.g. ``{"test": ...}``) whose mean
            relative L2 error of the linear predictor is reported for every scanned rank.
        relative: weight samples by 1/||y_i|| (squared relative errors) instead of plain MSE.
        subspace: ``randomized`` (the paper's recipe), ``krylov`` (the Krylov space of the
            Gauss–Newton matrix from the gradient, LSQR's space: residual-adapted, the best for
            few directions) or ``random`` (for comparison); see :mod:`pinn_lsr.lsr.subspace`.
        krylov_patience: (krylov, with ``validation``) stop the basis once its size is this many
            times the rank whose solution fits the validation samples best (None: build all
            ``rank`` vectors).
        oversampling, power_iterations, distribution, scaled: options of the randomized recipe.
        row_fraction: find the subspace (the sketch and projection passes, or the Krylov
            products) on this random fraction of the samples only; the reduced problem still
            uses every row.
        parameters, fraction: restrict LSR to named parameters and/or a random fraction.
        solver: ``streaming`` (block QR over row chunks, G V never held whole), ``dense``, or
            ``lsqr`` (PETSc KSPLSQR on the distributed G V, sketch-preconditioned; options under
            the prefix ``lsr_``, e.g. ``-lsr_ksp_monitor``, or ``petsc_options``).
        chunk_samples, chunk_tangents: samples and tangents per vectorised Jacobian product
            (memory against speed); ``chunk_samples="auto"`` times a few sizes first and takes
            the fastest for each product direction (:func:`pinn_lsr.lsr.budget.fastest_chunks`).
        engine: (randomized subspace) ``lean`` (:mod:`pinn_lsr.lsr.lean`: Ω regenerated from seeds, sketch kept in
            the model's dtype, no explicit Q; peak about (n_sketch + m)·(r + p) values) or
            ``plain`` (the paper's recipe as written, for comparison). Same V up to round-off.
        reduction: how the ``streaming`` solver factorises ``[G V | f]``: ``qr`` (Householder,
            robust) or ``gram`` (normal equations in float64 then Cholesky: about 3x faster,
            squares the condition number of G V, which the scaled basis keeps small).
        block_columns: (lean) columns of Ω per product block.
        checkpoint: a directory where the lean engine keeps each block of the sketch and of the
            projection and, every ``checkpoint_seconds``, the reduced factor so far; a run
            restarted with the same arguments resumes from them.
        progress: progress bars (rank 0) over the passes.
        memory_budget_gb, time_budget_minutes: a budget for the whole run (memory summed over
            the ranks); a pilot measures the unit costs (:mod:`pinn_lsr.lsr.budget`) and the
            largest rank predicted to fit is used (``rank``, if given, caps it). The report
            holds the predicted and the measured figures.
        forward: ``forward(model, inputs) -> outputs`` when the model is not called as model(x).

    Raises:
        ValueError: mismatched lengths, NaN/Inf in the data or residual, a rank larger than the
            parameter count or the number of rows, a model without trainable parameters, or
            unknown options; raised on every rank before any heavy work.

    Note:
        Calls :func:`pinn_lsr.lsr.allocator.retain_freed_memory` (process-wide): the vectorised
        products allocate and free large temporaries, which glibc would otherwise unmap each time.
    """
    total_start = time.perf_counter()
    retain_freed_memory()
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
    if subspace not in SUBSPACES:
        raise ValueError(f"unknown subspace {subspace!r}; choose one of {SUBSPACES}")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}")
    if checkpoint is not None and (engine != "lean" or subspace != "randomized"):
        raise ValueError("checkpoints need engine='lean' and subspace='randomized'")
    index = select_parameters(model, names=parameters, fraction=fraction, seed=seed)
    if chunk_samples != "auto" and (
        isinstance(chunk_samples, bool) or not isinstance(chunk_samples, int) or chunk_samples < 1
    ):
        raise ValueError(
            f"chunk_samples must be a positive integer or 'auto', got {chunk_samples!r}"
        )
    jacobian = ModelJacobian(
        model,
        inputs,
        index=index,
        forward=forward,
        chunk_samples=1 if chunk_samples == "auto" else chunk_samples,
        chunk_tangents=chunk_tangents,
    )
    if chunk_samples == "auto":
        start = time.perf_counter()
        chunks = fastest_chunks(jacobian, comm)
        jacobian.chunk_samples, jacobian.vjp_chunk_samples = (
            chunks["chunk_samples"],
            chunks["vjp_chunk_samples"],
        )
        log.info(
            "Jacobian products: %d samples per forward-mode chunk, %d per reverse-mode chunk (measured in %.1f s)",
            jacobian.chunk_samples,
            jacobian.vjp_chunk_samples,
            time.perf_counter() - start,
        )
    residual = DataResidual.create(jacobian, targets, relative=relative, comm=comm)
    n_samples = comm.allreduce(len(inputs))
    n_rows = comm.allreduce(jacobian.n_rows)
    budgeted = memory_budget_gb is not None or time_budget_minutes is not None
    if rank is None and not budgeted:
        raise ValueError("give a rank, or a memory and/or time budget to choose it")
    if budgeted and subspace == "random":
        raise ValueError("budgets are predicted for the randomized and krylov subspaces only")
    if rank is not None and not 1 <= rank <= min(jacobian.n_params, n_rows - 1):
        raise ValueError(
            f"rank must be between 1 and min(parameters, rows - 1) = "
            f"min({jacobian.n_params}, {n_rows - 1}), got {rank}"
        )
    if row_fraction is not None:
        sketch_samples = _sample_subset(len(inputs), row_fraction, seed, comm)
        n_sketch_rows = comm.allreduce(int(sketch_samples.sum())) * jacobian.n_outputs
        if rank is not None and n_sketch_rows < rank + oversampling:
            raise ValueError(
                f"row_fraction={row_fraction} leaves {n_sketch_rows} rows for the sketch, "
                f"fewer than rank + oversampling = {rank + oversampling}"
            )
    held_out = {
        **(evaluate or {}),
        **({"validation": validation} if validation is not None else {}),
    }
    held_out_residuals = {  # checked now, before the heavy work
        name: DataResidual.create(
            ModelJacobian(model, x, index=index, forward=forward, **jacobian.chunks),
            y,
            relative=relative,
            comm=comm,
        )
        for name, (x, y) in held_out.items()
    }
    f0 = residual.value()
    if not comm.allreduce(bool(torch.isfinite(f0).all()), op=MPI.LAND):
        raise ValueError(
            "the residual at θ0 contains NaN or infinite values (model outputs or targets)"
        )

    predicted = {}
    if budgeted:
        costs = measure_costs(
            residual,
            n_sketch_samples=len(inputs) if row_fraction is None else int(sketch_samples.sum()),
            n_probe_samples=sum(len(x) for x, _ in held_out.values()),
            engine=engine,
            subspace=subspace,
            reduction=reduction,
            oversampling=oversampling,
            block_columns=block_columns,
            comm=comm,
        )
        cap = min(
            rank or jacobian.n_params,
            jacobian.n_params,
            n_rows - 1,
            n_rows - oversampling if row_fraction is None else n_sketch_rows - oversampling,
        )
        memory = None if memory_budget_gb is None else memory_budget_gb * 2**30
        seconds = None if time_budget_minutes is None else time_budget_minutes * 60.0
        rank = costs.largest_rank(memory_bytes=memory, seconds=seconds, cap=cap)
        if rank < 1:
            raise ValueError(
                f"the budget ({memory_budget_gb} GB, {time_budget_minutes} min) is too small for rank 1: "
                f"predicted {costs.memory_bytes(1) / 2**30:.2f} GB and {costs.seconds(1):.0f} s"
            )
        predicted = {
            "memory_gb": costs.memory_bytes(rank) / 2**30,
            "seconds": costs.seconds(rank),
            "costs": costs.as_dict(),
        }
        log.info(
            "budget %s GB, %s min: rank %d, predicted %.2f GB and %.0f s",
            memory_budget_gb,
            time_budget_minutes,
            rank,
            predicted["memory_gb"],
            predicted["seconds"],
        )
    store = None
    if checkpoint is not None:
        fingerprint = {
            "rank": rank,
            "oversampling": oversampling,
            "power_iterations": power_iterations,
            "distribution": distribution,
            "scaled": scaled,
            "seed": seed,
            "row_fraction": row_fraction,
            "subspace": subspace,
            "reduction": reduction,
            "block_columns": block_columns,
            "n_rows": jacobian.n_rows,
            "index": tensor_digest(index),
            "theta0": tensor_digest(jacobian.theta0),
            "f0": tensor_digest(f0),
        }
        store = CheckpointStore(checkpoint, fingerprint, comm)

    report = LSRReport(
        rank=rank,
        max_rank=rank,
        n_params=jacobian.n_params,
        n_rows=n_rows,
        predicted=predicted,
        chunks=jacobian.chunks,
    )
    sketch_residual = residual if row_fraction is None else residual.subset(sketch_samples)
    if subspace == "randomized":
        options = dict(
            comm=comm,
            oversampling=oversampling,
            power_iterations=power_iterations,
            distribution=distribution,
            scaled=scaled,
            seed=seed,
        )
        if engine == "lean":
            basis = lean_randomized_subspace(
                sketch_residual,
                rank,
                block_columns=block_columns,
                store=store,
                progress=progress,
                **options,
            )
        else:
            basis = randomized_subspace(sketch_residual, rank, **options)
    elif subspace == "krylov":
        basis = krylov_subspace(
            sketch_residual,
            rank,
            comm=comm,
            held_out=held_out_residuals.get("validation"),
            patience=krylov_patience,
            progress=progress,
        )
        rank = report.rank = report.max_rank = basis.V.shape[
            1
        ]  # smaller if stopped early or invariant
    else:
        basis = random_subspace(jacobian.n_params, rank, seed=seed, dtype=jacobian.dtype)
    del sketch_residual
    report.seconds.update(basis.seconds)
    report.peak_memory_mb_after["subspace"] = _peak_memory_mb(comm)

    start = time.perf_counter()
    if solver == "dense":
        reduced = solve_dense(residual.G(basis.V).double().numpy(), f0.double().numpy(), comm)
    elif solver == "lsqr":
        from pinn_lsr.lsr.lsqr import LSQRSolution

        reduced = LSQRSolution(
            residual.G(basis.V).double().numpy(),
            f0.double().numpy(),
            comm,
            options=petsc_options,
            seed=seed,
        )
    else:
        reduced = _stream_reduced(
            residual,
            basis.V,
            f0,
            rank,
            comm=comm,
            reduction=reduction,
            store=store,
            progress=progress,
            checkpoint_seconds=checkpoint_seconds,
        )
    report.seconds["gv_pass_and_qr"] = time.perf_counter() - start
    report.peak_memory_mb_after["reduced"] = _peak_memory_mb(comm)

    start = time.perf_counter()
    singular_values = reduced.singular_values()
    report.singular_values = singular_values.tolist()
    report.condition_number = (
        float(singular_values[0] / singular_values[-1]) if singular_values[-1] > 0 else float("inf")
    )
    report.effective_rank = reduced.effective_rank()
    if report.effective_rank < rank:
        log.warning("G V is rank deficient: effective rank %d of %d", report.effective_rank, rank)
    report.initial_objective = reduced.initial_norm() ** 2 / n_samples

    ranks = sorted(
        set(scan_ranks or np.unique(np.geomspace(1, rank, 20).astype(int)).tolist()) | {rank}
    )
    probes = {name: _Probe(r, basis.V, comm) for name, r in held_out_residuals.items()}
    report.peak_memory_mb_after["probes"] = _peak_memory_mb(comm)
    for r in ranks:
        c = torch.from_numpy(reduced.coefficients(r))
        entry = {"rank": r, "train_objective": reduced.residual_norm(r) ** 2 / n_samples}
        for name, probe in probes.items():
            entry.update({f"{name}_{key}": value for key, value in probe.errors(c).items()})
        report.scan.append(entry)
    if validation is not None:
        report.rank = min(report.scan, key=lambda e: e["validation_objective"])["rank"]
    c = torch.from_numpy(reduced.coefficients(report.rank))
    delta = basis.correction(c).to(jacobian.dtype)
    report.linearized_objective = reduced.residual_norm(report.rank) ** 2 / n_samples
    report.nonlinear_objective = (
        comm.allreduce(float(residual.value(jacobian.theta0 + delta).double().pow(2).sum()))
        / n_samples
    )
    report.seconds["solve_and_scan"] = time.perf_counter() - start
    report.seconds["total"] = time.perf_counter() - total_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report.peak_memory_mb = report.peak_memory_mb_after["scan"] = comm.allreduce(peak, op=MPI.MAX)
    report.total_peak_memory_mb = comm.allreduce(peak)
    if predicted:
        log.info(
            "budget: predicted %.2f GB and %.0f s, measured %.2f GB and %.0f s",
            predicted["memory_gb"],
            predicted["seconds"],
            report.total_peak_memory_mb / 1024,
            report.seconds["total"],
        )
    log.info(
        "LSR rank %d (of %d): objective %.3e -> %.3e (linear), %.3e (committed weights) in %.1f s",
        report.rank,
        rank,
        report.initial_objective,
        report.linearized_objective,
        report.nonlinear_objective,
        report.seconds["total"],
    )
    return RefinedModel(model, index, delta, forward), report


def _peak_memory_mb(comm: MPI.Comm) -> float:
    """Peak resident memory of this process so far, MB, the largest over ``comm``. Collective."""
    return comm.allreduce(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, op=MPI.MAX)


def _stream_reduced(
    residual: DataResidual,
    V: torch.Tensor,
    f0: torch.Tensor,
    rank: int,
    *,
    comm: MPI.Comm,
    reduction: str,
    store: CheckpointStore | None,
    progress: bool,
    checkpoint_seconds: float,
) -> ReducedSolution:
    """One pass over this rank's rows accumulating ``[G V | f]`` (never held whole), saving the
    accumulator to ``store`` every ``checkpoint_seconds`` and resuming from it. Collective."""
    stream = accumulator(reduction, rank + 1)
    n_samples, n_outputs = len(residual.jacobian.inputs), residual.jacobian.n_outputs
    done = 0
    saved = store.load("reduction") if store is not None else None
    if saved is not None:
        stream.restore(saved)
        done = int(saved["samples"])
    remaining = residual if done == 0 else residual.subset(torch.arange(done, n_samples))
    last_save = time.perf_counter()
    with tqdm(
        total=n_samples,
        initial=done,
        desc="LSR reduced problem [G·V | f]",
        unit="sample",
        disable=not progress or comm.rank != 0,
    ) as bar:
        for GV, f in remaining.G_blocks(V, f0[done * n_outputs :]):
            block = np.empty(
                (len(GV), GV.shape[1] + 1)
            )  # [G V | f] in float64, cast in place: one copy
            block[:, :-1], block[:, -1] = GV.numpy(), f.numpy()
            del GV
            stream.add(block)
            done += len(block) // n_outputs
            bar.update(len(block) // n_outputs)
            if store is not None and time.perf_counter() - last_save > checkpoint_seconds:
                store.save("reduction", {**stream.state(), "samples": done})
                last_save = time.perf_counter()
    return finish(stream, rank, comm)


def _sample_subset(n_local: int, fraction: float, seed: int, comm: MPI.Comm) -> torch.Tensor:
    """A random subset of this rank's samples, drawn by global sample index (so the same
    samples are chosen whatever the number of ranks). Collective."""
    if not 0 < fraction <= 1:
        raise ValueError(f"row_fraction must be in (0, 1], got {fraction}")
    offset = comm.exscan(n_local) or 0
    draws = np.random.default_rng([seed, 7]).random(comm.allreduce(n_local))[
        offset : offset + n_local
    ]
    return torch.from_numpy(draws < fraction)


class _Probe:
    """Errors of the linear predictor ``q + (J V)[:, :r'] c`` on a held-out set, for any rank."""

    def __init__(self, residual: DataResidual, V: torch.Tensor, comm: MPI.Comm):
        jacobian = residual.jacobian
        self.n_samples = len(jacobian.inputs)
        self.targets = residual.targets.double().reshape(self.n_samples, -1)
        self.q = jacobian.outputs().double().reshape(self.n_samples, -1)
        self.JV = torch.empty(
            jacobian.n_rows, V.shape[1], dtype=V.dtype
        )  # float32 keeps large ranks affordable
        for first, block in jacobian.jvp_blocks(V):
            self.JV[first : first + len(block)] = block
        self.weights = (
            None
            if residual.row_weights is None
            else residual.row_weights.double().reshape(self.n_samples, -1)
        )
        self.comm = comm
        self.n_total = comm.allreduce(self.n_samples)

    def errors(self, c: torch.Tensor) -> dict:
        """``objective`` (weighted squared residual per sample) and mean ``rel_l2``. Collective."""
        error = (
            self.q
            + (self.JV[:, : len(c)] @ c.to(self.JV.dtype)).double().reshape(self.n_samples, -1)
            - self.targets
        )
        weighted = error if self.weights is None else error * self.weights
        objective = float(weighted.pow(2).sum())
        rel = float(
            (
                torch.linalg.vector_norm(error, dim=1)
                / torch.linalg.vector_norm(self.targets, dim=1)
            ).sum()
        )
        totals = np.array([objective, rel])
        self.comm.Allreduce(MPI.IN_PLACE, totals, op=MPI.SUM)
        return {"objective": totals[0] / self.n_total, "rel_l2": totals[1] / self.n_total}
