"""LSR of Darcy operators at the largest rank a memory and time budget allows: lean engine vs plain recipe.

For each model (DeepONet, FNO; Adam-trained by ``solve.py``) and grid (16×16, 32×32), both
engines run ``solve.py ... method=lsr method.rank=null method.memory_budget_gb=G
method.time_budget_minutes=T`` under ``mpirun -n 2``: a pilot measures the unit costs, the
largest rank predicted to fit the budget is refined, and every rank up to it is scored on the
held-out samples (validation picks the rank) and on the test samples. Both engines measure
their Jacobian-product chunk sizes first (``method.chunk_samples=auto``). Printed: the budget rank
of each engine (and their ratio), predicted against measured memory (summed over the 2 ranks)
and seconds, train / test relative L2 before LSR and at the chosen rank, and the reduction
factor. ``lsr_darcy.png`` plots test and train error against rank.

Usage: ``.venv/bin/python bench/lsr_darcy.py [--models deeponet fno] [--resolutions 16 32]
[--memory-gb 20] [--minutes 30] [--n-train 625] [--lean ...]``; ``--lean`` are extra
``method.*`` overrides of the lean runs (default: range finding on a quarter of the rows and
the normal-equations reduction). Results go to ``bench/results/lsr_darcy/``.
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
MPIRUN = [str(ROOT / ".venv" / "bin" / "mpirun"), "-n", "2", str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "solve.py")]
TRAINING = {"fno": ["train.epochs=60"], "deeponet": ["train.epochs=150", "train.lr=1e-3"]}
LEAN = ["method.row_fraction=0.25", "method.reduction=gram"]


def common(args, resolution: int) -> list[str]:
    return ["problem=darcy", f"problem.resolution={resolution}", "physics.instances=0", f"data.n_train={args.n_train}",
            f"data.n_test={args.n_test}", "output.progress=false", "output.n_show=1"]


def train(args, model: str, resolution: int, env) -> Path:
    """Checkpoint of the Adam-trained model (trained now unless already there)."""
    run_dir = OUT / f"train_{model}_{resolution}_{args.n_train}"
    if not (run_dir / "metrics.json").exists():
        subprocess.run([*MPIRUN, *common(args, resolution), f"model={model}", "method=none",
                        f"hydra.run.dir={run_dir}", *TRAINING[model]], check=True, env=env, cwd=ROOT)
    return run_dir / "checkpoint.pt"


def refine(args, model: str, resolution: int, engine: str, checkpoint: Path, env) -> dict:
    """One budgeted LSR run through the CLI; its ``lsr`` metrics plus wall seconds (or the failure)."""
    run_dir = OUT / f"lsr_{model}_{resolution}_{engine}"
    command = [*MPIRUN, *common(args, resolution), f"checkpoint={checkpoint}", "method=lsr", "method.rank=null",
               f"method.memory_budget_gb={args.memory_gb}", f"method.time_budget_minutes={args.minutes}",
               f"method.engine={engine}", "method.chunk_samples=auto", f"hydra.run.dir={run_dir}",
               *(args.lean if engine == "lean" else [])]
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        return {"failed": result.stderr[-2000:], "wall_seconds": wall}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {**metrics["lsr"], "trained": metrics["train"], "wall_seconds": wall}


def report(results: dict, args, commit: str) -> None:
    import matplotlib.pyplot as plt

    print(f"\nDarcy, {args.n_train} training samples (LSR fits {1 - 0.2:.0%} of them, the rest picks the rank), "
          f"{args.n_test} test samples, budget {args.memory_gb} GB and {args.minutes} min on 2 ranks; "
          f"lean options: {' '.join(args.lean) or 'defaults'}\n")
    print("| model | grid | rows | parameters | engine | budget rank | predicted GB / s | measured GB / s | "
          "train rel-L2 trained → LSR | test rel-L2 trained → LSR (rank) | test gain | commit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (model, resolution, engine), r in results.items():
        if "failed" in r:
            print(f"| {model} | {resolution}² | | | {engine} | failed after {r['wall_seconds']:.0f} s | | | | | | {r.get('commit', '')} |")
            continue
        trained = r["trained"]
        print(f"| {model} | {resolution}² | {r['n_rows']} | {r['n_parameters']} | {engine} | {r['max_rank']} | "
              f"{r['predicted']['memory_gb']:.1f} / {r['predicted']['seconds']:.0f} | "
              f"{r['total_peak_memory_mb'] / 1024:.1f} / {r['seconds']:.0f} | "
              f"{trained['train_rel_l2']:.2e} → {r['train_rel_l2']:.2e} | "
              f"{trained['test_rel_l2']:.2e} → {r['test_rel_l2']:.2e} ({r['rank']}) | "
              f"{trained['test_rel_l2'] / r['test_rel_l2']:.2f}× | {r.get('commit', '')} |")
    for model, resolution in sorted({(m, s) for m, s, _ in results}):
        lean, plain = results.get((model, resolution, "lean"), {}), results.get((model, resolution, "plain"), {})
        if "max_rank" in lean and "max_rank" in plain:
            print(f"\n{model} {resolution}²: budget rank lean / plain = {lean['max_rank']} / {plain['max_rank']} = "
                  f"{lean['max_rank'] / plain['max_rank']:.2f}×")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for (model, resolution, engine), r in results.items():
        if "scan" not in r:
            continue
        ranks = [e["rank"] for e in r["scan"]]
        for ax, key in zip(axes, ("test_rel_l2", "validation_rel_l2")):
            ax.semilogx(ranks, [e[key] for e in r["scan"]], "o-" if engine == "lean" else "s--", ms=3,
                        label=f"{model} {resolution}² {engine}")
    for ax, title in zip(axes, ("test samples", "held-out training samples (rank choice)")):
        ax.set_xlabel("rank r")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("mean relative L2 (linear predictor)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "lsr_darcy.png", dpi=120)
    print(f"\nfigure: {(OUT / 'lsr_darcy.png').relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["deeponet", "fno"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[16, 32])
    parser.add_argument("--engines", nargs="+", default=["plain", "lean"])
    parser.add_argument("--memory-gb", type=float, default=20.0)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--n-train", type=int, default=625)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--lean", nargs="*", default=LEAN)
    parser.add_argument("--report-only", action="store_true", help="print the tables of the runs in results.json")
    args = parser.parse_args()
    commit = git_commit()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    OUT.mkdir(parents=True, exist_ok=True)
    results_file = OUT / "results.json"
    # runs accumulate: a run replaces the entries of its (model, grid, engine) and keeps the others
    saved = json.loads(results_file.read_text()) if results_file.exists() else {}
    results = {}
    for key, value in saved.items():
        model, resolution, engine = key.split("|")
        results[(model, int(resolution), engine)] = value
    if args.report_only:
        report(results, args, commit)
        return
    for resolution in args.resolutions:
        for model in args.models:
            checkpoint = train(args, model, resolution, env)
            for engine in args.engines:
                results[(model, resolution, engine)] = refine(args, model, resolution, engine, checkpoint, env)
                print(f"{model} {resolution}² {engine}: " + json.dumps(
                    {k: results[(model, resolution, engine)].get(k) for k in ("max_rank", "rank", "test_rel_l2", "seconds",
                                                                              "total_peak_memory_mb", "failed")}), flush=True)
                results[(model, resolution, engine)]["commit"] = commit
                results_file.write_text(json.dumps({"|".join(map(str, k)): v for k, v in results.items()}, indent=1))
    report(results, args, commit)


if __name__ == "__main__":
    main()
