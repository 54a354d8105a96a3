"""Validation scan phase of :func:`pinn_lsr.lsr.refine.refine`: the solution of the reduced
problem for every rank ``r' ≤ r`` (one factorisation serves them all, see
:mod:`pinn_lsr.lsr.reduced`), scored on the training objective and on held-out sets."""

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from mpi4py import MPI

from pinn_lsr.lsr.jacobian import ModelJacobian
from pinn_lsr.lsr.residual import DataResidual
from pinn_lsr.lsr.settings import LSRSettings

log = logging.getLogger(__name__)


def probe_residuals(
    model: torch.nn.Module,
    sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    index: torch.Tensor,
    forward,
    chunks: dict,
    settings: LSRSettings,
    comm: MPI.Comm,
) -> dict[str, DataResidual]:
    """The data residual of each named held-out set (this rank's ``(inputs, targets)``) for the
    parameter selection ``index``, with the training residual's Jacobian-product ``chunks``.
    Collective; cheap (one forward pass), so bad held-out data is refused before heavy work.

    Raises:
        ValueError: (on every rank) mismatched lengths, NaN or infinite targets.
    """
    return {
        name: DataResidual.create(
            ModelJacobian(model, x, index=index, forward=forward, **chunks),
            y,
            relative=settings.relative,
            comm=comm,
        )
        for name, (x, y) in sets.items()
    }


class Probe:
    """Errors of the linear predictor ``q + (J V)[:, :r'] c`` on a held-out set, for any rank.

    Collective construction: one pass of forward-mode products ``J V`` (kept in V's dtype, so
    float32 keeps large ranks affordable) over this rank's held-out samples.
    """

    def __init__(self, residual: DataResidual, V: torch.Tensor, comm: MPI.Comm):
        jacobian = residual.jacobian
        self.n_samples = len(jacobian.inputs)
        self.targets = residual.targets.double().reshape(self.n_samples, -1)
        self.q = jacobian.outputs().double().reshape(self.n_samples, -1)
        self.JV = torch.empty(jacobian.n_rows, V.shape[1], dtype=V.dtype, device=V.device)
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
        """``objective`` (weighted squared residual per sample) and mean ``rel_l2`` of the
        predictor with coefficients ``c`` (r',). Collective."""
        error = (
            self.q
            + (self.JV[:, : len(c)] @ c.to(self.JV)).double().reshape(self.n_samples, -1)
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


def ranks_to_scan(rank: int, scan_ranks: Iterable[int] | None = None) -> list[int]:
    """``scan_ranks`` (default: about 20 ranks spaced geometrically up to ``rank``) and
    ``rank``, sorted, without repeats. Those above ``rank`` (the basis's columns: a Krylov basis
    may stop short of the rank asked for) are dropped with a warning. Local."""
    default = np.unique(np.geomspace(1, rank, 20).astype(int)).tolist()
    asked = set(scan_ranks or default)
    beyond = sorted(r for r in asked if r > rank)
    if beyond:
        log.warning("scan ranks %s skipped: the basis has %d columns", beyond, rank)
    return sorted({r for r in asked if r <= rank} | {rank})


def scan(reduced, probes: Mapping[str, Probe], ranks: Iterable[int], n_samples: int) -> list[dict]:
    """One entry per rank r': ``rank``, ``train_objective`` (the linearized objective per
    training sample) and ``<name>_objective``, ``<name>_rel_l2`` for every probe. Collective.

    Args:
        reduced: the factorised reduced problem (``coefficients``, ``residual_norm``).
        n_samples: training samples over all ranks.
    """
    entries = []
    for r in ranks:
        c = torch.from_numpy(reduced.coefficients(r))
        entry = {"rank": r, "train_objective": reduced.residual_norm(r) ** 2 / n_samples}
        for name, probe in probes.items():
            entry.update({f"{name}_{key}": value for key, value in probe.errors(c).items()})
        entries.append(entry)
    return entries
