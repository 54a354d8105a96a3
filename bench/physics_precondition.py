"""Basis quality of diagonally rescaled Krylov spaces for physics LSR on Darcy 32×32.

For make run's FNO (``bench/results/physics_wall_time/train_fno``, trained by
``bench/physics_wall_time.py``) and each of the first test instances: the relative L2 error of
the energy-norm Galerkin refinement at ranks 16 ... 256 of one Krylov basis (block sizes 1 and
8) built on ``S H S`` (``krylov_physics_subspace(scaling=S)``), for the scalings

* ``none``;
* ``exact``: ``diag(H)^{-1/2}`` with ``diag(H) = Σ_j (Jᵀ L e_j)²``, ``L Lᵀ = Pᵀ A P`` the grid
  operator's Cholesky factor (1024 reverse products: an upper bound for the estimates, not a
  method);
* ``exact per tensor``: its mean over each parameter tensor;
* ``Hutchinson, per tensor`` / ``Hutchinson``: parameter-space probes, ``mean z ⊙ H z`` over 8 /
  32 Rademacher z, averaged per tensor / floored per entry as ``diagonal_scaling`` floors;
* ``diagonal, p probes``: the library's output-space estimate
  (:func:`pinn_lsr.physics.refine.diagonal_scaling`).

Errors per rank, not seconds: no lock needed. Serial. Usage:
``.venv/bin/python bench/physics_precondition.py [--instances 2]``; prints a Markdown table (mean
over the instances) and appends its rows to ``bench/results/physics_precondition/results.json``.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from benchutil import append_results, git_commit
from mpi4py import MPI

import problems
from pinn_lsr.fem.linear_pde import LinearPDE
from pinn_lsr.fem.mesh import unit_square
from pinn_lsr.physics.instances import FEMInstances
from pinn_lsr.physics.refine import (
    ENTRY_FLOOR,
    SCALE_FLOOR,
    ReducedPhysicsProblem,
    _gauss_newton_product,
    _images,
    diagonal_scaling,
    krylov_physics_subspace,
)
from pinn_lsr.train.checkpoint import load_model

ROOT = Path(__file__).parents[1]
CHECKPOINT = ROOT / "bench" / "results" / "physics_wall_time" / "train_fno" / "checkpoint.pt"
OUT = ROOT / "bench" / "results" / "physics_precondition"
RANKS = (16, 32, 64, 128, 256)
N_TRAIN = 200  # make run's training set; the test instances are drawn after it


def floored(D: torch.Tensor, slices, per_tensor: bool) -> torch.Tensor:
    """``D^{-1/2}`` of a diagonal estimate, per tensor (its mean) or per entry (floored at
    ENTRY_FLOOR times the tensor's mean), then at SCALE_FLOOR times the largest."""
    out = torch.empty_like(D)
    for piece in slices:
        mean = float(D[piece].mean())
        out[piece] = mean if per_tensor else D[piece].clamp_min(ENTRY_FLOOR * mean)
    return out.clamp_min(SCALE_FLOOR * float(out.max())).rsqrt()


def exact_diagonal(residual) -> torch.Tensor:
    """``diag(Jᵀ Pᵀ A P J)`` (m,) from the Cholesky factor of the grid operator ``Pᵀ A P``."""
    n = residual.to_dofs.shape[1]
    grid = residual.to_dofs.T @ residual.images(residual.fields(torch.eye(n)))[0][0]
    L = np.linalg.cholesky(0.5 * (grid + grid.T))
    diag = torch.zeros(residual.jacobian.n_params, dtype=torch.float64)
    for first in range(0, n, 64):
        diag += (residual.pullback_outputs(torch.from_numpy(L[:, first : first + 64])) ** 2).sum(1)
    return diag


def hutchinson(residual, probes: int) -> torch.Tensor:
    """``mean_j z_j ⊙ H z_j`` over Rademacher z_j in parameter space (m,)."""
    g = torch.Generator().manual_seed(0)
    Z = torch.randint(0, 2, (residual.jacobian.n_params, probes), generator=g).double() * 2 - 1
    return (Z * _gauss_newton_product(residual, _images(residual, Z))).mean(dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    commit = git_commit()
    darcy = problems.create_problem("darcy")
    inputs = darcy.sample_inputs(args.instances, 32, seed=0, first=N_TRAIN)
    pde = LinearPDE(unit_square(MPI.COMM_SELF, 31), darcy.forms, grid_size=32)
    errors = {}
    for k in range(args.instances):
        fem = FEMInstances.from_pde(pde, inputs[k : k + 1])
        model = load_model(CHECKPOINT)
        model.eval()
        residual = fem.residual(model)
        slices = residual.jacobian.tensor_slices
        diag = exact_diagonal(residual)
        scalings = {
            "none": None,
            "exact": floored(diag, slices, False),
            "exact per tensor": floored(diag, slices, True),
            "Hutchinson 8, per tensor": floored(hutchinson(residual, 8), slices, True),
            "Hutchinson 32": floored(hutchinson(residual, 32), slices, False),
            **{
                f"diagonal, {p} probes": diagonal_scaling(residual, "diagonal", probes=p)
                for p in (16, 64)
            },
        }
        for b in (1, 8):
            for name, scaling in scalings.items():
                sub = krylov_physics_subspace(residual, max(RANKS), block_size=b, scaling=scaling)
                problem = ReducedPhysicsProblem(residual, sub)
                errors.setdefault((name, b), []).append(
                    [fem.errors(problem.fields(problem.coefficients(r)))[0] for r in RANKS]
                )
                print(f"instance {k} b={b} {name}: {errors[name, b][-1][-1]:.2e}", flush=True)
        fem.destroy()
    print(
        f"\nDarcy 32×32, make run's FNO, {args.instances} test instances, commit {commit}: mean "
        "relative L2 error of the Galerkin refinement at each rank of one Krylov basis\n"
    )
    print("| scaling | b | " + " | ".join(f"rank {r}" for r in RANKS) + " |")
    print("|---|---|" + "---|" * len(RANKS))
    rows = []
    for (name, b), values in errors.items():
        mean = np.mean(values, axis=0).tolist()
        rows.append({"scaling": name, "block_size": b, "ranks": list(RANKS), "rel_l2": mean})
        print(f"| {name} | {b} | " + " | ".join(f"{v:.2e}" for v in mean) + " |")
    append_results(
        OUT / "results.json",
        [{**row, "commit": commit, "instances": args.instances} for row in rows],
    )


if __name__ == "__main__":
    main()
