"""Darcy FEM benchmark: assembly and solve time against resolution on 1 and 2 ranks, and
data-generation throughput. Prints a Markdown table for README.md.

Usage: ``.venv/bin/python bench/fem_darcy.py [--resolutions 32 64 128 256] [--repeats 5]``.
The driver starts ``mpirun -n 1`` and ``mpirun -n 2`` workers (this file with ``--worker``);
each timing is the median over repeats of the per-rank maximum, after one warm-up.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import git_commit, worker_result

SOLVERS = {
    "MUMPS LU": {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"},
    "CG + GAMG": {"ksp_type": "cg", "pc_type": "gamg", "ksp_rtol": 1e-10},
}


def worker(resolutions: list[int], repeats: int, n_data: int) -> None:
    import numpy as np
    from mpi4py import MPI

    import problems
    from pinn_lsr.data.dataset import load_or_generate
    from pinn_lsr.fem.linear_pde import LinearPDE
    from pinn_lsr.fem.mesh import unit_square

    comm = MPI.COMM_WORLD
    darcy = problems.create_problem("darcy")

    def timed(action):
        comm.Barrier()
        start = time.perf_counter()
        action()
        return comm.allreduce(time.perf_counter() - start, op=MPI.MAX)

    rows = []
    for s in resolutions:
        a = darcy.sample_inputs(1, s, seed=0)[0]
        for solver, options in SOLVERS.items():
            pde = LinearPDE(
                unit_square(comm, s - 1),
                darcy.forms,
                grid_size=s,
                petsc_options=options,
                prefix="bench_",
            )
            pde.set_input(a)
            pde.solve()  # warm-up: JIT, symbolic factorisation
            assemble = [timed(pde.assemble) for _ in range(repeats)]
            solve = [timed(lambda: pde.solve()) for _ in range(repeats)]  # includes assembly
            rows.append(
                {
                    "s": s,
                    "n_dofs": pde.n_dofs,
                    "solver": solver,
                    "iterations": pde.ksp.getIterationNumber(),
                    "assemble": float(np.median(assemble)),
                    "solve": float(np.median(solve) - np.median(assemble)),
                }
            )
            pde.destroy()

    throughput = []
    for s in (32, 64):
        pde = LinearPDE(unit_square(MPI.COMM_SELF, s - 1), darcy.forms, grid_size=s)

        def solve(field):
            pde.solve(field)
            return pde.solution_on_grid()

        with tempfile.TemporaryDirectory() as tmp:
            tmp = comm.bcast(tmp, root=0)
            settings = {"problem": "darcy", "grid_size": s, "n_samples": n_data, "seed": 0}
            _, report = load_or_generate(
                tmp,
                settings,
                comm=comm,
                progress=False,
                solve=solve,
                sample_inputs=lambda first, count: darcy.sample_inputs(
                    count, s, seed=0, first=first
                ),
            )
            comm.Barrier()
        throughput.append({"s": s, "samples_per_second": report.samples_per_second})
        pde.destroy()
    if comm.rank == 0:
        print("RESULT " + json.dumps({"ranks": comm.size, "rows": rows, "throughput": throughput}))


def run_worker(n_ranks: int, args) -> dict:
    mpirun = Path(sys.executable).parent / "mpirun"
    command = [
        str(mpirun),
        "-n",
        str(n_ranks),
        sys.executable,
        __file__,
        "--worker",
        "--resolutions",
        *map(str, args.resolutions),
        "--repeats",
        str(args.repeats),
        "--n-data",
        str(args.n_data),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return worker_result(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--n-data", type=int, default=200, help="samples generated for the throughput rows"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.resolutions, args.repeats, args.n_data)
        return
    commit = git_commit()

    results = {n: run_worker(n, args) for n in (1, 2)}
    print(
        f"<!-- bench/fem_darcy.py: 1 and 2 MPI ranks, float64, 1 thread per rank, commit {commit}, "
        f"median of {args.repeats} after a warm-up, per-rank maximum -->"
    )
    print(
        "| s (grid) | dofs | solver | its | assemble 1 rank (ms) | assemble 2 ranks (ms) | "
        "solve 1 rank (ms) | solve 2 ranks (ms) | solve speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for one, two in zip(results[1]["rows"], results[2]["rows"]):
        print(
            f"| {one['s']} | {one['n_dofs']} | {one['solver']} | {one['iterations']} | "
            f"{1e3 * one['assemble']:.2f} | "
            f"{1e3 * two['assemble']:.2f} | {1e3 * one['solve']:.2f} | {1e3 * two['solve']:.2f} | "
            f"{one['solve'] / two['solve']:.2f}× |"
        )
    print()
    print(
        f"| data generation ({args.n_data} Darcy samples, FEM solve + grid evaluation) | "
        "1 rank (samples/s) | 2 ranks (samples/s) | speed-up |"
    )
    print("|---|---|---|---|")
    for one, two in zip(results[1]["throughput"], results[2]["throughput"]):
        print(
            f"| s = {one['s']} | {one['samples_per_second']:.0f} | "
            f"{two['samples_per_second']:.0f} | "
            f"{two['samples_per_second'] / one['samples_per_second']:.2f}× |"
        )


if __name__ == "__main__":
    main()
