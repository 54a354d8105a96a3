"""LSR scaling: seconds against rows n and rank r on 1 and 2 ranks, and peak memory at large n.

Function fitting (sin(πx) sin(πy)) with an MLP 2-[64×4]-1 tanh, briefly trained; each point
is one residual row. ``pinn_lsr.refine`` with range finding on a 10 % row subsample and the
streaming block QR (G V never held whole: memory O(r² + chunk·r) beyond the model).
Prints Markdown for README.md.

Usage: ``.venv/bin/python bench/lsr_scaling.py [--rows 10000 100000] [--ranks 100 200 400]
[--big-rows 1000000 --big-rank 500]``. Workers run under ``mpirun -n 1`` and ``-n 2``.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchutil import git_commit, worker_result


def worker(n_rows: int, rank: int) -> None:
    import numpy as np
    import torch
    from mpi4py import MPI

    from pinn_lsr import refine
    from pinn_lsr.data.functions import random_points, target_values
    from pinn_lsr.models import build_model
    from pinn_lsr.train.loop import TrainSettings, train

    comm = MPI.COMM_WORLD
    torch.set_num_threads(1)
    points = random_points(n_rows, seed=0)
    values = target_values("sin_sin", points)
    share = np.array_split(np.arange(n_rows), comm.size)[comm.rank]
    x, y = (torch.as_tensor(a[share], dtype=torch.float32) for a in (points, values))
    torch.manual_seed(0)
    model = build_model("mlp", in_features=2, out_features=1, width=64, depth=4, activation="tanh")
    warm = (
        torch.as_tensor(points[:2000], dtype=torch.float32),
        torch.as_tensor(values[:2000], dtype=torch.float32),
    )
    train(
        model,
        warm,
        None,
        TrainSettings(epochs=3, batch_size=32, loss="mse", scheduler="none", weight_decay=0.0),
        comm=MPI.COMM_SELF,
        progress=False,
    )
    comm.Barrier()
    start = time.perf_counter()
    _, report = refine(
        model,
        x,
        y,
        rank=rank,
        relative=False,
        row_fraction=min(1.0, max(0.1, 20 * rank / n_rows)),
        chunk_samples=1000,
        scan_ranks=[rank],
        comm=comm,
    )
    seconds = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    if comm.rank == 0:
        print(
            "RESULT "
            + json.dumps(
                {
                    "rows": n_rows,
                    "rank": rank,
                    "ranks": comm.size,
                    "seconds": seconds,
                    "phases": report.seconds,
                    "peak_mb": report.peak_memory_mb,
                    "n_params": report.n_params,
                    "objective": [report.initial_objective, report.linearized_objective],
                }
            )
        )


def run(n_ranks: int, n_rows: int, rank: int) -> dict:
    mpirun = Path(sys.executable).parent / "mpirun"
    command = [
        str(mpirun),
        "-n",
        str(n_ranks),
        sys.executable,
        __file__,
        "--worker",
        str(n_rows),
        str(rank),
    ]
    out = subprocess.run(
        command,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    ).stdout
    result = worker_result(out)
    print(
        f"# {n_ranks} rank(s), n={n_rows}, r={rank}: {result['seconds']:.1f} s, "
        f"{result['peak_mb']:.0f} MB",
        file=sys.stderr,
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--ranks", type=int, nargs="+", default=[100, 200, 400])
    parser.add_argument("--big-rows", type=int, default=1_000_000)
    parser.add_argument("--big-rank", type=int, default=500)
    parser.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    commit = git_commit()

    middle = args.ranks[len(args.ranks) // 2]
    cases = sorted({(n, middle) for n in args.rows} | {(max(args.rows), r) for r in args.ranks})
    results = {(n, r): (run(1, n, r), run(2, n, r)) for n, r in cases}
    big = run(2, args.big_rows, args.big_rank)
    n_params = big["n_params"]
    print(
        f"<!-- bench/lsr_scaling.py: MLP 2-[64x4]-1 tanh ({n_params} parameters), "
        "float32 products, "
        f"1 thread per rank, streaming QR, sketch on a row subsample, commit {commit} -->"
    )
    print(
        "| rows n | rank r | 1 rank (s) | 2 ranks (s) | speed-up | s per (n·r/10⁶), 2 ranks | "
        "peak RSS per rank, 2 ranks (MB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for (n, r), (one, two) in sorted(results.items()):
        print(
            f"| {n} | {r} | {one['seconds']:.1f} | {two['seconds']:.1f} | "
            f"{one['seconds'] / two['seconds']:.2f}× | "
            f"{two['seconds'] / (n * r / 1e6):.3f} | {two['peak_mb']:.0f} |"
        )
    print(
        f"| {args.big_rows} | {args.big_rank} | – | {big['seconds']:.1f} | – | "
        f"{big['seconds'] / (args.big_rows * args.big_rank / 1e6):.3f} | {big['peak_mb']:.0f} |"
    )


if __name__ == "__main__":
    main()
