"""Operator-level physics fine-tuning on Darcy 32×32: error on unseen inputs against wall time.

One network (``make run``'s FNO, trained by ``bench/physics_wall_time.py`` into
``bench/results/physics_wall_time/train_fno``, or ``--checkpoint``) is refined on the FEM energy of
K unlabeled training inputs (the first K of make run's training set; their solutions are not
used), and scored on unseen test inputs (drawn after make run's 200 training samples):

* operator physics LSR (energy norm, Krylov, block size ``--block-size``, the network's products
  ``--chunk-samples`` inputs at a time: 10 was measured 20% faster per column than all 100 at
  once): one basis whose rank is
  sized from a rank-8 warm-up run to take about ``--seconds``; the clock is read after every
  product, so the error at rank r is that of the Galerkin solution on the leading r columns at
  the time the r-th column was done plus its reduced solve. Ranks 8, 16, 32, ... are scored: the
  largest one reached by each time, and the one chosen among them by the energy on ``--select``
  held-out unlabeled training inputs (no solutions; the selection's evaluations are charged to
  its clock);
* Adam at each rate of ``--adam-lrs`` and L-BFGS (strong Wolfe, ``--lbfgs-max-iter`` iterations
  per step) on the same K inputs and FEM energy for ``--seconds`` each (1 thread: the fastest use
  of this machine for them, see bench/physics_wall_time.py). The error at time T is that of the
  first step at or past T (up to one step in the baselines' favour), measured off the clock.
  "Adam, rate tuned" takes at each T the rate with the lowest error on ``--validation`` other
  unseen inputs (labeled: a fair user tunes the rate on a validation set) and reports its error on
  the test inputs.

Each method runs in its own worker process under ``flock /work/bench.lock`` (each locked run is
under 10 minutes). Usage: ``.venv/bin/python bench/physics_operator.py [--inputs 100] [--test 50]
[--seconds 135]``; prints a Markdown table (mean relative L2 error against the FEM solution on the
test inputs at each time) and appends its rows to ``bench/results/physics_operator/results.json``.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchutil import append_results, curve_at, git_commit, worker_env, worker_result
from physics_wall_time import N_TRAIN
from physics_wall_time import train as train_fno

ROOT = Path(__file__).parents[1]
OUT = ROOT / "bench" / "results" / "physics_operator"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
LOCK = "/work/bench.lock"
CHECKPOINTS = (5, 15, 45, 135, 405)


def worker(args) -> None:
    import numpy as np
    import torch
    from mpi4py import MPI

    import problems
    from pinn_lsr.fem.linear_pde import LinearPDE
    from pinn_lsr.fem.mesh import unit_square
    from pinn_lsr.physics.finetune import physics_finetune
    from pinn_lsr.physics.instances import FEMInstances
    from pinn_lsr.physics.operator import physics_loss, refine_operator, scan_ranks
    from pinn_lsr.train.checkpoint import load_model

    torch.set_num_threads(1)
    s = 32
    darcy = problems.create_problem("darcy")
    pde = LinearPDE(unit_square(MPI.COMM_SELF, s - 1), darcy.forms, grid_size=s)
    train_inputs = darcy.sample_inputs(args.inputs + args.select, s, seed=0)
    unseen = darcy.sample_inputs(args.test + args.validation, s, seed=0, first=N_TRAIN)
    # the training inputs' solutions only report the training error; no method uses them
    train = FEMInstances.from_pde(pde, train_inputs[: args.inputs])
    test = FEMInstances.from_pde(pde, unseen[: args.test])

    def mean_error(fem, fields):
        return float(np.mean(fem.errors(fields)))

    results = {}
    for job in args.jobs:
        method, lr = job.split(":")
        model = load_model(args.checkpoint)
        model.eval()
        out = {"network": mean_error(test, test.network_fields(model))}
        out["network_train"] = mean_error(train, train.network_fields(model))
        results[job] = out
        if method == "lsr":
            select = FEMInstances.from_pde(pde, train_inputs[args.inputs :], solve=False)
            chunks = {"block_size": args.block_size, "chunk_samples": args.chunk_samples}
            warm = refine_operator(model, train, 8, **chunks)  # first-call imports, off the clock
            per_column = warm.report.seconds["total"] / 8
            rank = int(min(args.max_rank, max(16, args.seconds / per_column)))
            print(f"{per_column:.2f} s per column in the warm-up: rank {rank}", file=sys.stderr)
            start = time.perf_counter()
            done_at = {}
            result = refine_operator(
                model,
                train,
                rank,
                **chunks,
                progress=lambda done, _: done_at.setdefault(done, time.perf_counter() - start),
            )
            rank = result.report.rank
            ranks = [r for r in scan_ranks(rank) if r in done_at or r == rank]
            done_at[rank] = done_at.get(rank, result.report.seconds["total"])
            rows = []
            for r in ranks:
                clock = time.perf_counter()
                result.problem.coefficients(r)
                solve = time.perf_counter() - clock
                clock = time.perf_counter()
                held_out = physics_loss(select, result.fields(select, r), "energy")
                selecting = time.perf_counter() - clock
                rows.append(
                    {
                        "rank": r,
                        "seconds": done_at[r] + solve,
                        "selection_seconds": selecting,
                        "held_out_energy": held_out,
                        "test": mean_error(test, result.fields(test, r)),
                        "committed_test": mean_error(test, result.committed_fields(test, r)),
                        "train": mean_error(train, result.training_fields(r)),
                    }
                )
                print(f"LSR rank {r}: {rows[-1]}", file=sys.stderr)
            out["lsr"] = rows
            out["per_column"] = per_column
        else:
            validation = FEMInstances.from_pde(pde, unseen[args.test :])
            history = physics_finetune(
                model,
                train,
                seconds=args.seconds,
                optimizer=method,
                lr=float(lr),
                lbfgs_max_iter=args.lbfgs_max_iter,
                evaluation={"test": test, "validation": validation},
                record_at=[t for t in CHECKPOINTS if t < args.seconds],
            )
            out["history"] = history
            print(f"{job}: {history[-1]}", file=sys.stderr)
    print("RESULT " + json.dumps(results))


def run_worker(args, checkpoint, env, jobs: list[str]) -> dict:
    """Run ``jobs`` (``method:lr``) in one worker process under the lock; their results by job."""
    command = [
        "flock",
        LOCK,
        "nice",
        "-n",
        "0",
        PYTHON,
        str(Path(__file__).resolve()),
        "--worker",
        "--jobs",
        *jobs,
        "--checkpoint",
        str(checkpoint),
        *(f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k in SIZES),
    ]
    output = subprocess.run(
        command, check=True, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    ).stdout
    return worker_result(output)


SIZES = (
    "inputs",
    "select",
    "test",
    "validation",
    "seconds",
    "block_size",
    "chunk_samples",
    "max_rank",
    "lbfgs_max_iter",
)


def at_or_past(history: list[dict], t: float, key: str) -> float | None:
    """The error of the first record at or past ``t`` (None if the run ended before)."""
    return next((h[key] for h in history if h["seconds"] >= t), None)


def table(results: dict, seconds: float) -> list[dict]:
    """Print the mean test error at each time per method; return the rows."""
    times = [t for t in CHECKPOINTS if t <= seconds]
    lsr = results["lsr"]["lsr"]
    rows = {}
    rows["operator LSR (largest rank reached)"] = [
        curve_at([r["seconds"] for r in lsr], [r["test"] for r in lsr], t) for t in times
    ]
    rows["rank reached"] = [
        curve_at([r["seconds"] for r in lsr], [r["rank"] for r in lsr], t) for t in times
    ]
    chosen = []
    for t in times:  # candidates whose basis, solve and held-out evaluations fit in t
        spent, best = 0.0, None
        for r in lsr:
            spent += r["selection_seconds"]
            if r["seconds"] + spent <= t and (
                best is None or r["held_out_energy"] < best["held_out_energy"]
            ):
                best = r
        chosen.append(best and best["test"])
    rows["operator LSR (rank chosen on held-out energy)"] = chosen
    rows["operator LSR, committed weights (largest rank)"] = [
        curve_at([r["seconds"] for r in lsr], [r["committed_test"] for r in lsr], t) for t in times
    ]
    adam = {k: v["history"] for k, v in results.items() if k.startswith("Adam")}
    for name, history in adam.items():
        rows[name] = [at_or_past(history, t, "test_rel_l2") for t in times]
    tuned = []
    for t in times:
        candidates = [
            (v, at_or_past(h, t, "test_rel_l2"))
            for h in adam.values()
            if (v := at_or_past(h, t, "validation_rel_l2")) is not None
        ]
        tuned.append(min(candidates)[1] if candidates else None)
    rows["Adam, rate tuned on validation"] = tuned
    rows["L-BFGS"] = [at_or_past(results["lbfgs"]["history"], t, "test_rel_l2") for t in times]
    print(f"\ntrained network: {results['lsr']['network']:.3e} on the test inputs\n")
    print("| method | " + " | ".join(f"{t} s" for t in times) + " |")
    print("|---|" + "---|" * len(times))
    for name, cells in rows.items():
        text = [
            "–" if v is None else (f"{v}" if name == "rank reached" else f"{v:.3e}") for v in cells
        ]
        print(f"| {name} | " + " | ".join(text) + " |")
    return [{"method": name, "seconds": times, "value": cells} for name, cells in rows.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=100)
    parser.add_argument("--select", type=int, default=20)
    parser.add_argument("--test", type=int, default=50)
    parser.add_argument("--validation", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=135.0)
    parser.add_argument("--block-size", dest="block_size", type=int, default=1)
    parser.add_argument("--chunk-samples", dest="chunk_samples", type=int, default=10)
    parser.add_argument("--max-rank", dest="max_rank", type=int, default=2048)
    parser.add_argument("--adam-lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2])
    parser.add_argument("--lbfgs-max-iter", dest="lbfgs_max_iter", type=int, default=5)
    parser.add_argument(
        "--checkpoint",
        default=str(
            ROOT / "bench" / "results" / "physics_wall_time" / "train_fno" / "checkpoint.pt"
        ),
    )
    parser.add_argument(
        "--curves", help="a curves_*.json of an earlier run: its methods are reused"
    )
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--jobs", nargs="+", default=["lsr:1"], help="method:lr ...")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    commit = git_commit()
    env = worker_env()
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        checkpoint = train_fno(env)
    OUT.mkdir(parents=True, exist_ok=True)
    curves = OUT / f"curves_{commit}.json"  # raw curves, kept after each worker
    results = json.loads(Path(args.curves).read_text()) if args.curves else {}
    names = {"lsr:1": "lsr", "lbfgs:1": "lbfgs"}
    names.update({f"adam:{lr:g}": f"Adam lr {lr:g}" for lr in args.adam_lrs})
    jobs = [f"adam:{lr:g}" for lr in args.adam_lrs] + ["lbfgs:1"]
    # each worker holds the lock under 10 minutes: LSR, then three gradient runs at a time
    for group in [["lsr:1"]] + [jobs[i : i + 3] for i in range(0, len(jobs), 3)]:
        group = [job for job in group if names[job] not in results]
        if group:
            done = run_worker(args, checkpoint, env, group)
            results.update({names[job]: out for job, out in done.items()})
            curves.write_text(json.dumps(results, indent=1))
    print(
        f"\nDarcy 32×32 (1024 dofs), make run's FNO, operator refined on {args.inputs} unlabeled "
        f"training inputs, mean relative L2 error against the FEM solution on {args.test} unseen "
        f"test inputs reached by each wall time (1 rank, 1 thread), commit {commit}"
    )
    rows = [
        {**row, "commit": commit, **{k: getattr(args, k) for k in SIZES}}
        for row in table(results, args.seconds)
    ]
    append_results(OUT / "results.json", rows)


if __name__ == "__main__":
    main()
