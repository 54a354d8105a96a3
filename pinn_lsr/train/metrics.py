"""Error summaries of predictions against targets, with rows split across ranks."""

from collections.abc import Callable

import numpy as np
import torch
from mpi4py import MPI


@torch.no_grad()
def error_summary(
    predict: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    comm: MPI.Comm = MPI.COMM_WORLD,
    *,
    batch_size: int = 256,
) -> dict[str, float]:
    """Errors of ``predict`` on this rank's ``(inputs, targets)`` (n_local, ...), summed over ranks.

    Collective. Returns ``mse`` (mean squared error over all values), ``rel_l2`` (mean over
    samples of ``||e_i|| / ||y_i||``, the operator-learning figure) and ``global_rel_l2``
    (``||e|| / ||y||`` over all values, meaningful for scalar outputs too).
    """
    sums = np.zeros(4)  # squared error, squared target, per-sample relative errors, values
    for start in range(0, len(inputs), batch_size):
        x = inputs[start : start + batch_size]
        y = targets[start : start + batch_size].double().reshape(len(x), -1)
        e = predict(x).double().reshape(len(x), -1) - y
        sums += [
            float(e.pow(2).sum()),
            float(y.pow(2).sum()),
            float((e.norm(dim=1) / y.norm(dim=1).clamp_min(1e-300)).sum()),
            y.numel(),
        ]
    comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
    n_samples = comm.allreduce(len(inputs))
    return {
        "mse": sums[0] / max(sums[3], 1),
        "rel_l2": sums[2] / max(n_samples, 1),
        "global_rel_l2": float(np.sqrt(sums[0] / sums[1])) if sums[1] > 0 else float("nan"),
    }
