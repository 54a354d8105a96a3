"""Data LSR where the LSR paper found its gains: the authors' ReLU DeepONet on 1D Burgers at ranks
up to 10⁴, from a trained and from an untrained network, in float32 and float64, and the same
settings on Darcy 16×16. Cases: ``burgers`` (FNO's data: ν = 0.1, u0 ~ N(0, 625 (−Δ + 25)^(−2))),
``burgers_smooth`` (the physics-informed DeepONet papers' smoother u0, exponent −4, and ν = 0.01),
``darcy``.

Each case trains the model by ``solve.py`` (``method=none``; ``--epochs`` Adam epochs, cosine
schedule, batch 20, unless ``--train`` overrides say otherwise, e.g. the authors'
``train.scheduler=step train.step_size=500 train.gamma=0.5 train.batch_size=50``;
``train.epochs=0`` for the untrained network: random features with fitted
normalisers), then runs one LSR by ``solve.py ... checkpoint=... method=lsr`` under ``mpirun -n
2`` (``--mpi-ranks``, ``--threads`` each) on ``--device`` at the largest rank with the authors'
settings: a random half of the parameters
(``method.fraction=0.5``), the randomized subspace without power iterations, V scaled by 1/S.
The scan of that one basis scores every rank of ``--ranks`` (nested: the smaller ranks are the
leading columns), so one row per rank; ``seconds`` and ``peak_memory_gb`` are those of the run at
the largest rank (memory summed over the 2 ranks). 5 % of the training samples pick nothing here
(the authors chose the rank by training loss) but are held out as LSR's validation set.

Rows: ``problem``, ``model``, ``trained``, ``dtype``, ``device``, ``max_rank`` (of the run),
``rank``, ``n_train`` and ``epochs`` (of the training), ``lsr_n_train`` (the samples LSR fits,
``--lsr-n-train``: more than the training saw, to ask whether more data makes the directions
generalise), ``train_before`` / ``train_after`` (RMS
of the per-sample relative L2 on the fit samples: the square root of LSR's objective),
``test_before`` / ``test_after`` (mean per-sample relative L2 on the LSR run's test samples),
``seconds``, ``peak_memory_gb`` (host),
``peak_gpu_memory_gb`` (``torch.cuda.max_memory_allocated``, largest MPI rank), ``commit``. They
accumulate in ``bench/results/lsr_burgers/results.json`` (a case run again on the same device at
the same largest rank replaces its rows). ``--agreement`` prints, for every rank run on both a
GPU and the CPU at the same largest rank, the two errors side by side.

Usage: ``.venv/bin/python bench/lsr_burgers.py [--cases burgers darcy] [--ranks 1000 3000 10000]
[--epochs 2000] [--n-train 1000] [--untrained] [--float64] [--device cpu|cuda]
[--mpi-ranks 2] [--threads 1] [--lsr key=value ...] [--report-only] [--agreement]``.
"""

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

from benchutil import git_commit

ROOT = Path(__file__).parents[1]
OUT = ROOT / "bench" / "results" / "lsr_burgers"
MPIRUN = [str(ROOT / ".venv" / "bin" / "mpirun"), "-n"]
SOLVE = [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "solve.py")]
#: the authors' recipe (their logs): p = 0.5, randomized, no power iterations, V / S
AUTHORS = [
    "method.fraction=0.5",
    "method.subspace=randomized",
    "method.power_iterations=0",
    "method.scaled=true",
    "method.engine=lean",
    "method.validation_fraction=0.05",
]
#: our engine's choices at these ranks: the normal equations (Householder QR of the 10⁵ × 10⁴
#: G V runs at a tenth of matrix-product speed), one Jacobian-product chunk of 256 samples
#: (the trunk's products shared by them)
ENGINE = ["method.reduction=gram", "method.chunk_samples=256"]
#: the smoother initial fields and viscosity of the physics-informed DeepONet papers:
#: u0 ~ N(0, 625 (−Δ + 25)^(−4)), ν = 0.01 (finer steps and mesh for the steeper fronts)
SMOOTH = [
    "problem.params.alpha=4",
    "problem.params.viscosity=0.01",
    "problem.params.time_steps=200",
    "problem.params.refinement=2",
]
CASES = {  # name: (the rows' problem label, problem overrides, model)
    "burgers": ("burgers", ["problem=burgers"], "deeponet_burgers"),
    "burgers_smooth": ("burgers_a4_nu0.01", ["problem=burgers", *SMOOTH], "deeponet_burgers"),
    "darcy": (
        "darcy16",
        ["problem=darcy", "problem.resolution=16", "physics.instances=0"],
        "deeponet_burgers",
    ),
}


def common(case: str, n_train: int, n_test: int) -> list[str]:
    _, problem, model = CASES[case]
    return [
        *problem,
        f"model={model}",
        f"data.n_train={n_train}",
        f"data.n_test={n_test}",
        "output.progress=false",
        "output.n_show=1",
    ]


def suffix(overrides: list[str]) -> str:
    """A run-directory suffix naming ``train.*`` / ``method.*`` overrides (none without)."""
    names = (o.removeprefix("train.").removeprefix("method.").replace("=", "") for o in overrides)
    return "".join(f"_{name}" for name in names)


def train(args, case: str, n_train: int, epochs: int, env) -> tuple[Path, dict]:
    """The checkpoint and training metrics of the case's model after ``epochs`` epochs (trained
    now unless already there)."""
    run_dir = OUT / f"train_{case}_{n_train}_{epochs}{suffix(args.train if epochs > 0 else [])}"
    if not (run_dir / "metrics.json").exists():
        subprocess.run(
            [
                *MPIRUN,
                str(args.mpi_ranks),
                *SOLVE,
                *common(case, n_train, args.n_test),
                f"device={args.device}",
                "method=none",
                f"train.epochs={epochs}",
                "train.scheduler=cosine",
                *(args.train if epochs > 0 else []),
                f"hydra.run.dir={run_dir}",
            ],
            check=True,
            env=env,
            cwd=ROOT,
        )
    return run_dir / "checkpoint.pt", json.loads((run_dir / "metrics.json").read_text())


def refine(args, case, n_train, trained, dtype, checkpoint, env) -> dict:
    """One LSR run at the largest rank; its metrics.json (or the failure) and wall seconds."""
    fit = args.lsr_n_train or n_train
    name = f"lsr_{case}_{n_train}_{'trained' if trained else 'untrained'}_{dtype}"
    name += f"_fit{fit}" if fit != n_train else ""
    name += suffix(args.train if trained else []) + suffix(args.lsr)
    run_dir = OUT / f"{name}_{args.device.replace(':', '')}_{max(args.ranks)}"
    command = [
        *MPIRUN,
        str(args.mpi_ranks),
        *SOLVE,
        *common(case, fit, args.n_test),
        f"device={args.device}",
        f"checkpoint={checkpoint}",
        "method=lsr",
        f"method.rank={max(args.ranks)}",
        f"method.scan_ranks=[{','.join(map(str, sorted(args.ranks)))}]",
        f"method.dtype={dtype}",
        *AUTHORS,
        *ENGINE,
        *args.lsr,
        f"hydra.run.dir={run_dir}",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        return {"failed": result.stderr[-2000:], "wall_seconds": wall}
    return {**json.loads((run_dir / "metrics.json").read_text()), "wall_seconds": wall}


def rows(args, case, n_train, trained, dtype, trained_metrics, run, commit) -> list[dict]:
    """One row per scanned rank of one LSR run."""
    label, _, model = CASES[case]
    base = {
        "problem": label,
        "model": model,
        "trained": trained,
        "dtype": dtype,
        "device": args.device,
        "max_rank": max(args.ranks),
        "mpi_ranks": args.mpi_ranks,
        "threads": args.threads,
        "n_train": n_train,
        "epochs": args.epochs if trained else 0,
        "training": " ".join(args.train) if trained and args.train else None,
        "lsr_overrides": " ".join(args.lsr) or None,
        "lsr_n_train": args.lsr_n_train or n_train,
        "test_before": trained_metrics["train"].get("test_rel_l2"),
        "commit": commit,
    }
    if "failed" in run:
        return [{**base, "rank": None, "failed": run["failed"], "seconds": run["wall_seconds"]}]
    lsr = run["lsr"]
    # the trained network's error on this run's test samples (they follow its fit samples)
    base["test_before"] = run["train"]["test_rel_l2"]
    base.update(
        train_before=lsr["objective"]["initial"] ** 0.5,
        seconds=lsr["seconds"],
        peak_memory_gb=lsr["total_peak_memory_mb"] / 1024,
        peak_gpu_memory_gb=(lsr.get("peak_device_memory_mb") or 0) / 1024 or None,
        n_rows=lsr["n_rows"],
        n_parameters=lsr["n_parameters"],
        seconds_by_phase=lsr["seconds_by_phase"],
    )
    return [
        {
            **base,
            "rank": entry["rank"],
            "train_after": entry["train_objective"] ** 0.5,
            "test_after": entry["test_rel_l2"],
        }
        for entry in lsr["scan"]  # the asked ranks (method.scan_ranks) and the largest
    ]


def row_case(row: dict) -> tuple:
    """What a row's run was: its rows are replaced when that case runs again."""
    return (
        row["problem"],
        row["n_train"],
        row["trained"],
        row["dtype"],
        row["device"],
        row.get("max_rank"),
        row.get("training"),
        row.get("lsr_overrides"),
        row.get("lsr_n_train", row["n_train"]),
    )


def trained(row: dict) -> str:
    """yes (the default recipe), yes (its ``--train`` overrides) or no."""
    if not row["trained"]:
        return "no"
    return f"yes ({row['training']})" if row.get("training") else "yes"


def report(results: list[dict]) -> None:
    print(
        "\n| problem | model | trained | n_train | dtype | device | rank | "
        "train rel-L2 before → after | test rel-L2 before → after | test gain | seconds | "
        "peak GB (host) | peak GB (GPU) | commit |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        head = (
            f"| {r['problem']} | {r['model']} | {trained(r)} | "
            f"{r['n_train']} | {r['dtype']} | {r['device']} |"
        )
        if "failed" in r:
            print(f"{head} | failed after {r['seconds']:.0f} s | | | | | | | {r['commit']} |")
            continue
        gpu = f"{r['peak_gpu_memory_gb']:.1f}" if r.get("peak_gpu_memory_gb") else ""
        extra = f" ({r['lsr_overrides']})" if r.get("lsr_overrides") else ""
        fit = (
            ""
            if r.get("lsr_n_train", r["n_train"]) == r["n_train"]
            else f", fit on {r['lsr_n_train']}"
        )
        print(
            f"{head} {r['rank']}{extra}{fit} | {r['train_before']:.2e} → {r['train_after']:.2e} | "
            f"{r['test_before']:.2e} → {r['test_after']:.2e} | "
            f"{r['test_before'] / r['test_after']:.2f}× | {r['seconds']:.0f} | "
            f"{r['peak_memory_gb']:.1f} | {gpu} | {r['commit']} |"
        )


def agreement(results: list[dict]) -> None:
    """GPU rows beside the CPU rows of the same case, largest rank and scanned rank."""
    ok = [r for r in results if "failed" not in r]
    cpu = {(*row_case(r)[:4], *row_case(r)[5:], r["rank"]): r for r in ok if r["device"] == "cpu"}
    print(
        "\n| problem | dtype | largest rank | rank | train rel-L2 GPU / CPU | "
        "test rel-L2 GPU / CPU | seconds GPU / CPU | commit GPU / CPU |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in ok:
        twin = cpu.get((*row_case(r)[:4], *row_case(r)[5:], r["rank"]))
        if r["device"] == "cpu" or twin is None:
            continue
        print(
            f"| {r['problem']} | {r['dtype']} | {r['max_rank']} | {r['rank']} | "
            f"{r['train_after']:.4e} / {twin['train_after']:.4e} | "
            f"{r['test_after']:.4e} / {twin['test_after']:.4e} | "
            f"{r['seconds']:.0f} / {twin['seconds']:.0f} | {r['commit']} / {twin['commit']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=["burgers"], choices=sorted(CASES))
    parser.add_argument("--ranks", nargs="+", type=int, default=[1000, 3000, 10000])
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--train", nargs="*", default=[], help="extra train.* overrides")
    parser.add_argument("--n-train", nargs="+", type=int, default=[1000])
    parser.add_argument("--n-test", type=int, default=50)
    parser.add_argument("--untrained", action="store_true", help="also from the untrained network")
    parser.add_argument("--float64", action="store_true", help="also in float64")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (training and LSR)")
    parser.add_argument("--mpi-ranks", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per MPI rank")
    parser.add_argument("--lsr", nargs="*", default=[], help="extra method.* overrides")
    parser.add_argument(
        "--lsr-n-train",
        type=int,
        default=None,
        help="fit LSR on this many samples (default: the training's; the test samples follow them)",
    )
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--agreement", action="store_true", help="print GPU rows beside CPU rows")
    args = parser.parse_args()
    commit = git_commit()
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    OUT.mkdir(parents=True, exist_ok=True)
    results_file = OUT / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else []
    if not args.report_only:
        for case in args.cases:
            for n_train in args.n_train:
                for trained in [True, False] if args.untrained else [True]:
                    checkpoint, trained_metrics = train(
                        args, case, n_train, args.epochs if trained else 0, env
                    )
                    for dtype in ["float32", "float64"] if args.float64 else ["float32"]:
                        run = refine(args, case, n_train, trained, dtype, checkpoint, env)
                        new = rows(
                            args, case, n_train, trained, dtype, trained_metrics, run, commit
                        )
                        results = [r for r in results if row_case(r) != row_case(new[0])] + new
                        results_file.write_text(json.dumps(results, indent=1))
                        report(new)
    report(results)
    if args.agreement:
        agreement(results)


if __name__ == "__main__":
    main()
