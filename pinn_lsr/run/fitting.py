"""The run behind ``solve.py problem=fit2d``: function fitting, then optional LSR.

Stages: ``data`` (random training points, grid test points), ``train`` (or ``checkpoint=``),
``lsr`` (``method=lsr``), ``output`` (PNG of target, predictions and error on the test grid;
``metrics.json`` last). Errors are reported as MSE and relative L2 over all test values.
"""

import time
from pathlib import Path

import numpy as np
import torch
from mpi4py import MPI

from pinn_lsr.io.plots import plot_fields
from pinn_lsr.run.config import RunSettings
from pinn_lsr.run.stages import refine_model, train_or_load_model, write_metrics


def run_function_fitting(settings: RunSettings, run_dir: Path, comm: MPI.Comm) -> dict:
    """Fit, refine and report into ``run_dir``; return the metrics. Collective."""
    problem, size = settings.problem, settings.resolution
    seconds = {}
    clock = time.perf_counter()
    train_data = tuple(
        torch.as_tensor(a) for a in problem.training_data(settings.data.n_train, seed=settings.seed)
    )
    test_data = tuple(torch.as_tensor(a) for a in problem.test_data(size))
    seconds["data"] = time.perf_counter() - clock
    metrics = {
        "problem": problem.name,
        "target": problem.target,
        "n_train": len(train_data[0]),
        "n_test": len(test_data[0]),
        "n_ranks": comm.size,
    }

    clock = time.perf_counter()
    model, metrics["train"] = train_or_load_model(settings, train_data, test_data, run_dir, comm)
    seconds["train"] = time.perf_counter() - clock
    dtype = next(model.parameters()).dtype
    x_test = test_data[0].to(dtype)
    with torch.no_grad():
        columns = [
            ("target", test_data[1].numpy()),
            (f"{metrics['train']['model']}", model(x_test).double().numpy()),
        ]
    if settings.method == "lsr":
        clock = time.perf_counter()
        metrics["lsr"], refined = refine_model(
            settings, model, train_data, test_data, run_dir, comm
        )
        seconds["lsr"] = time.perf_counter() - clock
        columns.append(("LSR refined", refined.predict(x_test).double().numpy()))
    columns.append((f"|error| ({columns[-1][0]})", np.abs(columns[-1][1] - test_data[1].numpy())))

    clock = time.perf_counter()
    if comm.rank == 0:
        plot_fields(
            run_dir / "samples.png",
            [(name, values.reshape(1, size, size)) for name, values in columns],
            sample_labels=["test grid"],
        )
    seconds["output"] = time.perf_counter() - clock
    return write_metrics(run_dir, metrics, seconds, comm)
