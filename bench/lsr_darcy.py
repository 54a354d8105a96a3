"""LSR of Darcy operators at the largest rank a memory and time budget allows: lean engine vs
plain recipe, and the Krylov subspace beside them.

For each model (DeepONet, FNO; Adam-trained by ``solve.py``) and grid (16×16, 32×32), both
engines of the randomized subspace run ``solve.py ... method=lsr method.rank=null
method.memory_budget_gb=G method.time_budget_minutes=T`` under ``mpirun -n 2``: a pilot
measures the unit costs, the largest rank predicted to fit the budget is refined, and every rank
up to it is scored on the held-out samples (validation picks the rank) and on the test samples.
``krylov`` runs ``method.subspace=krylov`` in the same budget with its rank capped at
``--krylov-rank`` (its validation error turns up after a few hundred directions). Every run
measures its Jacobian-product chunk sizes first (``method.chunk_samples=auto``). Printed: the
budget rank of each (and the lean / plain ratio), predicted against measured memory (summed
over the 2 ranks) and seconds, train / test relative L2 before LSR and at the chosen rank, and
the reduction factor. ``lsr_darcy.png`` plots test and held-out error against rank.

Usage: ``.venv/bin/python bench/lsr_darcy.py [--models deeponet fno] [--resolutions 16 32]
[--engines plain lean krylov] [--memory-gb 20] [--minutes 30] [--n-train 625] [--krylov-rank 600]
[--lean ...] [--report-only]``; ``--lean`` are extra ``method.*`` overrides of the lean runs
(default: range finding on a quarter of the rows and the normal-equations reduction). Results
accumulate in ``bench/results/lsr_darcy/results.json`` (a run replaces its own rows).
"""

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

from benchutil import git_commit

ROOT = Path(__file__).parents[1]
OUT = ROOT / "bench" / "results" / "lsr_darcy"
MPIRUN = [
    str(ROOT / ".venv" / "bin" / "mpirun"),
    "-n",
    "2",
    str(ROOT / ".venv" / "bin" / "python"),
    str(ROOT / "solve.py"),
]
TRAINING = {"fno": ["train.epochs=60"], "deeponet": ["train.epochs=150", "train.lr=1e-3"]}
LEAN = ["method.row_fraction=0.25", "method.reduction=gram"]


def common(args, resolution: int) -> list[str]:
    return [
        "problem=darcy",
        f"problem.resolution={resolution}",
        "physics.instances=0",
        f"data.n_train={args.n_train}",
        f"data.n_test={args.n_test}",
        "output.progress=false",
        "output.n_show=1",
    ]


def train(args, model: str, resolution: int, env) -> Path:
    """Checkpoint of the Adam-trained model (trained now unless already there)."""
    run_dir = OUT / f"train_{model}_{resolution}_{args.n_train}"
    if not (run_dir / "metrics.json").exists():
        subprocess.run(
            [
                *MPIRUN,
                *common(args, resolution),
                f"model={model}",
                "method=none",
                f"hydra.run.dir={run_dir}",
                *TRAINING[model],
            ],
            check=True,
            env=env,
            cwd=ROOT,
        )
    return run_dir / "checkpoint.pt"


def engine_overrides(args, engine: str) -> list[str]:
    """``method.*`` settings of one compared method: the randomized subspace by the plain recipe
    or the lean engine at the budget's rank, or the Krylov subspace capped at ``--krylov-rank``."""
    if engine == "krylov":
        return ["method.subspace=krylov", f"method.rank={args.krylov_rank}"]
    return ["method.rank=null", f"method.engine={engine}", *(args.lean if engine == "lean" else [])]


def refine(args, model: str, resolution: int, engine: str, checkpoint: Path, env) -> dict:
    """One budgeted LSR run through the CLI; its ``lsr`` metrics plus wall seconds (or the
    failure)."""
    run_dir = OUT / f"lsr_{model}_{resolution}_{args.n_train}_{engine}"
    command = [
        *MPIRUN,
        *common(args, resolution),
        f"checkpoint={checkpoint}",
        "method=lsr",
        f"method.memory_budget_gb={args.memory_gb}",
        f"method.time_budget_minutes={args.minutes}",
        "method.chunk_samples=auto",
        f"hydra.run.dir={run_dir}",
        *engine_overrides(args, engine),
    ]
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        return {"failed": result.stderr[-2000:], "wall_seconds": wall}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        **metrics["lsr"],
        "trained": metrics["train"],
        "wall_seconds": wall,
        "budget": {"memory_gb": args.memory_gb, "minutes": args.minutes},
        "command": " ".join(command[4:]),
    }


def report(results: dict) -> None:
    """Print the table of every run in ``results`` ((model, grid, n_train, engine) -> run) and
    plot them."""
    import matplotlib.pyplot as plt

    print(
        "\nLSR fits 80 % of the training samples, the other 20 % pick the rank; 100 test samples; "
        "2 MPI ranks; "
        "lean: " + " ".join(LEAN) + "\n"
    )
    print(
        "| model | grid | train samples | rows | parameters | method | budget GB / min | "
        "budget rank | "
        "predicted GB / s | measured GB / s | train rel-L2 trained → LSR | "
        "test rel-L2 trained → LSR (rank) | "
        "test gain | commit |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (model, resolution, n_train, engine), r in sorted(results.items()):
        head = f"| {model} | {resolution}² | {n_train} |"
        if "failed" in r:
            print(
                f"{head} | | {engine} | | failed after {r['wall_seconds']:.0f} s | | | | | | "
                f"{r.get('commit', '')} |"
            )
            continue
        trained, budget = r["trained"], r.get("budget", {})
        print(
            f"{head} {r['n_rows']} | {r['n_parameters']} | {engine} | "
            f"{budget.get('memory_gb', '')} / "
            f"{budget.get('minutes', '')} | {r['max_rank']} | "
            f"{r['predicted']['memory_gb']:.1f} / {r['predicted']['seconds']:.0f} | "
            f"{r['total_peak_memory_mb'] / 1024:.1f} / {r['seconds']:.0f} | "
            f"{trained['train_rel_l2']:.2e} → {r['train_rel_l2']:.2e} | "
            f"{trained['test_rel_l2']:.2e} → {r['test_rel_l2']:.2e} ({r['rank']}) | "
            f"{trained['test_rel_l2'] / r['test_rel_l2']:.2f}× | {r.get('commit', '')} |"
        )
    for key in sorted({k[:3] for k in results}):
        lean, plain = results.get((*key, "lean"), {}), results.get((*key, "plain"), {})
        if "max_rank" in lean and "max_rank" in plain:
            print(
                f"\n{key[0]} {key[1]}², {key[2]} samples: budget rank lean / plain = "
                f"{lean['max_rank']} / "
                f"{plain['max_rank']} = {lean['max_rank'] / plain['max_rank']:.2f}×"
            )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    cases = sorted({key[:3] for key, r in results.items() if "scan" in r})  # one colour per case
    styles = {
        "plain": ("s--", "randomized plain"),
        "lean": ("o-", "randomized lean"),
        "krylov": ("^-.", "krylov"),
    }
    for (model, resolution, n_train, engine), r in sorted(results.items()):
        if "scan" not in r:
            continue
        ranks = [e["rank"] for e in r["scan"]]
        colour = f"C{cases.index((model, resolution, n_train))}"
        for ax, key in zip(axes, ("test_rel_l2", "validation_rel_l2")):
            ax.semilogx(ranks, [e[key] for e in r["scan"]], styles[engine][0], color=colour, ms=3)
    handles = [plt.Line2D([], [], color=f"C{i}", lw=6) for i in range(len(cases))]
    handles += [
        plt.Line2D([], [], color="k", ls=style[1:], marker=style[0], ms=3)
        for style, _ in styles.values()
    ]
    labels = [f"{model} {resolution}², {n_train} samples" for model, resolution, n_train in cases]
    labels += [label for _, label in styles.values()]  # one line style per method
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    for ax, title in zip(axes, ("test samples", "held-out training samples (rank choice)")):
        ax.set_xlabel("rank r")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    trained = [r["trained"]["test_rel_l2"] for r in results.values() if "trained" in r]
    if (
        trained
    ):  # past its validation optimum a Krylov basis overfits steeply: keep the gains readable
        axes[0].set_ylim(top=1.6 * max(trained))
    axes[0].set_ylabel("mean relative L2 (linear predictor)")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(OUT / "lsr_darcy.png", dpi=120)
    print(f"\nfigure: {(OUT / 'lsr_darcy.png').relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["deeponet", "fno"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[16, 32])
    parser.add_argument(
        "--engines",
        nargs="+",
        default=["plain", "lean", "krylov"],
        help="plain / lean: randomized subspace at the budget's rank; krylov: Krylov subspace",
    )
    parser.add_argument(
        "--krylov-rank", type=int, default=600, help="largest Krylov rank (the budget may lower it)"
    )
    parser.add_argument("--memory-gb", type=float, default=20.0)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--n-train", type=int, default=625)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--lean", nargs="*", default=LEAN)
    parser.add_argument(
        "--report-only", action="store_true", help="print the tables of the runs in results.json"
    )
    args = parser.parse_args()
    commit = git_commit()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    OUT.mkdir(parents=True, exist_ok=True)
    results_file = OUT / "results.json"
    # runs accumulate: a run replaces the entries of its (model, grid, samples, method) and keeps
    # the others
    saved = json.loads(results_file.read_text()) if results_file.exists() else {}
    results = {}
    for key, value in saved.items():
        model, resolution, n_train, engine = key.split("|")
        results[(model, int(resolution), int(n_train), engine)] = value
    if not args.report_only:
        for resolution in args.resolutions:
            for model in args.models:
                checkpoint = train(args, model, resolution, env)
                for engine in args.engines:
                    key = (model, resolution, args.n_train, engine)
                    results[key] = {
                        **refine(args, model, resolution, engine, checkpoint, env),
                        "commit": commit,
                    }
                    print(
                        f"{model} {resolution}² {args.n_train} {engine}: "
                        + json.dumps(
                            {
                                k: results[key].get(k)
                                for k in (
                                    "max_rank",
                                    "rank",
                                    "test_rel_l2",
                                    "seconds",
                                    "total_peak_memory_mb",
                                    "failed",
                                )
                            }
                        ),
                        flush=True,
                    )
                    results_file.write_text(
                        json.dumps({"|".join(map(str, k)): v for k, v in results.items()}, indent=1)
                    )
    report(results)


if __name__ == "__main__":
    main()
