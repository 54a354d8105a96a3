"""Sweeps: ``solve.py -m key=a,b,c other=x,y`` runs one run per point of the values' Cartesian
product, each in its own directory under the sweep directory (``hydra.sweep.dir``), and keeps the
sweep's summary there (:mod:`pinn_lsr.run.summary`).

Values follow Hydra's override grammar (``a,b,c``, ``range(16,65,16)``, ``choice(...)``,
``glob(*)`` over a group's options); every override that is not a sweep applies to every point.
A point's directory is named by its swept overrides (``problem.resolution=16,model=fno``), so a
sweep run again with the same ``hydra.sweep.dir`` skips every point whose directory holds a
``metrics.json`` (a complete run), also after values were added to the sweep.

Under MPI every rank iterates the same points. A failed point is recorded in the summary and the
sweep goes on (``sweep.stop_on_error=true``: it stops, exit status 1) when every rank raised;
an error on some ranks only aborts the job as it aborts a single run (the finished points stay).
"""

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from mpi4py import MPI

from pinn_lsr.run.summary import PointResult, write_summary

log = logging.getLogger("pinn_lsr")


class Outcome(NamedTuple):
    """How one run ended: exit status (0 done, 1 failed during the run, 2 refused before any
    work) and, when it failed, the one-line message. The same on every rank that returns it."""

    status: int
    message: str = ""


@dataclass(frozen=True)
class Sweep:
    """The runs a ``-m`` command line asks for."""

    fixed: list[str]  # overrides of every point, as written
    keys: list[str]  # the swept keys, in command-line order
    points: list[dict[str, str]]  # per point: swept key -> value (the Cartesian product)
    written: dict[str, str]  # swept key -> as written, with its prefix (+key, ++key)

    def overrides(self, point: dict[str, str]) -> list[str]:
        """The whole command line of ``point``."""
        return [*self.fixed, *(f"{self.written[key]}={value}" for key, value in point.items())]


def parse_sweep(overrides: Sequence[str]) -> Sweep:
    """Split ``overrides`` into fixed ones and swept keys, and expand the points. Local.

    Raises:
        ValueError: a malformed override, a continuous sweep (``interval``), a key swept twice,
            or ``hydra.run.dir`` (each point has its own; ``hydra.sweep.dir`` sets the sweep's).
    """
    with initialize_config_module("pinn_lsr.conf", version_base=None):
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        try:
            parsed = parser.parse_overrides(list(overrides))
            fixed, values, written = [], {}, {}
            for override in parsed:
                key = override.key_or_group
                if key == "hydra.run.dir":
                    raise ValueError(
                        "hydra.run.dir cannot be set in a sweep: every point gets its own "
                        "directory under hydra.sweep.dir=DIR"
                    )
                if not override.is_sweep_override():
                    fixed.append(override.input_line)
                elif not override.is_discrete_sweep():
                    raise ValueError(f"{override.input_line}: a sweep needs a list of values")
                elif key in values:
                    raise ValueError(f"{key} is swept twice")
                else:
                    values[key] = [str(v) for v in override.sweep_string_iterator()]
                    written[key] = override.get_key_element()
        except HydraException as exc:
            where = getattr(exc, "override", None)  # the line a parse error is in
            message = str(exc).splitlines()[0]
            raise ValueError(f"{where}: {message}" if where else message) from None
    points = [{}]
    for key, choices in values.items():
        points = [{**point, key: value} for point in points for value in choices]
    return Sweep(fixed=fixed, keys=list(values), points=points, written=written)


def point_directory(point: dict[str, str]) -> str:
    """The directory name of ``point``: its swept overrides, comma separated (``run`` when
    nothing is swept); a ``/`` in a value becomes ``_``."""
    name = ",".join(f"{key}={value}" for key, value in point.items()).replace("/", "_")
    return name or "run"


def run_sweep(
    sweep: Sweep,
    sweep_dir: Path,
    comm: MPI.Comm,
    run_point: Callable[[list[str], Path], Outcome],
    *,
    stop_on_error: bool,
) -> int:
    """Run the points not complete yet in ``sweep_dir`` with ``run_point(overrides, run_dir)``,
    rewriting the summary after each; return 0, or 1 if a point failed. Collective."""
    results = [PointResult(point, point_directory(point)) for point in sweep.points]
    failed = False
    start = time.perf_counter()
    for k, result in enumerate(results):
        run_dir = sweep_dir / result.directory
        label = f"sweep point {k + 1}/{len(results)} ({result.directory})"
        metrics = _complete_run(run_dir, comm)
        if metrics is not None:
            log.info("%s: complete in %s, skipped", label, run_dir)
        else:
            log.info("%s: running in %s", label, run_dir)
            outcome = run_point(sweep.overrides(result.values), run_dir)
            if outcome.status != 0:
                result.status, result.message, failed = "failed", outcome.message, True
                if comm.rank == 0:  # each rank logged its own error already
                    log.error("%s failed: %s", label, outcome.message)
            else:
                metrics = _complete_run(run_dir, comm)
        if metrics is not None:
            result.status, result.metrics = "done", metrics
        if comm.rank == 0:
            write_summary(sweep_dir, results, sweep.keys)
        if failed and stop_on_error:
            log.error("sweep stopped at its first failed point (sweep.stop_on_error=true)")
            break
    done = sum(r.status == "done" for r in results)
    log.info(
        "sweep: %d of %d points done in %.1f s; summary in %s",
        done,
        len(results),
        time.perf_counter() - start,
        sweep_dir / "summary.md",
    )
    return 1 if failed else 0


def _complete_run(run_dir: Path, comm: MPI.Comm) -> dict | None:
    """The metrics of the complete run in ``run_dir`` (on rank 0; an empty dict elsewhere), or
    None on every rank if there is none. Collective."""
    metrics = None
    if comm.rank == 0 and (run_dir / "metrics.json").is_file():
        metrics = json.loads((run_dir / "metrics.json").read_text())
    complete = comm.bcast(metrics is not None, root=0)
    return (metrics if comm.rank == 0 else {}) if complete else None
