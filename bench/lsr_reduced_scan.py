"""Seconds of the reduced-solution work of LSR's scan at rank ``--rank`` (default 10⁴) on a
synthetic reduced factor ``R = diag(d) (I + U)`` (d from 1 to 1e-3, U strictly upper triangular
and small: condition number about 10³), one process, one thread: the condition number and
effective rank (``ReducedSolution.conditioning``) and the solutions (``coefficients``) at
ranks 1000, 3000 and ``--rank``, then at the default scan's other ranks. Prints the seconds.

Usage: ``.venv/bin/python bench/lsr_reduced_scan.py [--rank 10000]``.
"""

import argparse
import time

import numpy as np
import torch
from benchutil import git_commit

from pinn_lsr.lsr.reduced import ReducedSolution
from pinn_lsr.lsr.scan import ranks_to_scan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rank", type=int, default=10000)
    k = parser.parse_args().rank
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    R = np.eye(k) + np.triu(rng.standard_normal((k, k)), 1) * (0.3 / k)
    R = np.logspace(0, -3, k)[:, None] * R
    reduced = ReducedSolution(R=R, z=rng.standard_normal(k), rho=0.1, n_rows=12 * k)
    print(f"<!-- rank {k}, 1 process, 1 thread, commit {git_commit()} -->")
    start = time.perf_counter()
    c = reduced.conditioning()
    print(
        f"conditioning: {time.perf_counter() - start:.1f} s (condition number "
        f"{c.condition_number:.3e}, effective rank {c.effective_rank}, estimated: {c.estimated})"
    )
    start = time.perf_counter()
    for r in sorted({min(1000, k), min(3000, k), k}):
        reduced.coefficients(r)
    print(f"solutions at ranks 1000, 3000, {k}: {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    for r in ranks_to_scan(k):
        reduced.coefficients(r)
    print(
        f"solutions at the default scan's other ranks: {time.perf_counter() - start:.1f} s; "
        f"SVD fallbacks at ranks {reduced.fallback_ranks}"
    )


if __name__ == "__main__":
    main()
