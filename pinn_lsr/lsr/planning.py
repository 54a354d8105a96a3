"""Rank planning phase of :func:`pinn_lsr.lsr.refine.refine`: the Jacobian-product chunks,
the checks that need the data, the rows the subspace is found on, and the rank a budget affords
(from the unit costs measured by :mod:`pinn_lsr.lsr.budget`)."""

import logging
import time

import numpy as np
import torch
from mpi4py import MPI

from pinn_lsr.lsr.budget import fastest_chunks, measure_costs
from pinn_lsr.lsr.jacobian import ModelJacobian
from pinn_lsr.lsr.residual import DataResidual
from pinn_lsr.lsr.settings import LSRSettings
from pinn_lsr.parallel.mpi import raise_collectively

log = logging.getLogger(__name__)


def planned_jacobian(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    *,
    index: torch.Tensor,
    forward,
    settings: LSRSettings,
    comm: MPI.Comm,
) -> ModelJacobian:
    """The Jacobian products of ``model`` at this rank's ``inputs`` for the selection ``index``,
    in chunks of ``settings.chunk_samples`` samples and ``settings.chunk_tangents`` tangents;
    with ``chunk_samples="auto"``, the sample chunks measured fastest in each product direction
    (:func:`pinn_lsr.lsr.budget.fastest_chunks`). Collective when ``auto``, else local."""
    auto = settings.chunk_samples == "auto"
    jacobian = ModelJacobian(
        model,
        inputs,
        index=index,
        forward=forward,
        chunk_samples=1 if auto else settings.chunk_samples,
        chunk_tangents=settings.chunk_tangents,
    )
    if not auto:
        return jacobian
    start = time.perf_counter()
    chunks = fastest_chunks(jacobian, comm)
    jacobian.chunk_samples = chunks["chunk_samples"]
    jacobian.vjp_chunk_samples = chunks["vjp_chunk_samples"]
    log.info(
        "Jacobian products: %d samples per forward-mode chunk, %d per reverse-mode chunk "
        "(measured in %.1f s)",
        jacobian.chunk_samples,
        jacobian.vjp_chunk_samples,
        time.perf_counter() - start,
    )
    return jacobian


def check_shares(sets: dict[str, tuple[torch.Tensor, torch.Tensor]], comm: MPI.Comm) -> None:
    """Raise ValueError on every rank if a rank holds no sample of one of the named ``(inputs,
    targets)`` sets: every rank evaluates the model on its share, so an empty share is refused
    before any collective (it would leave the other ranks waiting). Collective."""
    message = None
    for name, (inputs, _) in sets.items():
        if len(inputs) == 0:
            message = (
                f"the {name} samples leave rank {comm.rank} of {comm.size} without any; "
                "every MPI rank needs at least one (more samples, or fewer ranks)"
            )
            break
    raise_collectively(comm, message)


def check_rank(rank: int | None, n_params: int, n_rows: int) -> None:
    """Raise ValueError unless ``1 <= rank <= min(n_params, n_rows - 1)`` (None passes: the
    budget chooses). ``n_rows`` over all ranks. Local (same outcome on every rank)."""
    if rank is not None and not 1 <= rank <= min(n_params, n_rows - 1):
        raise ValueError(
            f"rank must be between 1 and min(parameters, rows - 1) = "
            f"min({n_params}, {n_rows - 1}), got {rank}"
        )


def sketch_samples(
    n_local: int, n_outputs: int, settings: LSRSettings, comm: MPI.Comm
) -> tuple[torch.Tensor | None, int | None]:
    """This rank's samples the subspace is found on (a boolean mask, or None for all of them)
    and the sketch rows over all ranks (None for all rows), for ``settings.row_fraction``.

    The subset is drawn by global sample index, so the same samples are chosen whatever the
    number of ranks. Collective.

    Raises:
        ValueError: (on every rank) the subset leaves fewer rows than rank + oversampling.
    """
    if settings.row_fraction is None:
        return None, None
    offset = comm.exscan(n_local) or 0
    draws = np.random.default_rng([settings.seed, 7]).random(comm.allreduce(n_local))
    mask = torch.from_numpy(draws[offset : offset + n_local] < settings.row_fraction)
    n_sketch_rows = comm.allreduce(int(mask.sum())) * n_outputs
    rank, oversampling = settings.rank, settings.oversampling
    if rank is not None and n_sketch_rows < rank + oversampling:
        raise ValueError(
            f"row_fraction={settings.row_fraction} leaves {n_sketch_rows} rows for the sketch, "
            f"fewer than rank + oversampling = {rank + oversampling}"
        )
    return mask, n_sketch_rows


def plan_rank(
    residual: DataResidual,
    settings: LSRSettings,
    *,
    n_rows: int,
    n_sketch_samples: int,
    n_sketch_rows: int | None,
    n_probe_samples: int,
    comm: MPI.Comm,
) -> tuple[int, dict]:
    """The largest rank the budget of ``settings`` affords (``settings.rank``, if given, caps it)
    and the prediction for it: ``{memory_gb, seconds, costs}``. Collective (a pilot of a few
    seconds measures the unit costs on this rank's samples).

    Args:
        n_rows: residual rows over all ranks; ``n_sketch_rows``: those the subspace is found on
            (None: all of them); ``n_sketch_samples``: this rank's samples among them;
            ``n_probe_samples``: this rank's held-out samples (validation and evaluation sets).

    Raises:
        ValueError: the budget is too small for rank 1.
    """
    s = settings
    costs = measure_costs(
        residual,
        n_sketch_samples=n_sketch_samples,
        n_probe_samples=n_probe_samples,
        engine=s.engine,
        subspace=s.subspace,
        reduction=s.reduction,
        oversampling=s.oversampling,
        block_columns=s.block_columns,
        comm=comm,
    )
    n_params = residual.jacobian.n_params
    cap = min(
        s.rank or n_params,
        n_params,
        n_rows - 1,
        n_rows - s.oversampling if n_sketch_rows is None else n_sketch_rows - s.oversampling,
    )
    memory = None if s.memory_budget_gb is None else s.memory_budget_gb * 2**30
    seconds = None if s.time_budget_minutes is None else s.time_budget_minutes * 60.0
    rank = costs.largest_rank(memory_bytes=memory, seconds=seconds, cap=cap)
    if rank < 1:
        raise ValueError(
            f"the budget ({s.memory_budget_gb} GB, {s.time_budget_minutes} min) is too small "
            f"for rank 1: predicted {costs.memory_bytes(1) / 2**30:.2f} GB and "
            f"{costs.seconds(1):.0f} s"
        )
    predicted = {
        "memory_gb": costs.memory_bytes(rank) / 2**30,
        "seconds": costs.seconds(rank),
        "costs": costs.as_dict(),
    }
    log.info(
        "budget %s GB, %s min: rank %d, predicted %.2f GB and %.0f s",
        s.memory_budget_gb,
        s.time_budget_minutes,
        rank,
        predicted["memory_gb"],
        predicted["seconds"],
    )
    return rank, predicted
