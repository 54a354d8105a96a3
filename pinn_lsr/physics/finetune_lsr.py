"""Gradient fine-tuning finished by physics LSR, within one wall-time budget.

Physics LSR reads off the best field in the span of the network's tangent directions at its current
weights; how good that span is depends on the weights. Gradient fine-tuning on the FEM loss
(:func:`~pinn_lsr.physics.finetune.physics_finetune`) moves the weights so that the network's
features fit this instance, and a refinement from there keeps most of its gain (Darcy FNO, rank 256:
25× from the trained network, 10–13× after 3.5–10 s of Adam; bench/README.md), from a far better
start: the two compose. Of a budget of ``seconds``, the refinement gets at most ``share``, or less
when a basis of ``rank`` directions is expected to take less (from the cost per direction of a small
probe basis, built first), and the fine-tuning the rest (its optimiser steps, the network kept at
its lowest-loss iterate); the refinement's Krylov basis then grows until the time is spent
(:class:`~pinn_lsr.physics.refine.TimeLimit`) or it has ``rank`` directions.
"""

import time
from dataclasses import dataclass

import numpy as np
from torch import nn

from pinn_lsr.physics.finetune import physics_finetune
from pinn_lsr.physics.instances import FEMInstances
from pinn_lsr.physics.refine import PhysicsRefinement, krylov_physics_subspace, refine_physics

#: the least time left to the refinement: one block, whatever the fine-tuning overran
MIN_REFINE_SECONDS = 1e-3
#: the probe basis: this many blocks, at the trained weights, before the fine-tuning
PROBE_BLOCKS = 4
#: a basis of r directions is expected to take r times the probe's seconds per direction times
#: this. Measured at rank 256 against a 4-block probe: 0.6–0.8 on the Darcy FNO (b = 1: the
#: probe carries the start's fixed costs), 2.3–3.1 on the Darcy DeepONet (b = 8: its basis goes
#: on in parameter space); an underestimate only ends the basis below ``rank`` within the budget
GROWTH = 1.3


@dataclass(frozen=True)
class FinetuneLSRSettings:
    """The budget's split and the two methods' settings (module docstring)."""

    seconds: float  # the whole budget, wall time
    share: float = 1 / 3  # of the budget, the most left to the refinement
    rank: int = 256  # the refinement's most directions
    optimizer: str = "adam"
    lr: float = 1e-2
    norm: str = "energy"
    block_size: int = 1

    def __post_init__(self):
        if not self.seconds > 0:
            raise ValueError(f"seconds must be positive, got {self.seconds!r}")
        if not 0 < self.share < 1:
            raise ValueError(f"share must be between 0 and 1 (exclusive), got {self.share!r}")
        if self.rank < 1:
            raise ValueError(f"rank must be at least 1, got {self.rank!r}")


def finetune_then_refine(
    model: nn.Module, fem: FEMInstances, settings: FinetuneLSRSettings, *, seed: int = 0
) -> tuple[PhysicsRefinement, dict]:
    """Fine-tune ``model`` in place on ``fem``'s FEM loss, then refine it by Krylov physics LSR,
    within ``settings.seconds`` of wall time from this call (rank 0's clock). Collective.

    Returns the refinement (its ``fields``: owned dofs per instance) and a summary:
    ``probe_seconds`` (the probe basis), ``finetune_seconds`` (the probe and the fine-tuning),
    ``seconds`` (the whole method, the refinement's reduced solve included), ``steps``
    (optimiser steps), ``rank`` (the directions the refinement built), ``network_rel_l2`` (the
    fine-tuned network) and ``refined_rel_l2`` (mean relative errors against the FEM solutions;
    left out without references).
    """
    comm = fem.comm
    comm.Barrier()
    start = time.perf_counter()
    trained = fem.residual(model, norm=settings.norm)
    rank = min(settings.rank, trained.n_dofs, trained.jacobian.n_params)
    probe = min(PROBE_BLOCKS * settings.block_size, rank)
    krylov_physics_subspace(trained, probe, block_size=settings.block_size)
    probed = comm.bcast(time.perf_counter() - start, root=0)
    expected = GROWTH * rank * probed / probe  # the refinement's seconds at full rank
    refine_seconds = min(settings.share * settings.seconds, expected)
    history = physics_finetune(
        model,
        fem,
        seconds=max(settings.seconds - probed - refine_seconds, 0.0),
        optimizer=settings.optimizer,
        lr=settings.lr,
        norm=settings.norm,
        record_at=[],
    )
    finetuned = comm.bcast(time.perf_counter() - start, root=0)
    residual = fem.residual(model, norm=settings.norm)
    spent = comm.bcast(time.perf_counter() - start, root=0)
    result = refine_physics(
        residual,
        rank,
        block_size=settings.block_size,
        seed=seed,
        seconds=max(settings.seconds - spent, MIN_REFINE_SECONDS),
    )
    summary = {
        "probe_seconds": probed,
        "finetune_seconds": finetuned,
        "seconds": comm.bcast(time.perf_counter() - start, root=0),
        "steps": history[-1]["step"],
        "rank": result.report.rank,
    }
    if fem.references is not None:
        summary["network_rel_l2"] = float(np.mean(fem.errors(residual.u0)))
        summary["refined_rel_l2"] = float(np.mean(fem.errors(result.fields)))
    return result, summary
