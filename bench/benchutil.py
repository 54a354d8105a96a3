"""Helpers shared by the benchmark scripts (run as ``python bench/NAME.py``)."""

import json
import os
import subprocess
import time
from pathlib import Path


def git_commit() -> str:
    """Short hash of the checked-out commit, with ``+dirty`` when the tree has changes.

    Call it when the benchmark starts: the code measured is the code checked out then.
    """
    here = Path(__file__).parent
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        cwd=here,
    ).stdout.strip()
    return commit + ("+dirty" if dirty else "")


def worker_result(output: str):
    """The JSON a benchmark's worker process printed on its ``RESULT `` line of ``output``."""
    return json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])


def worker_env() -> dict:
    """The environment of a benchmark's worker process: one BLAS / OpenMP thread, and this
    checkout's package first on the path (whichever checkout the virtual environment came from)."""
    root = str(Path(__file__).parents[1])
    return {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": root}


def trained_checkpoint(run_dir: Path, overrides: list[str], env) -> Path:
    """The checkpoint of ``solve.py method=none`` with ``overrides`` (training only: no physics
    stage) under ``mpirun -n 2`` in ``run_dir``, trained now unless already there."""
    root = Path(__file__).parents[1]
    if not (run_dir / "metrics.json").exists():
        subprocess.run(
            [
                str(root / ".venv" / "bin" / "mpirun"),
                "-n",
                "2",
                str(root / ".venv" / "bin" / "python"),
                str(root / "solve.py"),
                *overrides,
                "method=none",
                "physics.instances=0",
                "output.progress=false",
                f"hydra.run.dir={run_dir}",
            ],
            check=True,
            env=env,
            cwd=root,
        )
    return run_dir / "checkpoint.pt"


#: significant digits a results file keeps of every float (seconds to well under a millisecond,
#: errors far past the three digits the tables print)
RESULT_DIGITS = 7


def _rounded(value):
    """``value`` with every float in it rounded to :data:`RESULT_DIGITS` significant digits."""
    if isinstance(value, float):
        return float(f"{value:.{RESULT_DIGITS}g}")
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    return value


def append_results(path: Path, rows: list) -> None:
    """Append ``rows`` to the JSON list in ``path`` (created with its folder if missing),
    atomically: a failed write leaves the previous file whole. One compact row per line, floats
    to :data:`RESULT_DIGITS` significant digits: the rows hold long curves, which full-precision
    floats on indented lines had grown past 2 MB (the Darcy physics results)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text()) if path.exists() else []
    lines = (json.dumps(_rounded(row), separators=(",", ":")) for row in previous + rows)
    temporary = path.with_suffix(".tmp")
    temporary.write_text("[\n" + ",\n".join(lines) + "\n]\n")
    temporary.replace(path)


def curve_at(times: list[float], errors: list[float], at: float) -> float | None:
    """The error reached by time ``at`` (the last point at or before it), None before the first."""
    reached = [e for t, e in zip(times, errors) if t <= at]
    return reached[-1] if reached else None


#: the reduced solve when the default (CG + Jacobi to 1e-12) does not converge: dense LU
REDUCED_LU = {"ksp_type": "preonly", "pc_type": "lu"}


def lsr_curve(
    fem,
    model,
    rank: int,
    *,
    block_size: int = 1,
    norm: str = "energy",
    lu_fallback: bool = False,
    precondition: str = "none",
    probes: int = 64,
) -> dict:
    """Error against wall time of one-shot physics LSR (Krylov) of ``model`` on ``fem``'s single
    instance: the clock read after each (block) product from the start of the refinement; the
    error at rank r is the Galerkin solution's on the leading r columns, at the time the r-th
    column was done plus its reduced solve. Returns ``seconds``, ``rel_l2``, ``ranks`` and
    ``reduced_solve`` (``cg``, or ``lu`` when, with ``lu_fallback``, CG did not converge and the
    refinement was run again with :data:`REDUCED_LU`) and ``precondition_seconds`` (the diagonal
    estimate of ``precondition="diagonal"``, inside the times). Collective."""
    from pinn_lsr.fem.solver import SolverError
    from pinn_lsr.physics.refine import refine_physics

    def run(options):
        fem.comm.Barrier()
        start = time.perf_counter()
        done_at = {}
        result = refine_physics(
            fem.residual(model, norm=norm),
            rank,
            block_size=block_size,
            precondition=precondition,
            probes=probes,
            petsc_options=options,
            progress=lambda done, _: done_at.setdefault(done, time.perf_counter() - start),
        )
        return result, done_at

    solver = "cg"
    try:
        result, done_at = run(None)
    except SolverError:
        if not lu_fallback:
            raise
        solver = "lu"
        result, done_at = run(REDUCED_LU)
    times, errors = [], []
    for r in sorted(done_at):
        solve = time.perf_counter()
        fields = result.problem.fields(result.problem.coefficients(r))
        times.append(done_at[r] + time.perf_counter() - solve)
        errors.append(fem.errors(fields)[0])
    return {
        "seconds": times,
        "rel_l2": errors,
        "ranks": sorted(done_at),
        "reduced_solve": solver,
        "precondition_seconds": result.report.seconds.get("precondition", 0.0),
    }


def history_curve(history: list[dict], error: str = "rel_l2") -> dict:
    """A gradient baseline's error against wall time from ``physics_finetune``'s history:
    ``seconds``, ``rel_l2`` (the entries' ``error`` key: ``rel_l2`` for the current iterate,
    ``kept_rel_l2`` for the lowest-loss one so far) and ``steps``."""
    return {
        "seconds": [h["seconds"] for h in history],
        "rel_l2": [h[error] for h in history],
        "steps": history[-1]["step"],
    }


class OutOfTime(Exception):
    """Raised from I-LSR's progress callback when its clock has passed the budget."""


def ilsr_curve(model, fem, settings, seconds: float) -> dict:
    """I-LSR of ``model`` (updated in place) on ``fem`` with ``settings`` until its clock passes
    ``seconds`` (or its outer iterations end): per outer iteration the refined field's error
    (``seconds``, ``rel_l2``: when it was ready, before the update that follows) and the
    network's after the update (``network_seconds``, ``network_rel_l2``), the subspace ranks
    and the updates (α of commit, or the alignment loss). Collective."""
    from pinn_lsr.physics.iterative import iterative_lsr

    history = []

    def progress(entry):
        history.append(entry)
        if entry["seconds"] > seconds:
            raise OutOfTime

    try:
        _, final = iterative_lsr(model, fem, settings, seed=0, progress=progress)
        history.append(final[-1])
    except OutOfTime:
        pass
    # the network after iteration i's update is the next entry's network_rel_l2
    network = [h["network_rel_l2"] for h in history[1:]]
    if "refined_rel_l2" in history[-1]:  # stopped by the clock: measure the last update
        network.append(fem.errors(fem.network_fields(model))[0])
    refined = [h for h in history if "refined_rel_l2" in h]
    return {
        "seconds": [h["refined_seconds"] for h in refined],
        "rel_l2": [h["refined_rel_l2"] for h in refined],
        "network_seconds": [h["seconds"] for h in refined],
        "network_rel_l2": network,
        "ranks": [h["rank"] for h in refined],
        "updates": [h.get("step", h.get("align_loss")) for h in refined],
    }
