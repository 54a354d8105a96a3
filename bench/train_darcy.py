"""Training benchmark on Darcy 32×32: test relative L2 and wall time of FNO and DeepONet
(median over seeds), and training throughput on 1 vs 2 ranks. Prints Markdown for README.md.

Usage: ``.venv/bin/python bench/train_darcy.py [--seeds 0 1 2] [--epochs-fno 100] ...``.
The driver starts ``mpirun -n N`` workers (this file with ``--worker``) and collects their
results; accuracy runs use 2 ranks.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchutil import git_commit, worker_result

ROOT = Path(__file__).parents[1]
CACHE = ROOT / ".cache" / "pinn_lsr"
MODELS = ("deeponet", "fno")


def model_config(name: str) -> dict:
    """The model's default configuration, as ``solve.py model=NAME`` uses it."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(
        OmegaConf.load(ROOT / "pinn_lsr" / "conf" / "model" / f"{name}.yaml")
    )
    config.pop("name")
    return config


def load_data(s: int, n_train: int, n_test: int, comm):
    """Darcy samples from the project's cache (generated on first use). Collective."""
    from mpi4py import MPI

    import problems
    from pinn_lsr.data.dataset import load_or_generate
    from pinn_lsr.fem.linear_pde import LinearPDE
    from pinn_lsr.fem.mesh import unit_square

    darcy = problems.create_problem("darcy")
    pde = LinearPDE(unit_square(MPI.COMM_SELF, s - 1), darcy.forms, grid_size=s)

    def solve(a):
        pde.solve(a)
        return pde.solution_on_grid()

    settings = {
        "problem": "darcy",
        "bench": "train_darcy",
        "grid_size": s,
        "n_samples": n_train + n_test,
        "seed": 0,
    }
    data, _ = load_or_generate(
        CACHE,
        settings,
        comm=comm,
        progress=False,
        solve=solve,
        sample_inputs=lambda first, count: darcy.sample_inputs(count, s, seed=0, first=first),
    )
    pde.destroy()
    return data.split(n_train)


def worker(args) -> None:
    import torch
    from mpi4py import MPI

    from pinn_lsr.models import build_model
    from pinn_lsr.models.parameters import count_real_parameters
    from pinn_lsr.train.loop import TrainSettings, train

    comm = MPI.COMM_WORLD
    torch.set_num_threads(1)
    train_set, test_set = load_data(32, args.n_train, args.n_test, comm)

    def tensors(d):
        return torch.as_tensor(d.inputs, dtype=torch.float32), torch.as_tensor(
            d.solutions.reshape(len(d), -1), dtype=torch.float32
        )

    torch.manual_seed(args.seed)
    model = build_model(args.model, grid_size=32, **model_config(args.model))
    settings = TrainSettings(
        epochs=args.epochs,
        batch_size=20,
        lr=args.lr,
        weight_decay=1e-4,
        scheduler="cosine",
        seed=args.seed,
    )
    start = time.perf_counter()
    result = train(
        model, tensors(train_set), tensors(test_set), settings, comm=comm, progress=False
    )
    seconds = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    if comm.rank == 0:
        print(
            "RESULT "
            + json.dumps(
                {
                    "model": args.model,
                    "seed": args.seed,
                    "ranks": comm.size,
                    "n_parameters": count_real_parameters(model),
                    "train_rel_l2": result.train_rel_l2,
                    "test_rel_l2": result.test_rel_l2,
                    "seconds": seconds,
                    "samples_per_second": args.epochs * args.n_train / result.counters.seconds,
                }
            )
        )


def run_worker(n_ranks: int, model: str, seed: int, epochs: int, lr: float, args) -> dict:
    mpirun = Path(sys.executable).parent / "mpirun"
    command = [
        str(mpirun),
        "-n",
        str(n_ranks),
        sys.executable,
        __file__,
        "--worker",
        "--model",
        model,
        "--seed",
        str(seed),
        "--epochs",
        str(epochs),
        "--lr",
        str(lr),
        "--n-train",
        str(args.n_train),
        "--n-test",
        str(args.n_test),
    ]
    out = subprocess.run(
        command,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    ).stdout
    return worker_result(out)


def median(values):
    values = sorted(values)
    return (
        values[len(values) // 2]
        if len(values) % 2
        else 0.5 * (values[len(values) // 2 - 1] + values[len(values) // 2])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--epochs-fno", type=int, default=100)
    parser.add_argument("--epochs-deeponet", type=int, default=150)
    parser.add_argument("--throughput-epochs", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="fno", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--lr", type=float, default=1e-3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    commit = git_commit()

    lrs = {"fno": 1e-3, "deeponet": 3e-3}
    epochs = {"fno": args.epochs_fno, "deeponet": args.epochs_deeponet}
    rows, speed = [], []
    for model in args.models:
        runs = [run_worker(2, model, seed, epochs[model], lrs[model], args) for seed in args.seeds]
        for r in runs:
            print(
                f"# {model} seed {r['seed']}: train {r['train_rel_l2']:.4f} "
                f"test {r['test_rel_l2']:.4f} "
                f"{r['seconds']:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        rows.append((model, runs))
        one, two = (
            run_worker(n, model, 0, args.throughput_epochs, lrs[model], args) for n in (1, 2)
        )
        speed.append((model, one["samples_per_second"], two["samples_per_second"]))

    print(
        f"<!-- bench/train_darcy.py: Darcy 32×32, {args.n_train} train / {args.n_test} test "
        "samples, float32, "
        f"Adam (lr {lrs}) + cosine schedule, batch 20, default model configs, 1 thread per rank, "
        f"commit {commit}; accuracy runs on 2 ranks, "
        f"median over seeds {args.seeds} -->"
    )
    print(
        "| model | real parameters | epochs | train rel-L2 | test rel-L2 (median) | "
        "test rel-L2 (min–max) | wall seconds (median) |"
    )
    print("|---|---|---|---|---|---|---|")
    for model, runs in rows:
        tests = [r["test_rel_l2"] for r in runs]
        print(
            f"| {model} | {runs[0]['n_parameters']} | {epochs[model]} | "
            f"{median([r['train_rel_l2'] for r in runs]):.4f} | "
            f"{median(tests):.4f} | {min(tests):.4f}–{max(tests):.4f} | "
            f"{median([r['seconds'] for r in runs]):.0f} |"
        )
    print()
    print("| model | 1 rank (samples/s) | 2 ranks (samples/s) | speed-up |")
    print("|---|---|---|---|")
    for model, one, two in speed:
        print(f"| {model} | {one:.0f} | {two:.0f} | {two / one:.2f}× |")


if __name__ == "__main__":
    main()
