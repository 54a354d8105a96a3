"""Jacobian-product seconds per (tangent × sample) against the samples per chunk
(``method.chunk_samples``), and what ``chunk_samples=auto`` picks and how long it measures, for
trained models: one process, one thread, 64 tangents per product, subnormals flushed (as
``refine`` does).

Models (``--models NAME=CHECKPOINT ...``): a DeepONet (the LSR authors' Burgers network of
``bench/lsr_burgers.py``, its first 475 training inputs, half of its parameters as there) and an
FNO (Darcy 32×32 of ``bench/physics_wall_time.py``, 160 random coefficient fields in its input
range, all parameters). Rows accumulate in ``bench/results/lsr_chunks/results.json``.

Usage: ``.venv/bin/python bench/lsr_chunks.py --models
deeponet=bench/results/lsr_burgers/train_burgers_1000_2000/checkpoint.pt
fno=bench/results/physics_wall_time/train_fno/checkpoint.pt``.
"""

import argparse
import json
import time
from pathlib import Path

import h5py
import torch
from benchutil import git_commit
from mpi4py import MPI

from pinn_lsr.lsr.budget import fastest_chunks, product_seconds
from pinn_lsr.lsr.denormals import flush_denormals
from pinn_lsr.lsr.jacobian import ModelJacobian, select_parameters
from pinn_lsr.train.checkpoint import load_model

ROOT = Path(__file__).parents[1]
OUT = ROOT / "bench" / "results" / "lsr_chunks"
BURGERS = ROOT / ".cache" / "pinn_lsr" / "burgers-c47893db7ccbe6ec.h5"  # bench/lsr_burgers.py's
SIZES = {"deeponet": (8, 64, 256), "fno": (8, 32)}
TANGENTS = 64


def inputs(model, kind: str) -> torch.Tensor:
    dtype = next(model.parameters()).dtype
    if kind == "deeponet":
        return torch.as_tensor(h5py.File(BURGERS, "r")["inputs"][:475]).to(dtype)
    s = model.spec["kwargs"]["grid_size"]
    return (torch.rand(160, s, s, generator=torch.Generator().manual_seed(0)) * 9 + 3).to(dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="deeponet=PATH fno=PATH")
    args = parser.parse_args()
    torch.set_num_threads(1)
    flush_denormals()
    commit = git_commit()
    rows = []
    for item in args.models:
        kind, path = item.split("=", 1)
        model = load_model(path)
        index = select_parameters(model, fraction=0.5 if kind == "deeponet" else None)
        jacobian = ModelJacobian(
            model, inputs(model, kind), index=index, chunk_samples=1, chunk_tangents=TANGENTS
        )
        for mode in ("jvp", "vjp"):
            for size in SIZES[kind]:
                seconds = product_seconds(jacobian, mode, size, TANGENTS, warm_up=True, repeats=2)
                rows.append(
                    {"model": kind, "mode": mode, "chunk_samples": size, "ms": seconds * 1e3}
                )
        start = time.perf_counter()
        picked = fastest_chunks(jacobian, MPI.COMM_SELF)
        rows.append({"model": kind, "auto": picked, "seconds": time.perf_counter() - start})
    for row in rows:
        row["commit"] = commit
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"\n<!-- 1 process, 1 thread, {TANGENTS} tangents, commit {commit} -->")
    print("| model | product | samples per chunk | ms per tangent × sample |")
    print("|---|---|---|---|")
    for r in rows:
        if "auto" in r:
            print(
                f"| {r['model']} | auto | jvp {r['auto']['chunk_samples']}, "
                f"vjp {r['auto']['vjp_chunk_samples']} | measured in {r['seconds']:.1f} s |"
            )
        else:
            print(f"| {r['model']} | {r['mode']} | {r['chunk_samples']} | {r['ms']:.3f} |")


if __name__ == "__main__":
    main()
