import csv

import numpy as np
import pytest

from pinn_lsr.run.summary import (
    PointResult,
    axis_label,
    convergence_series,
    fitted_rate,
    summary_rows,
    write_summary,
)


def point(resolution, model, error, *, mesh="unit_square", status="done"):
    metrics = {
        "mesh": f"{mesh}({resolution - 1})",
        "train": {"test_rel_l2": error, "history": [1.0]},
        "fem": {"manufactured_l2_error": 0.5},  # the same at every point: no line
        "seconds": {"data": 1.0, "train": 2.5},
        "peak_memory_mb": 100.0,
    }
    values = {"problem.resolution": str(resolution), "model": model}
    return PointResult(values, f"r{resolution}{model}", status, metrics=metrics)


def test_fitted_rate_is_the_exponent_of_a_power_law():
    x = np.array([0.1, 0.05, 0.025])
    assert fitted_rate(x, 3 * x**2) == pytest.approx(2.0)
    assert fitted_rate(x, 3 / x) == pytest.approx(-1.0)


def test_rows_hold_swept_values_status_errors_and_figures():
    points = [point(9, "fno", 0.1), PointResult({"problem.resolution": "17", "model": "fno"}, "p")]
    rows = summary_rows(points)
    assert rows[0]["trained_test_rel_l2"] == 0.1 and rows[0]["seconds"] == 3.5
    assert rows[1]["status"] == "pending" and rows[1]["trained_test_rel_l2"] is None
    assert "ilsr_rel_l2" not in rows[0]  # measured by no point: no column


def test_series_per_numeric_key_and_group_against_h_on_the_unit_square():
    points = [point(s, m, e) for s, m, e in [(9, "fno", 0.4), (17, "fno", 0.1), (9, "mlp", 0.3)]]
    points.append(point(33, "fno", 1.0, status="failed"))  # not drawn
    series = convergence_series(points, ["problem.resolution", "model"])
    assert len(series) == 1  # mlp has one x; fem error does not change; model is not a number
    (line,) = series
    assert line.group == "model=fno" and line.error == "trained_test_rel_l2"
    np.testing.assert_allclose(line.x, [1 / 16, 1 / 8])
    assert line.rate == pytest.approx(2.0)
    assert axis_label("problem.resolution", points).startswith("h = ")
    on_a_mesh = [point(9, "fno", 0.4, mesh="disk.msh"), point(17, "fno", 0.1, mesh="disk.msh")]
    (line,) = convergence_series(on_a_mesh, ["problem.resolution"])
    np.testing.assert_allclose(line.x, [9, 17])
    assert axis_label("problem.resolution", on_a_mesh) == "problem.resolution"


def test_summary_files_name_failures_and_escape_table_cells(tmp_path):
    values = {"problem.resolution": "9", "model": "mlp"}
    failed = PointResult(values, "r9mlp", "failed", message="ValueError: a|b\nc")
    write_summary(tmp_path, [failed, point(9, "fno", 0.4)], ["model"])
    text = (tmp_path / "summary.md").read_text()
    assert "2 points: 1 done, 1 failed, 0 pending" in text and "a\\|b c" in text
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["failed", "done"]
    assert rows[0]["message"] == "ValueError: a|b\nc" and rows[0]["trained_test_rel_l2"] == ""
    assert not (tmp_path / "convergence.png").exists()  # no series
