"""Physics LSR and I-LSR on Darcy 32×32 against the FEM solution, beside gradient fine-tuning.

For each model (FNO, DeepONet; Adam-trained by ``solve.py``) and each of the first test
instances, every figure is the relative L2 error (mass matrix) against the FEM solution:

* the trained network;
* one-shot physics LSR at rank r = dofs/4 (256): energy norm with the Krylov and the randomized
  subspace, and the raw ℓ2 norm (so the norm's effect is on record); errors at r/8 ... r too;
* I-LSR (energy, Krylov, r) per outer iteration;
* gradient fine-tuning on the FEM energy loss (Adam, L-BFGS) for the wall time of I-LSR;
* the seconds of a direct FEM solve of the instance (MUMPS), and of the one-shot refinement on
  1 and 2 ranks.

Usage: ``.venv/bin/python bench/physics_darcy.py [--instances 3] [--ilsr-iterations 6]``. The
driver trains the models with ``solve.py`` under ``mpirun -n 2`` (reused from
``bench/results/physics_darcy/`` when present), then runs this file with ``--worker`` under
``mpirun -n 2`` and prints Markdown tables; figures go to ``bench/results/physics_darcy/``.
"""

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchutil import git_commit, worker_result

ROOT = Path(__file__).parents[1]
OUT = ROOT / "bench" / "results" / "physics_darcy"
MPIRUN = [str(ROOT / ".venv" / "bin" / "mpirun"), "-n", "2", str(ROOT / ".venv" / "bin" / "python")]
TRAINING = {"fno": ["train.epochs=60"], "deeponet": ["train.epochs=150", "train.lr=1e-3"]}
N_TRAIN = 1000


def train_models(models, env) -> dict:
    """Checkpoints of the Adam-trained models (trained now unless already there)."""
    checkpoints = {}
    for name in models:
        run_dir = OUT / f"train_{name}"
        if not (run_dir / "metrics.json").exists():
            subprocess.run(
                [
                    *MPIRUN,
                    str(ROOT / "solve.py"),
                    "problem=darcy",
                    f"model={name}",
                    "method=none",
                    "physics.instances=0",
                    f"data.n_train={N_TRAIN}",
                    "data.n_test=50",
                    "output.progress=false",
                    f"hydra.run.dir={run_dir}",
                    *TRAINING[name],
                ],
                check=True,
                env=env,
                cwd=ROOT,
            )
        checkpoints[name] = run_dir / "checkpoint.pt"
    return checkpoints


def worker(args) -> None:
    import numpy as np
    import torch
    from mpi4py import MPI

    import problems
    from pinn_lsr.fem.linear_pde import LinearPDE
    from pinn_lsr.fem.mesh import unit_square
    from pinn_lsr.physics.finetune import physics_finetune
    from pinn_lsr.physics.instances import FEMInstances
    from pinn_lsr.physics.iterative import AlignSettings, ILSRSettings, iterative_lsr
    from pinn_lsr.physics.refine import refine_physics
    from pinn_lsr.train.checkpoint import load_model

    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    s, rank = 32, args.rank
    darcy = problems.create_problem("darcy")
    inputs = darcy.sample_inputs(args.instances, s, seed=0, first=N_TRAIN)
    pdes = {
        size: LinearPDE(unit_square(c, s - 1), darcy.forms, grid_size=s)
        for size, c in ((2, comm), (1, MPI.COMM_SELF))
    }
    pde = pdes[2]
    results = {}
    for name, checkpoint in zip(args.models, args.checkpoints):
        model = load_model(checkpoint)
        model.eval()
        per_instance = []
        for k in range(args.instances):
            fem = FEMInstances.from_pde(pde, inputs[k : k + 1])
            entry = {"network": fem.errors(fem.network_fields(model))[0]}
            times = []
            for _ in range(5):
                start = time.perf_counter()
                pde.solve(inputs[k])
                times.append(time.perf_counter() - start)
            entry["fem_solve_seconds"] = float(np.median(times))
            for norm, subspace in (
                ("energy", "krylov"),
                ("energy", "randomized"),
                ("l2", "krylov"),
            ):
                result = refine_physics(fem.residual(model, norm=norm), rank, subspace=subspace)
                key = f"{norm}_{subspace}"
                entry[key] = fem.errors(result.fields)[0]
                entry[f"{key}_seconds"] = result.report.seconds["total"]
                entry[f"{key}_ksp_iterations"] = result.report.ksp_iterations
                if key == "energy_krylov":
                    kept = result.report.rank  # the randomized subspace may keep fewer directions
                    ranks = [kept // 8, kept // 4, kept // 2, kept]
                    entry["rank_scan"] = {
                        r: fem.errors(result.problem.fields(result.problem.coefficients(r)))[0]
                        for r in ranks
                    }
            if k == 0:  # the same refinement on one rank (rank 1 idles), for the 1 vs 2 rank timing
                if comm.rank == 0:
                    serial = FEMInstances.from_pde(pdes[1], inputs[k : k + 1])
                    entry["energy_krylov_seconds_1rank"] = refine_physics(
                        serial.residual(model), rank
                    ).report.seconds["total"]
                    serial.destroy()
                comm.Barrier()
            settings = ILSRSettings(
                iterations=args.ilsr_iterations,
                rank=rank,
                align=AlignSettings(iterations=args.align_iterations),
            )
            _, entry["ilsr"] = iterative_lsr(copy.deepcopy(model), fem, settings)
            budget = entry["ilsr"][-1]["seconds"]
            for optimizer, lr in (("adam", args.adam_lr), ("lbfgs", 1.0)):
                entry[f"baseline_{optimizer}"] = physics_finetune(
                    copy.deepcopy(model), fem, seconds=budget, optimizer=optimizer, lr=lr
                )
            per_instance.append(entry)
            fem.destroy()
            if comm.rank == 0:
                print(
                    f"{name} instance {k}: network {entry['network']:.3e}, "
                    f"physics LSR {entry['energy_krylov']:.3e}, "
                    f"I-LSR {min(h.get('refined_rel_l2', 1) for h in entry['ilsr']):.3e}",
                    file=sys.stderr,
                    flush=True,
                )
        results[name] = per_instance
    if comm.rank == 0:
        print("RESULT " + json.dumps(results))


def report(results: dict, args, commit: str) -> None:
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from pinn_lsr.io.plots import _save, plot_ilsr_history

    import matplotlib.pyplot as plt

    r = args.rank
    print(
        f"\nDarcy 32×32 (1024 P1 dofs), {args.instances} test instances, rank r = {r}, 2 ranks, "
        f"commit {commit}; "
        f"relative L2 error against the FEM solution (mean over instances; worst in brackets)\n"
    )
    print(
        "| model | trained | physics LSR energy, Krylov | energy, randomized | raw ℓ2, Krylov | "
        f"I-LSR best of {args.ilsr_iterations} (iteration) | Adam, same time | "
        "L-BFGS, same time | I-LSR seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, entries in results.items():

        def cell(values):
            return f"{np.mean(values):.2e} ({np.max(values):.1e})"

        best = [
            min((h["refined_rel_l2"], h["iteration"]) for h in e["ilsr"] if "refined_rel_l2" in h)
            for e in entries
        ]
        print(
            f"| {name} | {cell([e['network'] for e in entries])} | "
            f"{cell([e['energy_krylov'] for e in entries])} | "
            f"{cell([e['energy_randomized'] for e in entries])} | "
            f"{cell([e['l2_krylov'] for e in entries])} | "
            f"{cell([b[0] for b in best])} ({', '.join(str(b[1]) for b in best)}) | "
            f"{cell([e['baseline_adam'][-1]['rel_l2'] for e in entries])} | "
            f"{cell([e['baseline_lbfgs'][-1]['rel_l2'] for e in entries])} | "
            f"{np.median([e['ilsr'][-1]['seconds'] for e in entries]):.0f} |"
        )
    print(
        "\nGain of one-shot physics LSR (energy, Krylov) over the trained network, per instance: "
        + "; ".join(
            f"{name}: " + ", ".join(f"{e['network'] / e['energy_krylov']:.1f}×" for e in entries)
            for name, entries in results.items()
        )
    )
    print(
        "\n| model | FEM solve (MUMPS) s | one-shot energy Krylov s, 1 rank | 2 ranks | "
        "randomized s | ℓ2 s | "
        "error at rank (per instance; the Krylov space may stop early) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, entries in results.items():
        scans = "; ".join(
            ", ".join(f"{k}: {v:.2e}" for k, v in e["rank_scan"].items()) for e in entries
        )
        print(
            f"| {name} | {np.median([e['fem_solve_seconds'] for e in entries]):.4f} | "
            f"{entries[0]['energy_krylov_seconds_1rank']:.1f} | "
            f"{entries[0]['energy_krylov_seconds']:.1f} | "
            f"{np.median([e['energy_randomized_seconds'] for e in entries]):.1f} | "
            f"{np.median([e['l2_krylov_seconds'] for e in entries]):.1f} | {scans} |"
        )
    print("\nI-LSR per outer iteration (mean over instances): refined field / aligned network\n")
    for name, entries in results.items():
        rows = [h for h in entries[0]["ilsr"] if "refined_rel_l2" in h]
        line = ", ".join(
            f"{np.mean([e['ilsr'][i]['refined_rel_l2'] for e in entries]):.2e} / "
            f"{np.mean([e['ilsr'][i + 1]['network_rel_l2'] for e in entries]):.2e}"
            for i in range(len(rows))
        )
        print(f"- {name}: {line}")
    OUT.mkdir(parents=True, exist_ok=True)
    for name, entries in results.items():
        plot_ilsr_history(
            OUT / f"ilsr_{name}.png",
            [e["ilsr"] for e in entries],
            [e["baseline_adam"] for e in entries],
        )
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, entries in results.items():
        for i, e in enumerate(entries):
            ax.loglog(
                [int(k) for k in e["rank_scan"]],
                list(e["rank_scan"].values()),
                "o-",
                label=f"{name}, instance {i}",
            )
            ax.axhline(e["network"], ls=":", color=ax.lines[-1].get_color())
    ax.set_xlabel("rank r (energy norm, Krylov)")
    ax.set_ylabel("relative L2 error vs FEM")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    _save(fig, OUT / "rank_scan.png")
    print(
        f"\nfigures: {OUT.relative_to(ROOT)}/ilsr_*.png (I-LSR vs Adam on the FEM energy loss), "
        "rank_scan.png"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["fno", "deeponet"])
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--rank", type=int, default=256)
    parser.add_argument("--ilsr-iterations", type=int, default=6)
    parser.add_argument("--align-iterations", type=int, default=500)
    parser.add_argument("--adam-lr", type=float, default=1e-4)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--checkpoints", nargs="+")
    parser.add_argument(
        "--report-only", action="store_true", help="print the tables of the last run's results.json"
    )
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    commit = git_commit()
    if args.report_only:
        return report(
            json.loads((OUT / "results.json").read_text()),
            args,
            commit + " (results.json of the last run)",
        )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    checkpoints = train_models(args.models, env)
    command = [
        *MPIRUN,
        str(Path(__file__).resolve()),
        "--worker",
        "--models",
        *args.models,
        "--checkpoints",
        *[str(checkpoints[m]) for m in args.models],
        "--instances",
        str(args.instances),
        "--rank",
        str(args.rank),
        "--ilsr-iterations",
        str(args.ilsr_iterations),
        "--align-iterations",
        str(args.align_iterations),
        "--adam-lr",
        str(args.adam_lr),
    ]
    output = subprocess.run(
        command, check=True, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    ).stdout
    results = worker_result(output)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results))
    report(results, args, commit)


if __name__ == "__main__":
    main()
