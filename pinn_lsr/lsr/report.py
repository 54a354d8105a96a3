"""What one data LSR did: :class:`LSRReport` (ranks, scan, conditioning, objectives, seconds
and memory per phase, the budget's prediction), identical on every rank."""

import logging
from dataclasses import dataclass, field

import torch
from mpi4py import MPI

from pinn_lsr.parallel.device import peak_device_memory_mb
from pinn_lsr.parallel.memory import local_peak_memory_mb

log = logging.getLogger(__name__)


@dataclass
class LSRReport:
    """What one refinement did (identical on every rank)."""

    rank: int  # rank kept (best on validation, or the maximum)
    max_rank: int
    n_params: int  # m, parameters LSR could change
    n_rows: int  # residual rows over all ranks
    scan: list[dict] = field(default_factory=list)  # per rank: train objective, held-out errors
    singular_values: list[float] = field(default_factory=list)  # of G V; empty when estimated
    condition_number: float = float("nan")
    effective_rank: int = 0
    conditioning_estimated: bool = False  # condition number and effective rank estimated, O(r²)
    svd_fallback_ranks: list[int] = field(default_factory=list)  # solved by the O(r³) fallback
    initial_objective: float = float("nan")  # ||f(θ0)||² / n_samples
    linearized_objective: float = float("nan")  # ||G V c + f||² / n_samples
    nonlinear_objective: float = float("nan")  # ||f(θ0 + δ)||² / n_samples
    seconds: dict = field(default_factory=dict)
    peak_memory_mb: float = 0.0  # peak resident memory of this process so far (the largest rank)
    peak_memory_mb_after: dict = field(default_factory=dict)  # the same after each phase
    total_peak_memory_mb: float = 0.0  # the same summed over the ranks
    peak_device_memory_mb: float | None = None  # CUDA: the allocator's peak, largest rank
    predicted: dict = field(default_factory=dict)  # with a budget: memory_gb, seconds, costs
    chunks: dict = field(default_factory=dict)  # samples and tangents per Jacobian-product chunk

    def record_reduced(self, reduced, n_samples: int) -> None:
        """Condition number and effective rank of G V (exact, or estimated in O(r²) for many
        columns: :func:`pinn_lsr.lsr.reduced.triangular_conditioning`) and the objective at θ0,
        from the factorised reduced problem. Collective for an LSQR solution."""
        conditioning = reduced.conditioning()
        self.singular_values = (
            [] if conditioning.singular_values is None else conditioning.singular_values.tolist()
        )
        self.condition_number = conditioning.condition_number
        self.effective_rank = conditioning.effective_rank
        self.conditioning_estimated = conditioning.estimated
        if self.effective_rank < self.max_rank:
            log.warning(
                "G V is rank deficient: effective rank %d of %d%s",
                self.effective_rank,
                self.max_rank,
                " (estimated from the diagonal of its R factor)" if conditioning.estimated else "",
            )
        self.initial_objective = reduced.initial_norm() ** 2 / n_samples

    def record_peak_memory(self, comm: MPI.Comm, device: torch.device) -> None:
        """The peak memory so far, largest over the ranks (also as the ``scan`` phase's) and
        summed over them; on a CUDA ``device`` also the allocator's peak there
        (``torch.cuda.max_memory_allocated``, largest over the ranks). Collective."""
        peak = local_peak_memory_mb()
        self.peak_memory_mb = self.peak_memory_mb_after["scan"] = comm.allreduce(peak, op=MPI.MAX)
        self.total_peak_memory_mb = comm.allreduce(peak)
        on_device = peak_device_memory_mb(device)
        self.peak_device_memory_mb = (
            None if on_device is None else comm.allreduce(on_device, op=MPI.MAX)
        )

    def log_summary(self) -> None:
        """Log the prediction against the measurement (with a budget) and the objectives. Local."""
        if self.predicted:
            log.info(
                "budget: predicted %.2f GB and %.0f s, measured %.2f GB and %.0f s",
                self.predicted["memory_gb"],
                self.predicted["seconds"],
                self.total_peak_memory_mb / 1024,
                self.seconds["total"],
            )
        log.info(
            "LSR rank %d (of %d): objective %.3e -> %.3e (linear), %.3e (committed weights) "
            "in %.1f s",
            self.rank,
            self.max_rank,
            self.initial_objective,
            self.linearized_objective,
            self.nonlinear_objective,
            self.seconds["total"],
        )
