"""A sweep's summary: ``summary.csv``, ``summary.md`` and ``convergence.png`` in its directory.

One row per point: the swept values, the point's status (``done``, ``failed`` with its message,
or ``pending`` while the sweep runs), every stage's error, the FEM dofs, the run's seconds and
peak memory, read from the point's ``metrics.json``. ``convergence.png`` draws each error against
each numeric swept key on log–log axes, one line per combination of the other swept keys, with
the fitted rate (the slope of log error against log x) in the legend. A swept
``problem.resolution`` on the unit square is drawn against the mesh size h = 1/(resolution − 1),
so that the rate is the order of convergence.

Local: the sweep's rank 0 writes it, atomically, after every point.
"""

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pinn_lsr.io.atomic import write_atomic
from pinn_lsr.io.plots import plot_convergence

#: error columns: (path in metrics.json, legend label)
ERRORS = {
    "trained_test_rel_l2": (("train", "test_rel_l2"), "trained network (test set)"),
    "lsr_test_rel_l2": (("lsr", "test_rel_l2"), "data LSR (test set)"),
    "physics_network_rel_l2": (
        ("physics", "stages", "trained network"),
        "trained network (physics instances)",
    ),
    "physics_lsr_rel_l2": (("physics", "physics_lsr", "fem_rel_l2"), "physics LSR"),
    "ilsr_rel_l2": (("physics", "ilsr", "fem_rel_l2"), "I-LSR"),
    "baseline_rel_l2": (("physics", "baseline", "fem_rel_l2"), "gradient baseline"),
    "fem_l2_error": (("fem", "manufactured_l2_error"), "FEM (manufactured solution)"),
}
#: other figures of a run: (path in metrics.json or None for the sum of its seconds)
FIGURES = {"n_dofs": ("n_dofs",), "seconds": None, "peak_memory_mb": ("peak_memory_mb",)}
RESOLUTION = "problem.resolution"


@dataclass
class PointResult:
    """One point of a sweep and what became of it."""

    values: dict[str, str]  # swept key -> value, as Hydra's override grammar gave it
    directory: str  # the run directory's name in the sweep directory
    status: str = "pending"  # pending | done | failed
    message: str = ""  # a failed point's error
    metrics: dict = field(default_factory=dict)  # the run's metrics.json (done points)


@dataclass(frozen=True)
class Series:
    """One line of ``convergence.png``: an error against a numeric swept key."""

    key: str  # the swept key (x axis)
    error: str  # the error's column (ERRORS)
    group: str  # the other swept keys' values ("model=fno, seed=1"; "" when none)
    x: np.ndarray  # (n,) increasing
    y: np.ndarray  # (n,)

    @property
    def label(self) -> str:
        name = ERRORS[self.error][1]
        return f"{name} ({self.group})" if self.group else name

    @property
    def rate(self) -> float:
        """Least-squares slope of log y against log x."""
        return fitted_rate(self.x, self.y)


def fitted_rate(x: Sequence[float], y: Sequence[float]) -> float:
    """The least-squares slope of ``log y`` against ``log x`` (at least two distinct x > 0)."""
    slope, _ = np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)
    return float(slope)


def summary_rows(points: Sequence[PointResult]) -> list[dict]:
    """The table: swept values, status, error columns, figures (None where not measured); columns
    no point measured are left out."""
    rows = []
    for point in points:
        row = {**point.values, "directory": point.directory, "status": point.status}
        row["message"] = point.message
        for column, (path, _) in ERRORS.items():
            row[column] = _lookup(point.metrics, path)
        for column, path in FIGURES.items():
            if path is None:
                seconds = point.metrics.get("seconds")
                row[column] = sum(seconds.values()) if seconds else None
            else:
                row[column] = _lookup(point.metrics, path)
        rows.append(row)
    measured = {c for row in rows for c in (*ERRORS, *FIGURES) if row[c] is not None}
    return [
        {k: v for k, v in row.items() if k in measured or k not in (*ERRORS, *FIGURES)}
        for row in rows
    ]


def convergence_series(points: Sequence[PointResult], keys: Sequence[str]) -> list[Series]:
    """Each measured error against each numeric swept key, one series per combination of the
    other keys' values: those with two or more distinct positive x, positive errors, and errors
    that change with the key."""
    done = [p for p in points if p.status == "done"]
    series = []
    for key in keys:
        x_of = _x_values(done, key)
        if x_of is None:
            continue
        others = [k for k in keys if k != key]
        for column, (path, _) in ERRORS.items():
            groups: dict[tuple, list[tuple[float, float]]] = {}
            for point in done:
                error = _lookup(point.metrics, path)
                if error is not None and error > 0:
                    group = tuple(point.values[k] for k in others)
                    groups.setdefault(group, []).append((x_of[point.directory], error))
            for group, pairs in groups.items():
                pairs.sort()
                x, y = np.array(pairs).T
                if len(set(x)) < 2 or np.ptp(y) <= 1e-12 * np.max(y):
                    continue  # one x, or an error this key does not change
                where = ", ".join(f"{k}={v}" for k, v in zip(others, group))
                series.append(Series(key, column, where, x, y))
    return series


def axis_label(key: str, points: Sequence[PointResult]) -> str:
    """The x label of ``key``'s panel."""
    return f"h = 1/({RESOLUTION} − 1)" if _mesh_size_axis(key, points) else key


def write_summary(sweep_dir: Path, points: Sequence[PointResult], keys: Sequence[str]) -> None:
    """Write ``summary.csv``, ``summary.md`` and ``convergence.png`` (when a series exists) into
    ``sweep_dir``, each atomically."""
    rows = summary_rows(points)
    columns = list(dict.fromkeys(c for row in rows for c in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    write_atomic(sweep_dir / "summary.csv", lambda p: p.write_text(buffer.getvalue()))
    series = convergence_series(points, keys)
    write_atomic(
        sweep_dir / "summary.md", lambda p: p.write_text(_markdown(rows, columns, series, points))
    )
    if series:
        errors, groups = list(ERRORS), sorted({s.group for s in series})
        panels = {}
        for s in series:
            panels.setdefault(s.key, []).append(
                (
                    f"{s.label}: rate {s.rate:.2f}",
                    s.x,
                    s.y,
                    errors.index(s.error),
                    groups.index(s.group),
                )
            )
        plot_convergence(
            sweep_dir / "convergence.png",
            [(axis_label(key, points), lines) for key, lines in panels.items()],
        )


def _markdown(rows: list[dict], columns: list[str], series: list[Series], points) -> str:
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "failed", "pending")}
    lines = [
        "# Sweep summary",
        "",
        f"{len(rows)} points: {counts['done']} done, {counts['failed']} failed, "
        f"{counts['pending']} pending. Errors are relative L2 against the FEM solution "
        "(fem_l2_error: absolute L2 error of the manufactured solution).",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    if series:
        lines += [
            "",
            "## Fitted rates: slope of log error against log x (against h: the order)",
            "",
            "| error | x | other swept keys | rate |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {ERRORS[s.error][1]} | {axis_label(s.key, points)} | {s.group} | {s.rate:.2f} |"
            for s in series
        ]
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _lookup(metrics: dict, path: Sequence[str]):
    value = metrics
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _mesh_size_axis(key: str, points: Sequence[PointResult]) -> bool:
    done = [p for p in points if p.status == "done"]
    return (
        key == RESOLUTION
        and bool(done)
        and all(str(p.metrics.get("mesh", "")).startswith("unit_square(") for p in done)
    )


def _x_values(done: Sequence[PointResult], key: str) -> dict[str, float] | None:
    """Each done point's x for ``key`` (by directory), or None if a value is not a number."""
    try:
        values = {p.directory: float(p.values[key]) for p in done}
    except ValueError:
        return None
    if _mesh_size_axis(key, done):
        values = {d: 1.0 / (s - 1) for d, s in values.items()}
    return values
