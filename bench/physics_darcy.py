"""Physics LSR and I-LSR against tuned gradient fine-tuning: error against the FEM solution vs
wall time, per test instance, for one problem (Darcy 32×32 by default) and FNO / DeepONet.

The networks are `make run`-sized (200 training samples, the model's default epochs; trained by
``solve.py`` under ``mpirun -n 2`` into ``bench/results/physics_darcy/train_<problem>_<model>``
unless there; Darcy's FNO is `make run`'s own, ``bench/results/physics_wall_time/train_fno``).
Each of the first ``--instances`` test instances (samples 200, 201, ...) is refined on its own,
serially (1 process, 1 thread), by every method from the trained weights, for ``--seconds``:

* ``LSR b=B``: one-shot physics LSR in the problem's norm (``auto``: energy, or dual for cdr and
  nonlinear diffusion), Krylov, rank ≤ ``--rank`` (≤ dofs; the basis ends earlier when its new
  directions are rounding noise), for each block size of ``--block-sizes``
  (1 and 8: b = 8 leads up to ~5 s, b = 1 after, bench/README.md#physics-lsr-against-wall-time);
  the error at rank r is that of the Galerkin solution on the leading r columns, at the time the
  r-th column was done plus its reduced solve (:func:`benchutil.lsr_curve`; where the reduced
  CG does not converge, as on the DeepONet at rank 256, the refinement is run again with a dense
  LU and only the second run's clock counts);
* ``I-LSR commit``: I-LSR with commit θ + αδ (backtracking on the true FEM loss), b = 1, rank
  ``--ilsr-rank`` (64, named ``I-LSR commit``; other ranks ``I-LSR commit, rank R``), the refined
  field of each outer iteration when it was ready;
* ``Adam``: at the learning rate tuned on a separate instance (sample 300) over
  {1e-4, 3e-4, 1e-3, 3e-3, 1e-2}: the rate with the lowest error after ``--seconds`` there
  (``--jobs tune``; the tuning curves are kept and reported);
* ``L-BFGS`` (strong Wolfe, 20 iterations a step);
* ``Adam, then LSR``: for each T of 5, 15, 45, 135 s within ``--seconds``, a run of its own with
  budget 0.98 T (so that the reduced solve ends by T): Adam at the tuned rate, then one-shot physics
  LSR (b = 1) for at most 1/3 of it (less when a probe basis says ``--rank`` directions take less),
  whose Krylov basis grows until the budget is spent, at most ``--rank`` directions
  (:func:`pinn_lsr.physics.finetune_lsr.finetune_then_refine`; named ``Adam, then LSR, rank ≤ R``
  when ``--rank`` is not 256); its point is the refined field when it was ready (one point per T: a
  user sets the budget beforehand).

The gradient baselines minimise the FEM loss in LSR's norm from the same start: the energy for
energy-norm problems, ``½ Fᵀ S⁻¹ F`` for dual-norm ones (``physics_finetune(norm="dual")``; the
main job's baseline there minimises ½||F||², which made Adam worse than the trained network).
Their error, that of the lowest-loss iterate so far (what a user holds; the current iterate's
is kept as ``current_rel_l2``), is measured off the clock on a geometric grid of times and read
at the first record at or past each time (in their favour by up to one step); LSR and I-LSR
are read at the last point at or before it (the trained network's until their first field is
ready). The seconds of a direct FEM solve of each instance (median of 5) are recorded beside.

Usage: ``.venv/bin/python bench/physics_darcy.py [--problem darcy] [--models fno deeponet]
[--instances 5] [--seconds 45] [--jobs tune lsr ilsr adam lbfgs adam-lsr]``: the jobs run in that
order in one worker process per model (``adam`` and ``adam-lsr`` read the tuned rate from
``results_<problem>.json``, so the jobs may be split over several invocations, each under
``flock /work/bench.lock``); rows (one per method and instance, with the commit) are appended to
``bench/results/physics_darcy/results_<problem>.json`` (one file per problem keeps each under the
repository's size limit for tracked files). Then, and with ``--report-only`` (no runs), prints per
model a Markdown table of the median and worst error at 5, 15, 45 (135) s per method, from the
newest rows of each (problem, model, method, instance, seconds), and writes
``<problem>_<model>_<seconds>s.png`` (median error against wall time).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchutil import (
    append_results,
    curve_at,
    git_commit,
    history_curve,
    ilsr_curve,
    lsr_curve,
    trained_checkpoint,
    worker_env,
    worker_result,
)

ROOT = Path(__file__).parents[1]
OUT = ROOT / "bench" / "results" / "physics_darcy"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
PROBLEMS = ("darcy", "poisson", "cdr", "nonlinear_diffusion")
JOBS = ("tune", "lsr", "ilsr", "adam", "lbfgs", "adam-lsr")
LSR_SHARE = 1 / 3  # adam-lsr: the refinement's share of each budget
N_TRAIN = 200  # make run's training set; the test instances are drawn after it
TUNING_SAMPLE = 300  # the instance Adam's rate is tuned on: after the test instances
ADAM_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
TIMES = (5, 15, 45, 135)
GRADIENT = ("Adam", "L-BFGS")  # methods read at the first record at or past a time


def train(problem: str, model: str, env) -> Path:
    """The checkpoint of a `make run`-sized model of ``problem`` (trained now unless there)."""
    if (problem, model) == ("darcy", "fno"):
        run_dir = ROOT / "bench" / "results" / "physics_wall_time" / "train_fno"
    else:
        run_dir = OUT / f"train_{problem}_{model}"
    return trained_checkpoint(run_dir, [f"problem={problem}", f"model={model}"], env)


def record_times(seconds: float) -> list[float]:
    """When the gradient baselines' error is recorded: 2 % apart from 0.05 s, and at ``TIMES``."""
    import numpy as np

    grid = 0.05 * 1.02 ** np.arange(int(np.log(seconds / 0.05) / np.log(1.02)) + 1)
    return sorted({*map(float, grid), *(t for t in TIMES if t <= seconds)})


def worker(args) -> None:
    import numpy as np
    import torch
    from mpi4py import MPI

    import problems
    from pinn_lsr.fem.linear_pde import LinearPDE
    from pinn_lsr.fem.mesh import unit_square
    from pinn_lsr.fem.nonlinear_pde import NonlinearPDE
    from pinn_lsr.physics.finetune import physics_finetune
    from pinn_lsr.physics.finetune_lsr import FinetuneLSRSettings, finetune_then_refine
    from pinn_lsr.physics.instances import FEMInstances
    from pinn_lsr.physics.iterative import ILSRSettings
    from pinn_lsr.physics.refine import refine_physics
    from pinn_lsr.run.config import resolve_norm
    from pinn_lsr.train.checkpoint import load_model

    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    s = 32
    problem = problems.create_problem(args.problem)
    domain = unit_square(comm, s - 1)
    if problem.kind == "nonlinear":
        pde = NonlinearPDE(domain, problem.residual, problem.weight, grid_size=s)
    else:
        pde = LinearPDE(domain, problem.forms, grid_size=s)
    norm = resolve_norm(problem, "auto")
    inputs = problem.sample_inputs(args.instances, s, seed=0, first=N_TRAIN)
    tuning = FEMInstances.from_pde(pde, problem.sample_inputs(1, s, seed=0, first=TUNING_SAMPLE))
    record_at = record_times(args.seconds)

    def trained():
        model = load_model(args.checkpoint)
        model.eval()
        return model

    def say(message: str) -> None:
        print(f"{args.problem} {args.model}: {message}", file=sys.stderr, flush=True)

    def gradient_curve(fem, optimizer: str, lr: float) -> dict:
        history = physics_finetune(
            trained(),
            fem,
            seconds=args.seconds,
            optimizer=optimizer,
            lr=lr,
            norm=norm,
            record_at=record_at,
            track_kept=True,
        )
        return {  # the lowest-loss network so far: what a user holds at each time
            **history_curve(history, "kept_rel_l2"),
            "current_rel_l2": [h["rel_l2"] for h in history],
            "lr": lr,
        }

    def finished_curve(fem, lr: float) -> dict:
        """Adam, then LSR: one run per budget T (module docstring)."""
        points = []
        for t in (t for t in TIMES if t <= args.seconds):
            settings = FinetuneLSRSettings(
                seconds=0.98 * t, share=LSR_SHARE, rank=args.rank, lr=lr, norm=norm
            )
            points.append(finetune_then_refine(trained(), fem, settings)[1])
        return {
            "seconds": [p["seconds"] for p in points],
            "rel_l2": [p["refined_rel_l2"] for p in points],
            "ranks": [p["rank"] for p in points],
            "network_rel_l2": [p["network_rel_l2"] for p in points],
            "finetune_seconds": [p["finetune_seconds"] for p in points],
            "lr": lr,
        }

    # first-call imports of torch.func and PETSc's solvers, off the clock
    refine_physics(tuning.residual(trained(), norm=norm), 8, block_size=4)
    rows = []
    tuned = args.adam_lr
    if "tune" in args.jobs:
        for lr in ADAM_GRID:
            curve = gradient_curve(tuning, "adam", lr)
            rows.append({"method": "tune Adam", "instance": "tuning", **curve})
            say(f"tuning Adam lr {lr:g}: {curve['steps']} steps, {curve['rel_l2'][-1]:.2e}")
        tuned = min((r for r in rows), key=lambda r: r["rel_l2"][-1])["lr"]
        say(f"tuned Adam lr {tuned:g}")
    tuning.destroy()
    for k in range(args.instances):
        fem = FEMInstances.from_pde(pde, inputs[k : k + 1])
        solves = []
        for _ in range(5):
            start = time.perf_counter()
            pde.solve(inputs[k])
            solves.append(time.perf_counter() - start)
        common = {
            "instance": k,
            "network": fem.errors(fem.network_fields(trained()))[0],
            "fem_solve_seconds": float(np.median(solves)),
        }
        curves = {}
        if "lsr" in args.jobs:
            rank = min(args.rank, pde.n_dofs)
            for b in args.block_sizes:
                curves[f"LSR b={b}"] = lsr_curve(
                    fem, trained(), rank, block_size=b, norm=norm, lu_fallback=True
                )
        if "ilsr" in args.jobs:
            settings = ILSRSettings(
                iterations=10000, rank=args.ilsr_rank, norm=norm, update="commit"
            )
            name = "I-LSR commit" + ("" if args.ilsr_rank == 64 else f", rank {args.ilsr_rank}")
            curves[name] = ilsr_curve(trained(), fem, settings, args.seconds)
        if "adam" in args.jobs:
            curves["Adam"] = gradient_curve(fem, "adam", tuned)
        if "lbfgs" in args.jobs:
            curves["L-BFGS"] = gradient_curve(fem, "lbfgs", 1.0)
        if "adam-lsr" in args.jobs:
            name = "Adam, then LSR" + ("" if args.rank == 256 else f", rank ≤ {args.rank}")
            curves[name] = finished_curve(fem, tuned)
        for method, curve in curves.items():
            rows.append({"method": method, **common, **curve})
            say(
                f"instance {k}: {method}: {common['network']:.2e} -> {curve['rel_l2'][-1]:.2e} "
                f"at {curve['seconds'][-1]:.1f} s"
            )
        fem.destroy()
    print("RESULT " + json.dumps(rows))


def error_at(row: dict, t: float) -> float | None:
    """A method's error by time ``t`` (gradient baselines: the first record at or past it; LSR
    and I-LSR: the trained network's until their first field is ready)."""
    if row["method"] in GRADIENT:
        past = [e for s, e in zip(row["seconds"], row["rel_l2"]) if s >= t]
        return past[0] if past else None
    reached = curve_at(row["seconds"], row["rel_l2"], t)
    return row["network"] if reached is None else reached


def newest(rows: list[dict], problem: str, model: str, seconds: float) -> dict:
    """method -> instance -> the newest row of ``problem``, ``model`` and budget ``seconds``
    (the tuning rows: rate -> row)."""
    chosen: dict = {}
    for row in rows:
        if (row["problem"], row["model"], row["budget"]) == (problem, model, seconds):
            key = row["lr"] if row["method"] == "tune Adam" else row["instance"]
            chosen.setdefault(row["method"], {})[key] = row
    return chosen


def report(rows: list[dict], args) -> None:
    import numpy as np

    sys.path.insert(0, str(ROOT))
    import matplotlib.pyplot as plt

    from pinn_lsr.io.plots import _save

    times = [t for t in TIMES if t <= args.seconds]
    for model in args.models:
        chosen = newest(rows, args.problem, model, args.seconds)
        if not chosen:
            print(f"\nno rows for {args.problem} {model} at {args.seconds:g} s")
            continue
        tuning = chosen.pop("tune Adam", {})
        if tuning:
            print(
                f"\n{args.problem} {model}: Adam's rate tuned on sample {TUNING_SAMPLE} (error "
                f"there after {args.seconds:g} s): "
                + ", ".join(
                    f"{r['lr']:g}: {r['rel_l2'][-1]:.2e}"
                    for r in sorted(tuning.values(), key=lambda r: r["lr"])
                )
            )
        if not chosen:
            continue
        commits = sorted({r["commit"] for m in chosen.values() for r in m.values()})
        instances = sorted({i for m in chosen.values() for i in m})
        networks = [next(m[i] for m in chosen.values() if i in m)["network"] for i in instances]
        solves = [
            next(m[i] for m in chosen.values() if i in m)["fem_solve_seconds"] for i in instances
        ]
        print(
            f"\n{args.problem} 32×32, {model}, {len(instances)} test instances, budget "
            f"{args.seconds:g} s, 1 process, 1 thread, commit {', '.join(commits)}; relative L2 "
            f"error against the FEM solution: median (worst) over instances. Trained network "
            f"{np.median(networks):.2e} ({np.max(networks):.1e}); direct FEM solve "
            f"{np.median(solves) * 1e3:.1f} ms"
        )
        print()
        print("| method | " + " | ".join(f"{t} s" for t in times) + " | steps / rank |")
        print("|---|" + "---|" * (len(times) + 1))
        medians = {}
        for method, per_instance in chosen.items():
            cells = []
            for t in times:
                values = [error_at(per_instance[i], t) for i in sorted(per_instance)]
                if any(v is None for v in values):
                    cells.append("–")
                    continue
                medians.setdefault(method, {})[t] = (np.median(values), np.max(values))
                cells.append(f"{np.median(values):.2e} ({np.max(values):.1e})")
            sample = next(iter(per_instance.values()))
            name = f"{method} (lr {sample['lr']:g})" if method.startswith("Adam") else method
            extent = (
                f"{int(np.median([r['steps'] for r in per_instance.values()]))} steps"
                if "steps" in sample
                else f"rank {int(np.median([r['ranks'][-1] for r in per_instance.values()]))}"
                + (
                    f", {int(np.median([len(r['ranks']) for r in per_instance.values()]))} "
                    "outer iterations"
                    if method.startswith("I-LSR")
                    else ""
                )
            )
            if method.startswith("Adam, then LSR"):  # one run per T
                ranks = np.median([r["ranks"] for r in per_instance.values()], axis=0)
                extent = "ranks " + " / ".join(str(int(r)) for r in ranks)
            print(f"| {name} ({len(per_instance)}) | " + " | ".join(cells) + f" | {extent} |")
        for which, index in (("median", 0), ("worst", 1)):
            leaders = []
            for t in times:
                ranked = sorted((v[t][index], m) for m, v in medians.items() if t in v)
                if ranked:
                    leaders.append(f"{t} s: {ranked[0][1]}")
            print(f"\nahead ({which}): " + "; ".join(leaders))
            ratios = []
            for t in times:
                lsr = [v[t][index] for m, v in medians.items() if m not in GRADIENT and t in v]
                grad = [v[t][index] for m, v in medians.items() if m in GRADIENT and t in v]
                if lsr and grad:
                    ratios.append(f"{t} s: {min(lsr) / min(grad):.2f}")
            print(
                f"best LSR method / best gradient baseline ({which}; goal ≤ 1/3): "
                + "; ".join(ratios)
            )
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        grid = np.geomspace(0.05, args.seconds, 300)
        for method, per_instance in chosen.items():
            curve = [[error_at(per_instance[i], t) for i in sorted(per_instance)] for t in grid]
            keep = [j for j, values in enumerate(curve) if all(v is not None for v in values)]
            ax.loglog(grid[keep], [np.median(curve[j]) for j in keep], label=method, lw=1.5)
        ax.axhline(np.median(networks), color="grey", ls=":", label="trained network")
        ax.set_xlabel("wall time (s), 1 process, 1 thread")
        ax.set_ylabel("relative L2 error vs FEM (median)")
        ax.set_title(
            f"{args.problem}, {model}, {len(instances)} instances, budget {args.seconds:g} s"
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        path = OUT / f"{args.problem}_{model}_{args.seconds:g}s.png"
        _save(fig, path)
        plt.close(fig)
        print(f"\nfigure: {path.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problem", default="darcy", choices=PROBLEMS)
    parser.add_argument("--models", nargs="+", default=["fno", "deeponet"])
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=JOBS)
    parser.add_argument("--rank", type=int, default=256, help="one-shot LSR's rank (≤ dofs)")
    parser.add_argument("--ilsr-rank", type=int, default=64, help="I-LSR's rank per iteration")
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--adam-lr", type=float, help="Adam's rate (default: the newest tuned one of the results)"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="print the tables of the recorded rows"
    )
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--model")
    parser.add_argument("--checkpoint")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    results = OUT / f"results_{args.problem}.json"
    if args.report_only:
        return report(json.loads(results.read_text()) if results.exists() else [], args)
    if args.seconds > 600:
        sys.exit("--seconds: keep a locked run under ~10 minutes (split it with --jobs)")
    commit = git_commit()
    env = worker_env()
    for model in args.models:
        checkpoint = train(args.problem, model, env)
        lr = args.adam_lr
        if lr is None and {"adam", "adam-lsr"} & set(args.jobs) and "tune" not in args.jobs:
            tuned = newest(
                json.loads(results.read_text()) if results.exists() else [],
                args.problem,
                model,
                args.seconds,
            ).get("tune Adam")
            if not tuned:
                sys.exit(f"no tuned Adam rate for {args.problem} {model}: run --jobs tune first")
            lr = min(tuned.values(), key=lambda r: r["rel_l2"][-1])["lr"]
        command = [
            PYTHON,
            str(Path(__file__).resolve()),
            "--worker",
            "--problem",
            args.problem,
            "--model",
            model,
            "--checkpoint",
            str(checkpoint),
            "--instances",
            str(args.instances),
            "--seconds",
            str(args.seconds),
            "--rank",
            str(args.rank),
            "--ilsr-rank",
            str(args.ilsr_rank),
            "--block-sizes",
            *map(str, args.block_sizes),
            "--jobs",
            *args.jobs,
            *(["--adam-lr", str(lr)] if lr is not None else []),
        ]
        output = subprocess.run(
            command, check=True, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
        ).stdout
        rows = [
            {
                **row,
                "problem": args.problem,
                "model": model,
                "budget": args.seconds,
                "commit": commit,
            }
            for row in worker_result(output)
        ]
        append_results(results, rows)
    report(json.loads(results.read_text()), args)


if __name__ == "__main__":
    main()
