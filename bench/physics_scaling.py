"""Physics LSR's cost against the mesh: seconds per direction on Darcy 32², 64², 128², 1 vs 2 ranks.

`make run`'s FNO (trained at 32×32; an FNO evaluates on any grid, its normalisers are scalars)
refines one Darcy test instance at each resolution, energy norm, Krylov basis of rank ``--rank``
with block sizes 1 and 8. Per resolution and rank count the table gives:

* the FEM direct solve's seconds (the problem's own LU, as ``FEMInstances.from_pde`` times it);
* one Adam step on the same FEM energy loss (median of the steps of a short run, 1 thread);
* the seconds per direction of the whole physics LSR (``total / rank``) and of its products alone
  (a block of b random directions pushed through ``J``, ``A`` and ``Jᵀ``, median of 3), so the
  rest (block Gram–Schmidt over the m-parameter basis, reduced solve) is their difference;
* a direction's cost in Adam steps, and the error reached at the rank (against the FEM solution).

Usage: ``.venv/bin/python bench/physics_scaling.py [--resolutions 32 64 128] [--rank 256]``
(each configuration runs in its own process: 1 rank, then ``mpirun -n 2``, 1 thread per rank).
Prints a Markdown table and appends its rows to ``bench/results/physics_scaling/results.json``.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchutil import append_results, git_commit, worker_env, worker_result

ROOT = Path(__file__).parents[1]
OUT = ROOT / "bench" / "results" / "physics_scaling"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
MPIRUN = str(ROOT / ".venv" / "bin" / "mpirun")
CHECKPOINT = ROOT / "bench" / "results" / "physics_wall_time" / "train_fno" / "checkpoint.pt"
N_TRAIN = 200  # make run's training set; the test instance is drawn after it


def worker(args) -> None:
    import numpy as np
    import torch
    from mpi4py import MPI

    import problems
    from pinn_lsr.fem.linear_pde import LinearPDE
    from pinn_lsr.fem.mesh import unit_square
    from pinn_lsr.lsr.denormals import flush_denormals
    from pinn_lsr.physics.finetune import physics_finetune
    from pinn_lsr.physics.instances import FEMInstances
    from pinn_lsr.physics.refine import refine_physics
    from pinn_lsr.train.checkpoint import load_model

    torch.set_num_threads(1)
    flush_denormals()
    comm = MPI.COMM_WORLD
    s = args.resolution
    darcy = problems.create_problem("darcy")
    inputs = darcy.sample_inputs(1, s, seed=0, first=N_TRAIN)
    pde = LinearPDE(unit_square(comm, s - 1), darcy.forms, grid_size=s)
    fem = FEMInstances.from_pde(pde, inputs)
    model = load_model(args.checkpoint)
    model.grid_size, model.grid_shape = s, (s, s)  # the same FNO on a finer grid (zero-shot)
    model.eval()
    row = {
        "resolution": s,
        "dofs": pde.n_dofs,
        "mpi_ranks": comm.size,
        "rank": args.rank,
        "fem_solve_s": fem.solve_seconds[0],
        "network": fem.errors(fem.network_fields(model))[0],
    }
    refine_physics(fem.residual(model), 4, block_size=2)  # first-call imports, off the clock
    for b in (1, 8):
        residual = fem.residual(model)
        times = []
        for _ in range(3):
            T = torch.randn(residual.jacobian.n_params, b, dtype=residual.jacobian.dtype)
            comm.Barrier()
            start = time.perf_counter()
            K, Y = residual.images(residual.tangent_fields(T))
            residual.pullback(residual.normal_cotangents(K, Y))
            times.append((time.perf_counter() - start) / b)
        comm.Barrier()
        start = time.perf_counter()
        result = refine_physics(residual, args.rank, block_size=b)
        total = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
        fields = result.problem.fields(result.problem.coefficients())
        row[f"b{b}"] = {
            "seconds": total,
            "per_direction_s": total / result.report.rank,
            "products_per_direction_s": comm.allreduce(statistics.median(times), op=MPI.MAX),
            "rel_l2": fem.errors(fields)[0],
        }
    if comm.size == 1:
        history = physics_finetune(model, fem, seconds=args.adam_seconds, lr=1e-3)
        steps = np.diff([h["seconds"] for h in history])
        row["adam_step_s"] = float(np.median(steps))
    fem.destroy()
    if comm.rank == 0:
        print("RESULT " + json.dumps(row))


def run_worker(args, resolution: int, ranks: int) -> dict:
    command = [
        *([MPIRUN, "-n", str(ranks)] if ranks > 1 else []),
        PYTHON,
        str(Path(__file__).resolve()),
        "--worker",
        "--resolution",
        str(resolution),
        "--rank",
        str(args.rank),
        "--adam-seconds",
        str(args.adam_seconds),
        "--checkpoint",
        str(args.checkpoint),
    ]
    env = worker_env()
    output = subprocess.run(
        command, check=True, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    ).stdout
    return worker_result(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--rank", type=int, default=256)
    parser.add_argument("--adam-seconds", type=float, default=3.0)
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--resolution", type=int)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if not args.checkpoint.exists():
        sys.exit(f"{args.checkpoint} missing: run bench/physics_wall_time.py once (it trains it)")
    commit = git_commit()
    rows = []
    for s in args.resolutions:
        serial = run_worker(args, s, 1)
        parallel = run_worker(args, s, 2)
        parallel["adam_step_s"] = serial["adam_step_s"]
        rows += [serial, parallel]
        print(f"resolution {s}: done", file=sys.stderr, flush=True)
    print(
        f"\nDarcy, make run's FNO, one test instance, energy norm, Krylov rank {args.rank}, "
        f"1 thread per rank, commit {commit}\n"
    )
    print(
        "| grid | dofs | ranks | FEM solve s | Adam step ms | b | LSR s | ms / direction "
        "| products ms / direction | direction / Adam step | network | LSR error |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        for b in (1, 8):
            r = row[f"b{b}"]
            print(
                f"| {row['resolution']}² | {row['dofs']} | {row['mpi_ranks']} | "
                f"{row['fem_solve_s']:.4f} | {1e3 * row['adam_step_s']:.1f} | {b} | "
                f"{r['seconds']:.1f} | {1e3 * r['per_direction_s']:.1f} | "
                f"{1e3 * r['products_per_direction_s']:.1f} | "
                f"{r['per_direction_s'] / row['adam_step_s']:.2f} | {row['network']:.2e} | "
                f"{r['rel_l2']:.2e} |"
            )
    append_results(OUT / "results.json", [{**row, "commit": commit} for row in rows])


if __name__ == "__main__":
    main()
