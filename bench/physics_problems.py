"""Every problem (and the shipped meshes) through the pipeline on 2 ranks: trained operator,
physics LSR and I-LSR errors against the FEM solution, with seconds.

Each case runs ``solve.py problem=NAME model=fno method=none`` under ``mpirun -n 2`` with
small settings (the same for all problems, so the table compares problems, not tuning) and
reads its ``metrics.json``. Errors are the relative L2 (mass matrix) against the FEM solution,
mean over the physics instances.

Usage: ``.venv/bin/python bench/physics_problems.py [--cases darcy cdr ...] [--n-train 200]
[--epochs 30]``.
Results go to ``bench/results/problems/``.
"""

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

from benchutil import git_commit

ROOT = Path(__file__).parents[1]
OUT = ROOT / "bench" / "results" / "problems"
MPIRUN = [
    str(ROOT / ".venv" / "bin" / "mpirun"),
    "-n",
    "2",
    str(ROOT / ".venv" / "bin" / "python"),
    str(ROOT / "solve.py"),
]
CASES = {
    "darcy": ["problem=darcy"],
    "darcy, L-shape": ["problem=darcy", "mesh.file=meshes/lshape.msh"],
    "darcy, disk": ["problem=darcy", "mesh.file=meshes/disk.msh"],
    "poisson": ["problem=poisson"],
    "cdr": ["problem=cdr"],
    "reaction_diffusion": ["problem=reaction_diffusion"],
    "nonlinear_diffusion": ["problem=nonlinear_diffusion"],
    "elasticity (plate)": ["problem=elasticity"],
}


def run(name: str, overrides: list[str], args, env) -> dict:
    run_dir = OUT / name.replace(", ", "_").replace(" ", "_").replace("(", "").replace(")", "")
    command = [
        *MPIRUN,
        *overrides,
        "model=fno",
        "method=none",
        f"data.n_train={args.n_train}",
        "data.n_test=4",
        f"train.epochs={args.epochs}",
        "physics.instances=2",
        f"physics.rank={args.rank}",
        "physics.ilsr.iterations=2",
        "output.progress=false",
        "output.n_show=1",
        f"hydra.run.dir={run_dir}",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        return {"failed": result.stderr[-1500:], "wall_seconds": wall}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    physics = metrics["physics"]
    return {
        "n_dofs": metrics["n_dofs"],
        "stages": physics["stages"],
        "norm": physics["physics_lsr"]["norm"],
        "physics_seconds": physics["physics_lsr"]["seconds_median"],
        "ilsr_seconds": physics["ilsr"]["seconds_median"],
        "fem_solve_seconds": physics["fem_solve_seconds_median"],
        "train_seconds": metrics["seconds"]["train"],
        "wall_seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--rank", type=int, default=64)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    OUT.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.cases:
        results[name] = run(name, CASES[name], args, env)
        print(f"{name}: {json.dumps(results[name])[:300]}", flush=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    print(
        f"\nFNO, {args.n_train} training samples, {args.epochs} Adam epochs, "
        f"physics rank {args.rank}, 2 instances, "
        f"2 I-LSR iterations, mpirun -n 2, commit {git_commit()}\n"
    )
    print(
        "| problem | dofs | norm | trained | physics LSR | I-LSR | Adam, same time | FEM solve s | "
        "physics LSR s | I-LSR s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if "failed" in r:
            print(f"| {name} | failed after {r['wall_seconds']:.0f} s | | | | | | | | |")
            continue
        st = r["stages"]
        baseline = next((v for k, v in st.items() if k.startswith("gradient")), float("nan"))
        print(
            f"| {name} | {r['n_dofs']} | {r['norm']} | {st['trained network']:.2e} | "
            f"{st['physics LSR']:.2e} | "
            f"{st['I-LSR']:.2e} | {baseline:.2e} | {r['fem_solve_seconds']:.4f} | "
            f"{r['physics_seconds']:.1f} | "
            f"{r['ilsr_seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
