"""Helpers shared by the benchmark scripts (run as ``python bench/NAME.py``)."""

import json
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
