"""Replay the bad-input probes of issue 20: each a ``solve.py`` command line (serial or under
``mpirun -n 2``) with the exit status it must end with.

Bad input must exit with status 2 before any work, with a message and no traceback, and leave no
``metrics.json``; a run must never hang (each probe is killed after ``--timeout`` seconds and
reported as a hang). A few probes must succeed (exit 0) and record what they did. Every probe is
tiny (Darcy 12 × 12, 4 + 2 samples, an FNO of width 4 trained for 2 epochs), so the whole list
takes a few minutes on 2 cores, most of it starting Python.

Printed: one row per probe with the command (the overrides after the common tiny ones), the
expected and actual exit status, seconds, and what is wrong (``ok`` when nothing). Exit status
1 if any probe is wrong. A full replay (no ``--filter``) is written to
``bench/results/probe_inputs/results.json``.

Usage: ``.venv/bin/python bench/probe_inputs.py [--filter TEXT] [--timeout 120]``.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchutil import git_commit

ROOT = Path(__file__).parents[1]
OUT = ROOT / "bench" / "results" / "probe_inputs"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
MPIRUN = [str(ROOT / ".venv" / "bin" / "mpirun"), "-n", "2"]
TINY = [
    "problem.resolution=12",
    "data.n_train=4",
    "data.n_test=2",
    "output.n_show=1",
    "output.progress=false",
    "physics.instances=0",
    "train.epochs=2",
    "train.batch_size=2",
    "method=none",
]
FNO = ["model.width=4", "model.modes=3"]  # the tiny FNO, unless a probe picks another model


@dataclass
class Probe:
    """One command line: ``overrides`` after :data:`TINY`, run on ``ranks`` MPI ranks."""

    overrides: list[str]
    expected: int = 2
    ranks: int = 1
    run_dir: str | None = None  # a folder of the work directory; default: a fresh one
    check: Callable[[Path], str] | None = None  # after a success: "" or what is wrong
    name: str = field(init=False, default="")

    def __post_init__(self):
        self.name = " ".join(self.overrides)


def recorded(key: str, value) -> Callable[[Path], str]:
    """A check that ``metrics.json`` holds ``value`` at the dotted ``key``."""

    def check(run_dir: Path) -> str:
        found = json.loads((run_dir / "metrics.json").read_text())
        for part in key.split("."):
            found = found.get(part) if isinstance(found, dict) else None
        return "" if found == value else f"metrics.json {key} = {found!r}, not {value!r}"

    return check


def probes(work: Path) -> list[Probe]:
    """The probes, given the files :func:`prepare` made in ``work``."""
    trained = f"checkpoint={work / 'trained' / 'checkpoint.pt'}"
    return [
        # held before issue 20: configuration mistakes
        Probe(["problem=heat"]),
        Probe(["model=unet"]),
        Probe(["method=gn"]),
        Probe(["data.n_trains=3"]),
        Probe(["--verbose"]),
        Probe(["problem.resolution=1"]),
        Probe(["mesh.file=nowhere.msh"]),
        Probe([f"mesh.file={work / 'broken.msh'}"]),
        Probe(["problem=heat"], ranks=2),
        # found by the probe of issue 20
        Probe(["physics.instances=1", "physics.rank=100000"]),
        Probe(["data.cache_dir=/proc/x"]),
        Probe(["data.cache_dir=/proc/x"], ranks=2),
        Probe(["hydra.run.dir=/proc/x"]),
        Probe([f"hydra.run.dir={work / 'a_file'}"]),
        Probe(["data.n_train=1", "method=lsr"]),
        Probe(["data.n_train=5", "method=lsr"], ranks=2),
        Probe(["train.lr=nan"]),
        Probe(["train.lr=-1"]),
        Probe(["train.lr=inf"]),
        Probe(["train.lr=nan"], ranks=2),
        Probe(["physics.baseline.lr=0"]),
        Probe(["fem.petsc_options.ksp_type=nosuch"]),
        Probe(["fem.petsc_options.ksp_type=nosuch"], ranks=2),
        Probe(["physics.petsc_options={pc_type: nosuch}"]),
        Probe([f"checkpoint={work / 'corrupt.pt'}"]),
        Probe([f"checkpoint={work / 'truncated.pt'}"]),
        Probe([f"checkpoint={work / 'foreign.pt'}"]),
        Probe([trained, "problem.resolution=16"]),
        Probe([trained, "problem=poisson"]),
        Probe([trained, "problem=elasticity"]),
        Probe([trained, "model=mlp"]),
        Probe([trained, "problem.resolution=16"], ranks=2),
        Probe(["train.resume=true", "train.lr=0.01"], run_dir="trained"),
        Probe(["train.resume=true", "model.width=8"], run_dir="trained"),
        Probe(["train.resume=true", "train.lr=0.01"], ranks=2, run_dir="trained"),
        # must succeed, and say what they did
        Probe(
            ["train.resume=true", "train.epochs=3"],
            0,
            run_dir="resumed",
            check=recorded("train.resumed.from_epoch", 2),
        ),
        Probe(
            ["data.n_test=0", "physics.instances=2"],
            0,
            check=recorded("skipped.physics", "data.n_test=0: no test instances to refine"),
        ),
        Probe([trained], 0, check=recorded("train.model", "fno")),
    ]


def prepare(work: Path, timeout: float) -> None:
    """The files the probes use: a trained tiny FNO (and a copy to resume), a broken mesh, bad
    checkpoints and a file where a directory is expected."""
    result = solve(Probe([], 0), work, "trained", timeout)
    if result["got"] != 0:
        sys.exit(f"the training run failed:\n{result['stderr']}")
    shutil.copytree(work / "trained", work / "resumed")
    checkpoint = (work / "trained" / "checkpoint.pt").read_bytes()
    (work / "truncated.pt").write_bytes(checkpoint[: len(checkpoint) // 2])
    damaged = bytes(b ^ 0x5A for b in checkpoint[:64])  # the archive's header
    (work / "corrupt.pt").write_bytes(damaged + checkpoint[64:])
    foreign = (
        f"import torch; torch.save({{'weights': torch.zeros(3)}}, {str(work / 'foreign.pt')!r})"
    )
    subprocess.run([PYTHON, "-c", foreign], check=True)
    (work / "broken.msh").write_text("$MeshFormat\n4.1 0 8\n$EndMeshFormat\n$Nodes\n1 2\n")
    (work / "a_file").write_text("")


def solve(probe: Probe, work: Path, run_dir: str, timeout: float) -> dict:
    """Run ``probe`` with its run directory ``work/run_dir``; what happened."""
    launcher = MPIRUN if probe.ranks > 1 else []
    common = [f"hydra.run.dir={work / run_dir}", f"data.cache_dir={work / 'cache'}", *TINY]
    if not any(o.startswith("model=") for o in probe.overrides):
        common += [
            o for o in FNO if o.split("=")[0] not in {p.split("=")[0] for p in probe.overrides}
        ]
    command = [*launcher, PYTHON, str(ROOT / "solve.py"), *common, *probe.overrides]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=os.environ
        )
        got, stderr = done.returncode, done.stderr
    except subprocess.TimeoutExpired as exc:
        got, stderr = None, (exc.stderr or b"").decode(errors="replace")
    return {"got": got, "seconds": time.perf_counter() - start, "stderr": stderr}


def message(stderr: str) -> str:
    """The line of ``stderr`` that says why the run stopped (``error: ...``), else its last."""
    lines = stderr.strip().splitlines() or [""]
    return next((line for line in lines if line.startswith("error:")), lines[-1])[:300]


def verdict(probe: Probe, result: dict, run_dir: Path) -> str:
    """``ok``, or what is wrong with the probe's outcome."""
    if result["got"] is None:
        return "hang (killed)"
    wrong = []
    if result["got"] != probe.expected:
        wrong.append(f"exit {result['got']}")
    if "Traceback" in result["stderr"]:
        wrong.append("traceback")
    if probe.expected == 2 and (run_dir / "metrics.json").exists() != (probe.run_dir is not None):
        wrong.append("metrics.json written" if probe.run_dir is None else "metrics.json moved")
    if probe.expected == 0 and result["got"] == 0 and probe.check is not None:
        wrong.append(probe.check(run_dir))
    return "; ".join(w for w in wrong if w) or "ok"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--filter", default="", help="only probes whose command contains this")
    parser.add_argument("--timeout", type=float, default=120, help="seconds before a hang")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    commit = git_commit()
    rows = []
    with tempfile.TemporaryDirectory(prefix="probe_inputs_") as tmp:
        work = Path(tmp)
        prepare(work, args.timeout)
        selected = [p for p in probes(work) if args.filter in p.name]
        print(f"{'command (after the tiny common overrides)':<72} ranks exp got seconds  verdict")
        for k, probe in enumerate(selected):
            run_dir = probe.run_dir or f"probe{k}"
            result = solve(probe, work, run_dir, args.timeout)
            row = {
                "command": probe.name.replace(str(work) + "/", ""),
                "ranks": probe.ranks,
                "expected": probe.expected,
                "got": result["got"],
                "seconds": round(result["seconds"], 1),
                "verdict": verdict(probe, result, work / run_dir),
                "message": message(result["stderr"]),
            }
            rows.append(row)
            print(
                f"{row['command'][:72]:<72} {row['ranks']:>5} {row['expected']:>3} "
                f"{str(row['got']):>3} {row['seconds']:>7.1f}  {row['verdict']}",
                flush=True,
            )
    wrong = [r for r in rows if r["verdict"] != "ok"]
    print(f"\n{len(rows) - len(wrong)} of {len(rows)} probes as expected (commit {commit})")
    if not args.filter:  # the results file holds complete replays only
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "results.json").write_text(json.dumps({"commit": commit, "probes": rows}, indent=2))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
