"""What one physics LSR direction costs against one Adam step, and where the time goes.

make run's FNO (``bench/results/physics_wall_time/train_fno``, trained by ``physics_wall_time.py``
when absent) on one Darcy 32×32 test instance, 1 process, 1 thread: the median of ``--repeats``
timings of

* an Adam step of ``physics_finetune`` on the FEM energy loss (its mean over 5 s of steps: a
  forward pass, the FEM energy and its gradient, the backward pass, the update);
* the network products of a block of b directions (b = 1, 8, 32): the forward-mode ``J T`` and
  the reverse ``Jᵀ W`` as ``ModelJacobian`` computes them, fresh (every product recomputes the
  forward pass, the code before the output-space basis) and through the single input's kept
  maps (the kept pullback; for one tangent its transpose);
* a whole refinement, rank 64 and 256 (``refine_physics``, the default output-space basis), per
  direction: the slope between the two ranks (the fixed costs cancel).

Usage: ``.venv/bin/python bench/physics_products.py [--repeats 10]``; prints a Markdown table and
appends a row to ``bench/results/physics_products/results.json``.
"""

import argparse
import sys
import time
from pathlib import Path

from benchutil import append_results, git_commit, trained_checkpoint, worker_env

ROOT = Path(__file__).parents[1]
OUT = ROOT / "bench" / "results" / "physics_products"
N_TRAIN = 200  # make run's training set; the test instances are drawn after it
BLOCKS = (1, 8, 32)
RANKS = (64, 256)


def median_ms(function, repeats: int) -> float:
    import numpy as np

    function()  # first-call costs off the clock
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def measure(checkpoint: Path, repeats: int) -> dict:
    sys.path.insert(0, str(ROOT))
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
    darcy = problems.create_problem("darcy")
    inputs = darcy.sample_inputs(1, 32, seed=0, first=N_TRAIN)
    pde = LinearPDE(unit_square(MPI.COMM_SELF, 31), darcy.forms, grid_size=32)
    fem = FEMInstances.from_pde(pde, inputs)
    model = load_model(checkpoint)
    model.eval()
    row = {"n_params": sum(p.numel() * (1 + p.is_complex()) for p in model.parameters())}
    physics_finetune(model, fem, seconds=1.0, lr=1e-3)  # first-call costs off the clock
    history = physics_finetune(load_model(checkpoint), fem, seconds=5.0, lr=1e-3)
    last = max((h for h in history if not h.get("kept")), key=lambda h: h["step"])
    row["adam_step_ms"] = 1e3 * last["seconds"] / last["step"]
    model = load_model(checkpoint)
    model.eval()
    jacobian = fem.residual(model).jacobian
    for b in BLOCKS:
        T = torch.randn(jacobian.n_params, b, dtype=torch.float64)
        W = torch.randn(jacobian.n_rows, b, dtype=torch.float64)
        row[f"kept_jvp_ms_b{b}"] = median_ms(lambda: jacobian.jvp(T), repeats)
        row[f"kept_vjp_ms_b{b}"] = median_ms(lambda: jacobian.vjp(W), repeats)
        kept, jacobian._kept = jacobian._kept, False  # fresh products: no kept maps
        row[f"fresh_jvp_ms_b{b}"] = median_ms(lambda: jacobian.jvp(T), repeats)
        row[f"fresh_vjp_ms_b{b}"] = median_ms(lambda: jacobian.vjp(W), repeats)
        jacobian._kept = kept
    for b in (1, 8):
        seconds = {}
        for rank in RANKS:

            def refine(rank=rank, b=b):
                refine_physics(fem.residual(model), rank, block_size=b)

            seconds[rank] = median_ms(refine, max(3, repeats // 3)) / 1e3
        row[f"refine_s_b{b}"] = seconds
        row[f"direction_ms_b{b}"] = 1e3 * (seconds[256] - seconds[64]) / (RANKS[1] - RANKS[0])
    fem.destroy()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    checkpoint = trained_checkpoint(
        ROOT / "bench" / "results" / "physics_wall_time" / "train_fno",
        ["problem=darcy"],
        worker_env(),
    )
    row = {"commit": git_commit(), "repeats": args.repeats, **measure(checkpoint, args.repeats)}
    append_results(OUT / "results.json", [row])
    adam = row["adam_step_ms"]
    print(
        f"\nmake run's FNO ({row['n_params']} parameters), one Darcy 32×32 instance, 1 thread, "
        f"median of {args.repeats}, commit {row['commit']}; Adam step {adam:.1f} ms (ms below)\n"
    )
    print(
        "| b | jvp fresh | vjp fresh | jvp kept | vjp kept | per direction, fresh | "
        "per direction, kept | in Adam steps (kept) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for b in BLOCKS:
        fresh = (row[f"fresh_jvp_ms_b{b}"] + row[f"fresh_vjp_ms_b{b}"]) / b
        kept = (row[f"kept_jvp_ms_b{b}"] + row[f"kept_vjp_ms_b{b}"]) / b
        print(
            f"| {b} | {row[f'fresh_jvp_ms_b{b}']:.1f} | {row[f'fresh_vjp_ms_b{b}']:.1f} | "
            f"{row[f'kept_jvp_ms_b{b}']:.1f} | {row[f'kept_vjp_ms_b{b}']:.1f} | {fresh:.1f} | "
            f"{kept:.1f} | {kept / adam:.2f} |"
        )
    print(
        "\n| b | refine rank 64 (s) | refine rank 256 (s) | ms per direction (slope) | "
        "in Adam steps |"
    )
    print("|---|---|---|---|---|")
    for b in (1, 8):
        s = row[f"refine_s_b{b}"]
        d = row[f"direction_ms_b{b}"]
        print(f"| {b} | {s[64]:.2f} | {s[256]:.2f} | {d:.1f} | {d / adam:.2f} |")


if __name__ == "__main__":
    main()
