"""Gradient fine-tuning finished by physics LSR, within one wall-time budget.

Physics LSR reads off the best field in the span of the network's tangent directions at its
current weights; how good that span is depends on the weights. Gradient fine-tuning on the FEM
loss (:func:`~pinn_lsr.physics.finetune.physics_finetune`) moves the weights so that the
network's features fit this instance, and a refinement from there gains about as much as from the
trained network, from a far better start (Darcy FNO, bench/README.md): the two compose. Of a
budget of ``seconds``, the fine-tuning takes ``1 − share`` (its optimiser steps, the network kept
at its lowest-loss iterate) and the refinement the rest, its Krylov basis growing until the time
is spent (:class:`~pinn_lsr.physics.refine.TimeLimit`) or it has ``rank`` directions.
"""

import time
from dataclasses import dataclass

import numpy as np
from torch import nn

from pinn_lsr.physics.finetune import physics_finetune
from pinn_lsr.physics.instances import FEMInstances
from pinn_lsr.physics.refine import PhysicsRefinement, refine_physics

#: the least time left to the refinement: one block, whatever the fine-tuning overran
MIN_REFINE_SECONDS = 1e-3


@dataclass(frozen=True)
class FinetuneLSRSettings:
    """The budget's split and the two methods' settings (module docstring)."""

    seconds: float  # the whole budget, wall time
    share: float = 1 / 3  # of the budget left to the refinement
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
    ``finetune_seconds``, ``seconds`` (the whole method, the refinement's reduced solve
    included), ``steps`` (optimiser steps), ``rank`` (the directions the refinement built),
    ``network_rel_l2`` (the fine-tuned network) and ``refined_rel_l2`` (mean relative errors
    against the FEM solutions; left out without references).
    """
    comm = fem.comm
    comm.Barrier()
    start = time.perf_counter()
    history = physics_finetune(
        model,
        fem,
        seconds=(1 - settings.share) * settings.seconds,
        optimizer=settings.optimizer,
        lr=settings.lr,
        norm=settings.norm,
        record_at=[],
    )
    finetuned = comm.bcast(time.perf_counter() - start, root=0)
    network = fem.network_fields(model)
    residual = fem.residual(model, norm=settings.norm)
    spent = comm.bcast(time.perf_counter() - start, root=0)
    result = refine_physics(
        residual,
        min(settings.rank, residual.n_dofs, residual.jacobian.n_params),
        block_size=settings.block_size,
        seed=seed,
        seconds=max(settings.seconds - spent, MIN_REFINE_SECONDS),
    )
    summary = {
        "finetune_seconds": finetuned,
        "seconds": comm.bcast(time.perf_counter() - start, root=0),
        "steps": history[-1]["step"],
        "rank": result.report.rank,
    }
    if fem.references is not None:
        summary["network_rel_l2"] = float(np.mean(fem.errors(network)))
        summary["refined_rel_l2"] = float(np.mean(fem.errors(result.fields)))
    return result, summary
