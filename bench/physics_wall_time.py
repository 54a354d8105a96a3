"""Error against wall time on Darcy 32×32: physics LSR (single-vector and block Krylov) beside
gradient fine-tuning on the same FEM energy loss (Adam over a learning-rate grid, L-BFGS).

The trained network is `make run`'s FNO (200 samples, 30 epochs; trained here by ``solve.py`` when
``bench/results/physics_wall_time/train_fno`` holds none). For each of the first test instances:

* physics LSR (energy norm, Krylov) for each block size: one basis of rank ``--rank`` (≤ dofs/4,
  the project's rule, so the network does the work), the clock read after every block product;
  the error at rank r is that of the Galerkin solution on the leading r columns, at the time the
  r-th column was done plus its reduced solve;
* Adam at each learning rate of the grid and L-BFGS (strong Wolfe) for ``--seconds`` each, the
  error measured after every step off the clock.

Serially (1 rank, 1 thread) and, with ``--ranks 2``, LSR also under ``mpirun -n 2`` (its network
products split by columns over the ranks). The gradient baselines run on 1 thread: their steps do
not split over ranks, and on these 2-core machines 2 threads made an Adam step slower (measured
14.2 ms against 11.2 ms), so 1 thread is their fastest use of the machine.

``--precondition none diagonal`` runs every LSR block size with each diagonal rescaling of the
Krylov recurrence (``refine_physics(precondition=...)``) and adds a table of LSR's error at
ranks 64, 128 and 256; ``--methods lsr`` or ``--methods gradient`` runs one side only.

Usage: ``.venv/bin/python bench/physics_wall_time.py [--instances 2] [--seconds 30]``; prints
Markdown tables (mean relative L2 error against the FEM solution at each time) and appends its
rows to ``bench/results/physics_wall_time/results.json``.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from benchutil import (
    append_results,
    curve_at,
    git_commit,
    history_curve,
    lsr_curve,
    trained_checkpoint,
    worker_env,
    worker_result,
)

ROOT = Path(__file__).parents[1]
OUT = ROOT / "bench" / "results" / "physics_wall_time"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
MPIRUN = str(ROOT / ".venv" / "bin" / "mpirun")
N_TRAIN = 200  # make run's training set; the test instances are drawn after it
CHECKPOINTS = (1, 2, 5, 10, 20, 30, 45, 60)
RANKS = (64, 128, 256)  # the per-rank table of the LSR runs
PRECONDITIONERS = ("none", "diagonal")  # pinn_lsr.physics.refine's (not imported: no MPI here)


def train(env) -> Path:
    """make run's FNO checkpoint (trained now unless already there)."""
    return trained_checkpoint(OUT / "train_fno", ["problem=darcy"], env)


def worker(args) -> None:
    import torch
    from mpi4py import MPI

    import problems
    from pinn_lsr.fem.linear_pde import LinearPDE
    from pinn_lsr.fem.mesh import unit_square
    from pinn_lsr.physics.finetune import physics_finetune
    from pinn_lsr.physics.instances import FEMInstances
    from pinn_lsr.physics.refine import refine_physics
    from pinn_lsr.train.checkpoint import load_model

    torch.set_num_threads(args.threads)
    comm = MPI.COMM_WORLD

    def say(message: str) -> None:
        if comm.rank == 0:
            print(message, file=sys.stderr, flush=True)

    s = 32
    darcy = problems.create_problem("darcy")
    inputs = darcy.sample_inputs(args.instances, s, seed=0, first=N_TRAIN)
    pde = LinearPDE(unit_square(comm, s - 1), darcy.forms, grid_size=s)
    curves = []
    warm = FEMInstances.from_pde(pde, inputs[:1])  # first-call imports of torch.func, off the clock
    refine_physics(warm.residual(load_model(args.checkpoint)), 8, block_size=4)
    warm.destroy()
    for k in range(args.instances):
        fem = FEMInstances.from_pde(pde, inputs[k : k + 1])
        model = load_model(args.checkpoint)
        model.eval()
        entry = {"instance": k, "network": fem.errors(fem.network_fields(model))[0]}
        lsr_runs = [(b, p) for p in args.precondition for b in args.block_sizes]
        for b, precondition in lsr_runs if args.lsr else []:
            name = f"lsr_b{b}" + ("" if precondition == "none" else f"_{precondition}")
            curve = entry[name] = lsr_curve(
                fem, model, args.rank, block_size=b, precondition=precondition, probes=args.probes
            )
            say(
                f"instance {k}: LSR b={b} {precondition} rank {curve['ranks'][-1]} in "
                f"{curve['seconds'][-1]:.1f} s (diagonal estimate "
                f"{curve['precondition_seconds']:.2f} s): {curve['rel_l2'][-1]:.2e}"
            )
        for optimizer, lr in args.baselines if args.gradient else []:
            history = physics_finetune(
                load_model(args.checkpoint), fem, seconds=args.seconds, optimizer=optimizer, lr=lr
            )
            entry[f"{optimizer}_{lr:g}"] = history_curve(history)
            say(
                f"instance {k}: {optimizer} lr {lr:g}, {history[-1]['step']} steps: "
                f"{history[-1]['rel_l2']:.2e}"
            )
        curves.append(entry)
        fem.destroy()
    if comm.rank == 0:
        print("RESULT " + json.dumps(curves))


def run_worker(args, ranks: int, threads: int, lsr: bool, gradient: bool, checkpoint, env):
    command = [
        *([MPIRUN, "-n", str(ranks)] if ranks > 1 else []),
        PYTHON,
        str(Path(__file__).resolve()),
        "--worker",
        "--checkpoint",
        str(checkpoint),
        "--threads",
        str(threads),
        "--instances",
        str(args.instances),
        "--rank",
        str(args.rank),
        "--seconds",
        str(args.seconds),
        "--block-sizes",
        *map(str, args.block_sizes),
        "--precondition",
        *args.precondition,
        "--probes",
        str(args.probes),
        "--adam-lrs",
        *map(str, args.adam_lrs),
        *(["--lsr"] if lsr else []),
        *(["--gradient"] if gradient else []),
    ]
    output = subprocess.run(
        command, check=True, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    ).stdout
    return worker_result(output)


def table(curves: list[dict], seconds: float) -> list[dict]:
    """Print the mean error at each checkpoint time per method; return the rows."""
    import numpy as np

    times = [t for t in CHECKPOINTS if t <= seconds]
    methods = [key for key in curves[0] if isinstance(curves[0][key], dict)]
    print(f"\ntrained network {np.mean([c['network'] for c in curves]):.2e}\n")
    print("| method | " + " | ".join(f"{t} s" for t in times) + " |")
    print("|---|" + "---|" * len(times))
    rows = []
    for method in methods:
        cells = []
        for t in times:
            values = [curve_at(c[method]["seconds"], c[method]["rel_l2"], t) for c in curves]
            cells.append(None if any(v is None for v in values) else float(np.mean(values)))
        rows.append({"method": method, "seconds": times, "rel_l2": cells})
        print(f"| {method} | " + " | ".join("–" if v is None else f"{v:.2e}" for v in cells) + " |")
    best = [
        min(
            (v for row in rows if row["method"].startswith("adam") and (v := row["rel_l2"][i])),
            default=None,
        )
        for i in range(len(times))
    ]
    print(
        "| best Adam of the grid | "
        + " | ".join("–" if v is None else f"{v:.2e}" for v in best)
        + " |"
    )
    lsr = [m for m in methods if m.startswith("lsr")]
    if lsr:
        print("\n| LSR | " + " | ".join(f"rank {r}" for r in RANKS) + " |")
        print("|---|" + "---|" * len(RANKS))
    for method in lsr:
        cells = [
            np.mean([c[method]["rel_l2"][c[method]["ranks"].index(r)] for c in curves])
            if all(r in c[method]["ranks"] for c in curves)
            else None
            for r in RANKS
        ]
        rows.append({"method": method, "ranks": list(RANKS), "rel_l2_at_rank": cells})
        print(f"| {method} | " + " | ".join("–" if v is None else f"{v:.2e}" for v in cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--rank", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--precondition", nargs="+", default=["none"], choices=PRECONDITIONERS)
    parser.add_argument("--probes", type=int, default=64, help="of the diagonal estimate")
    parser.add_argument("--adam-lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3, 1e-2])
    parser.add_argument("--ranks", type=int, default=1, choices=(1, 2))
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["lsr", "gradient"],
        choices=("lsr", "gradient"),
        help="what the serial run measures (split a long benchmark into runs under 10 minutes)",
    )
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--lsr", action="store_true")
    parser.add_argument("--gradient", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint")
    args = parser.parse_args()
    args.baselines = [("adam", lr) for lr in args.adam_lrs] + [("lbfgs", 1.0)]
    if args.worker:
        return worker(args)
    commit = git_commit()
    env = worker_env()
    checkpoint = train(env)
    curves = run_worker(
        args, 1, 1, "lsr" in args.methods, "gradient" in args.methods, checkpoint, env
    )
    if args.ranks == 2:
        parallel = run_worker(args, 2, 1, True, False, checkpoint, env)
        for entry, other in zip(curves, parallel):
            entry.update(
                {f"{key}, 2 ranks": value for key, value in other.items() if key[:3] == "lsr"}
            )
    print(
        f"\nDarcy 32×32 (1024 dofs), make run's FNO, {args.instances} test instances, "
        f"LSR rank ≤ {args.rank}, commit {commit}; mean relative L2 error against the FEM "
        "solution reached by each wall time"
    )
    rows = [
        {**row, "commit": commit, "instances": args.instances}
        for row in table(curves, args.seconds)
    ]
    append_results(OUT / "results.json", rows)


if __name__ == "__main__":
    main()
