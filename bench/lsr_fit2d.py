"""LSR on the paper's function-fitting experiment, against the paper's plain recipe.

MLP 2-[128×6]-1 tanh, 10 000 random points in [-1, 1]² (20 % validation), target
sin(πx) sin(πy), test on a 100 × 100 grid, Adam (lr 1e-3, batch 32) for a few epochs, then LSR
at several ranks. For each rank the same run times

* ``plain``: the paper's recipe — three full passes of vmapped Jacobian products over all rows
  (J Ω, Qᵀ J, J V) and a dense least-squares solve, float32 throughout;
* ``pinn_lsr``: :func:`pinn_lsr.refine` — range finding on a row subsample
  (``--row-fraction``), float32 products with float64 QR/SVD, a streaming block QR over
  row chunks, and the rank picked on the validation points,

and prints test MSE, seconds per phase, peak memory and the speed ratio.
Usage: ``.venv/bin/python bench/lsr_fit2d.py [--ranks 100 300 1000] [--epochs 5]``.
"""

import argparse
import resource
import sys
import time

from benchutil import git_commit

import torch
from mpi4py import MPI
from torch.func import functional_call, jvp, vjp, vmap

from pinn_lsr import refine
from pinn_lsr.data.functions import grid_points, random_points, target_values
from pinn_lsr.models import build_model
from pinn_lsr.train.loop import TrainSettings, train


def as_flat_function(model, x):
    """(θ0, f) with f(θ) = the model's outputs on ``x`` (flattened) for the flat parameter
    vector θ."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    buffers = dict(model.named_buffers())

    def f(theta):
        params = dict(
            zip(
                names,
                (
                    t.reshape(s)
                    for t, s in zip(torch.split(theta, [s.numel() for s in shapes]), shapes)
                ),
            )
        )
        return functional_call(model, {**params, **buffers}, (x,)).reshape(-1)

    return theta0, f


def plain_recipe(model, x, y, rank, *, seed, chunk=100):
    """The paper's recipe; returns (delta, seconds by phase). Tangents in chunks of ``chunk`` to
    fit in memory."""
    theta0, f = as_flat_function(model, x)

    def J_times(T):  # (m, k) -> (n, k), one full pass over the rows
        return torch.cat(
            [
                vmap(lambda t: jvp(f, (theta0,), (t,))[1])(T[:, k : k + chunk].T).T
                for k in range(0, T.shape[1], chunk)
            ],
            dim=1,
        )

    seconds = {}
    start = time.perf_counter()
    Omega = torch.randn(len(theta0), rank + 10, generator=torch.Generator().manual_seed(seed))
    Q, _ = torch.linalg.qr(J_times(Omega))
    seconds["sketch"] = time.perf_counter() - start
    start = time.perf_counter()
    _, pullback = vjp(f, theta0)
    B = torch.cat(
        [vmap(lambda q: pullback(q)[0])(Q[:, k : k + chunk].T) for k in range(0, Q.shape[1], chunk)]
    )
    seconds["projection"] = time.perf_counter() - start
    start = time.perf_counter()
    _, S, Vh = torch.linalg.svd(B, full_matrices=False)
    V = Vh[:rank].T / S[:rank]
    seconds["svd"] = time.perf_counter() - start
    start = time.perf_counter()
    GV = J_times(V)
    seconds["gv_pass"] = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        residual = f(theta0) - y.reshape(-1)
    c = torch.linalg.lstsq(GV, -residual[:, None]).solution[:, 0]
    seconds["solve"] = time.perf_counter() - start
    return V @ c, seconds


def predict(model, delta, x):
    """The plain recipe's linear predictor q(θ0, x) + J(x) δ, shape (n, 1)."""
    theta0, f = as_flat_function(model, x)
    value, tangent = jvp(f, (theta0,), (delta.to(theta0.dtype),))
    return (value + tangent).detach().reshape(len(x), -1)


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--row-fraction", type=float, default=0.25)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-samples", type=int, default=1000)
    parser.add_argument("--chunk-tangents", type=int, default=64)
    parser.add_argument("--skip-plain", action="store_true")
    args = parser.parse_args()
    commit = git_commit()
    torch.set_num_threads(1)

    points = random_points(args.points, seed=args.seed)
    values = target_values("sin_sin", points)
    n_train = int(0.8 * args.points)
    x, y = (torch.as_tensor(a[:n_train], dtype=torch.float32) for a in (points, values))
    xv, yv = (torch.as_tensor(a[n_train:], dtype=torch.float32) for a in (points, values))
    grid = grid_points(100)
    xt, yt = (
        torch.as_tensor(grid, dtype=torch.float32),
        torch.as_tensor(target_values("sin_sin", grid), dtype=torch.float32),
    )

    torch.manual_seed(args.seed)
    model = build_model("mlp", in_features=2, out_features=1, width=128, depth=6, activation="tanh")
    start = time.perf_counter()
    train(
        model,
        (x, y),
        None,
        TrainSettings(
            epochs=args.epochs,
            batch_size=32,
            lr=1e-3,
            weight_decay=0.0,
            scheduler="none",
            loss="mse",
            seed=args.seed,
        ),
        comm=MPI.COMM_SELF,
        progress=False,
    )
    train_seconds = time.perf_counter() - start
    with torch.no_grad():
        before = float((model(xt) - yt).pow(2).mean())
    n_params = sum(p.numel() for p in model.parameters())

    rows = []
    for rank in args.ranks:
        start = time.perf_counter()
        refined, report = refine(
            model,
            x,
            y,
            rank=rank,
            validation=(xv, yv),
            relative=False,
            row_fraction=args.row_fraction,
            chunk_samples=args.chunk_samples,
            chunk_tangents=args.chunk_tangents,
            seed=args.seed,
            comm=MPI.COMM_SELF,
        )
        ours_seconds = time.perf_counter() - start
        ours_mse = float((refined.predict(xt) - yt).pow(2).mean())
        ours_memory = peak_mb()
        if args.skip_plain:
            plain_seconds, plain_mse, phases = float("nan"), float("nan"), {}
        else:
            start = time.perf_counter()
            delta, phases = plain_recipe(model, x, y, rank, seed=args.seed)
            plain_seconds = time.perf_counter() - start
            plain_mse = float((predict(model, delta, xt) - yt).pow(2).mean())
        rows.append(
            (rank, report, ours_seconds, ours_mse, ours_memory, plain_seconds, plain_mse, phases)
        )
        print(
            f"# r={rank}: ours {ours_seconds:.1f} s MSE {ours_mse:.2e} (rank kept {report.rank}); "
            f"plain {plain_seconds:.1f} s MSE {plain_mse:.2e}",
            file=sys.stderr,
            flush=True,
        )

    print(
        "<!-- bench/lsr_fit2d.py: 1 rank, 1 thread, float32 products, MLP 2-[128x6]-1 tanh "
        f"({n_params} parameters), "
        f"{n_train} training points, {args.epochs} Adam epochs ({train_seconds:.0f} s), "
        "row fraction "
        f"{args.row_fraction}, commit {commit}; one run per rank -->"
    )
    print(f"Test MSE before LSR: {before:.2e}.\n")
    print(
        "| rank r | rank kept | test MSE pinn_lsr | reduction | "
        "s: sketch / projection / SVD / G V + QR / scan | "
        "pinn_lsr s | test MSE plain | plain s (sketch / proj. / SVD / G V / solve) | "
        "speed-up | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rank, report, ours_seconds, ours_mse, memory, plain_seconds, plain_mse, phases in rows:
        s = report.seconds
        ours_phases = " / ".join(
            f"{s.get(k, 0):.1f}"
            for k in ("sketch", "projection", "svd", "gv_pass_and_qr", "solve_and_scan")
        )
        plain_phases = " / ".join(
            f"{phases.get(k, float('nan')):.1f}"
            for k in ("sketch", "projection", "svd", "gv_pass", "solve")
        )
        print(
            f"| {rank} | {report.rank} | {ours_mse:.2e} | {before / ours_mse:.0f}× | "
            f"{ours_phases} | {ours_seconds:.1f} | "
            f"{plain_mse:.2e} | {plain_seconds:.1f} ({plain_phases}) | "
            f"{plain_seconds / ours_seconds:.2f}× | {memory:.0f} |"
        )


if __name__ == "__main__":
    main()
