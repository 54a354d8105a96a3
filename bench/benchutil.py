"""Helpers shared by the benchmark scripts (run as ``python bench/NAME.py``)."""

import json
import os
import subprocess
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


def append_results(path: Path, rows: list) -> None:
    """Append ``rows`` to the JSON list in ``path`` (created with its folder if missing),
    atomically: a failed write leaves the previous file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text()) if path.exists() else []
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(previous + rows, indent=1))
    temporary.replace(path)
