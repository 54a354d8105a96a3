"""I-LSR variants against Adam for the same wall time on Darcy 32×32 (issue 17, item 2).

The network is `make run`'s FNO (bench/physics_wall_time.py trains or finds it); the instances
are the first test instances, each refined on its own, serially (1 rank, 1 thread). Each variant
runs I-LSR (``pinn_lsr.physics.iterative``) until its clock passes ``--seconds``; the error
recorded at the end of every outer iteration is that of the refined field (the method's answer)
and of the network after the update, against the FEM solution. Adam on the same FEM energy loss
runs for ``--seconds`` at each learning rate of ``--adam-lrs``, its error measured after every
step off the clock (``physics_finetune``). A refined field counts from when it was ready (before
the update that follows it), the network from after its update.

Variants (``--variants``, names of :data:`VARIANTS`): the update (``align`` to the refined field
by L-BFGS, or to the pseudo-time target in the energy norm with ``dtau``; ``commit`` θ + αδ with
backtracking), Krylov recycling, rank schedules and block sizes.

Usage: ``.venv/bin/python bench/ilsr_variants.py [--variants ...] [--seconds 30] [--instances 2]
[--checkpoint PATH]``; prints Markdown tables (mean relative L2 error reached by each wall time)
and appends its rows to ``bench/results/ilsr_variants/results.json``.
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
    ilsr_curve,
    worker_env,
    worker_result,
)
from physics_wall_time import N_TRAIN, PYTHON, ROOT, train

OUT = ROOT / "bench" / "results" / "ilsr_variants"
TIMES = (2, 5, 10, 15, 20, 25, 30, 45, 60)

#: name -> ILSRSettings keywords (``align``: AlignSettings keywords); rank 64, b = 1 unless set
VARIANTS = {
    "align field, L-BFGS 200": {"align": {"iterations": 200}},
    "align field, L-BFGS 50": {"align": {"iterations": 50}},
    "align field, L-BFGS 20": {"align": {"iterations": 20}},
    "pseudo-time dtau 0.1, L-BFGS 50": {
        "align": {"iterations": 50, "target": "pseudo_time", "dtau": 0.1}
    },
    "pseudo-time dtau 1, L-BFGS 50": {
        "align": {"iterations": 50, "target": "pseudo_time", "dtau": 1.0}
    },
    "pseudo-time dtau 10, L-BFGS 50": {
        "align": {"iterations": 50, "target": "pseudo_time", "dtau": 10.0}
    },
    "pseudo-time dtau 1, L-BFGS 200": {
        "align": {"iterations": 200, "target": "pseudo_time", "dtau": 1.0}
    },
    "commit": {"update": "commit"},
    "commit, recycle": {"update": "commit", "recycle": True},
    "commit, b = 8, rank 128": {"update": "commit", "block_size": 8, "rank": 128},
    "commit, b = 8, rank 64": {"update": "commit", "block_size": 8, "rank": 64},
    "commit, rank 256": {"update": "commit", "rank": 256},
    "align field 50, recycle": {"align": {"iterations": 50}, "recycle": True},
    "pseudo-time dtau 1 50, recycle": {
        "align": {"iterations": 50, "target": "pseudo_time", "dtau": 1.0},
        "recycle": True,
    },
    "align field 50, ranks 32-64-128-256": {
        "align": {"iterations": 50},
        "ranks": (32, 64, 128, 256),
    },
    "align field 50, b = 8, rank 128": {
        "align": {"iterations": 50},
        "block_size": 8,
        "rank": 128,
    },
}
MAX_ITERATIONS = 40  # outer iterations a variant may take before its clock runs out


def settings_of(name: str):
    from pinn_lsr.physics.iterative import AlignSettings, ILSRSettings

    spec = dict(VARIANTS[name])
    align = AlignSettings(**spec.pop("align", {}))
    ranks = spec.get("ranks")
    iterations = len(ranks) if ranks else MAX_ITERATIONS
    return ILSRSettings(iterations=iterations, rank=spec.pop("rank", 64), align=align, **spec)


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

    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    s = 32
    darcy = problems.create_problem("darcy")
    inputs = darcy.sample_inputs(args.instances, s, seed=0, first=N_TRAIN)
    pde = LinearPDE(unit_square(comm, s - 1), darcy.forms, grid_size=s)
    warm = FEMInstances.from_pde(pde, inputs[:1])  # first-call imports of torch.func, off the clock
    refine_physics(warm.residual(load_model(args.checkpoint)), 8, block_size=4)
    warm.destroy()
    curves = []
    for k in range(args.instances):
        fem = FEMInstances.from_pde(pde, inputs[k : k + 1])
        model = load_model(args.checkpoint)
        model.eval()
        entry = {"instance": k, "network": fem.errors(fem.network_fields(model))[0]}
        for name in args.variants:
            trained = load_model(args.checkpoint)
            trained.eval()
            entry[name] = ilsr_curve(trained, fem, settings_of(name), args.seconds)
            network = entry[name]["network_rel_l2"]
            print(
                f"instance {k}: {name}: {len(entry[name]['rel_l2'])} iterations, refined "
                + " ".join(f"{e:.2e}" for e in entry[name]["rel_l2"])
                + " | network "
                + " ".join(f"{e:.2e}" for e in network)
                + f" | {entry[name]['seconds'][-1]:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        for lr in args.adam_lrs:
            history = physics_finetune(
                load_model(args.checkpoint), fem, seconds=args.seconds, optimizer="adam", lr=lr
            )
            entry[f"Adam lr {lr:g}"] = history_curve(history)
            print(
                f"instance {k}: Adam lr {lr:g}, {history[-1]['step']} steps: "
                f"{history[-1]['rel_l2']:.2e}",
                file=sys.stderr,
                flush=True,
            )
        curves.append(entry)
        fem.destroy()
    print("RESULT " + json.dumps(curves))


def table(curves: list[dict], seconds: float, key: str, title: str) -> list[dict]:
    """Print the mean ``key`` error reached by each time per method; return the rows."""
    import numpy as np

    times = [t for t in TIMES if t <= seconds]
    methods = [m for m in curves[0] if isinstance(curves[0][m], dict) and key in curves[0][m]]
    print(f"\n{title}\n")
    print("| method | " + " | ".join(f"{t} s" for t in times) + " |")
    print("|---|" + "---|" * len(times))
    rows = []
    for method in methods:
        cells = []
        for t in times:
            clock = "network_seconds" if key == "network_rel_l2" else "seconds"
            values = [curve_at(c[method][clock], c[method][key], t) for c in curves]
            cells.append(None if any(v is None for v in values) else float(np.mean(values)))
        rows.append({"method": method, "curve": key, "seconds": times, "rel_l2": cells})
        print(f"| {method} | " + " | ".join("–" if v is None else f"{v:.2e}" for v in cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--adam-lrs", type=float, nargs="*", default=[1e-3, 3e-3])
    parser.add_argument("--checkpoint", help="the FNO (default: physics_wall_time's make run FNO)")
    parser.add_argument("--worker", action="store_true")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    commit = git_commit()
    env = worker_env()
    checkpoint = args.checkpoint or str(train(env))
    command = [
        PYTHON,
        str(Path(__file__).resolve()),
        "--worker",
        "--checkpoint",
        checkpoint,
        "--instances",
        str(args.instances),
        "--seconds",
        str(args.seconds),
        "--variants",
        *args.variants,
        "--adam-lrs",
        *map(str, args.adam_lrs),
    ]
    output = subprocess.run(
        command, check=True, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    ).stdout
    curves = worker_result(output)
    import numpy as np

    print(
        f"\nDarcy 32×32 (1024 dofs), make run's FNO (trained network "
        f"{np.mean([c['network'] for c in curves]):.2e}), {args.instances} test instances, "
        f"1 rank, 1 thread, commit {commit}"
    )
    rows = table(
        curves,
        args.seconds,
        "rel_l2",
        "Mean relative L2 error against the FEM solution reached by each wall time "
        "(I-LSR: the refined field; Adam: the network):",
    )
    rows += table(
        curves,
        args.seconds,
        "network_rel_l2",
        "The network after each I-LSR update (what the next outer iteration starts from):",
    )
    rows = [{**row, "commit": commit, "instances": args.instances} for row in rows]
    per_instance = {"commit": commit, "curves": curves}
    append_results(OUT / "results.json", rows + [per_instance])


if __name__ == "__main__":
    main()
