import csv
import json
import re

import numpy as np
import pytest

import pinn_lsr.run.pipeline
from pinn_lsr.run.cli import main
from pinn_lsr.run.sweep import parse_sweep, point_directory

# Poisson's manufactured solution on the unit square, no network: about a second per point
FEM_ONLY = [
    "problem=poisson",
    "~model",
    "method=none",
    "data.n_train=2",
    "data.n_test=0",
    "output.n_show=1",
    "output.progress=false",
]
# a tiny FNO with every stage that reports an error
TINY_NETWORK = [
    "data.n_train=4",
    "data.n_test=2",
    "output.n_show=1",
    "output.progress=false",
    "train.epochs=2",
    "train.batch_size=2",
    "model.width=4",
    "model.modes=3",
    "physics.instances=1",
    "physics.ilsr.iterations=1",
    "physics.ilsr.align_iterations=5",
]


def sweep(tmp_path, *overrides):
    return main(
        ["-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", f"data.cache_dir={tmp_path / 'cache'}"]
        + list(overrides)
    )


def summary(tmp_path) -> list[dict]:
    with open(tmp_path / "sweep" / "summary.csv") as f:
        return list(csv.DictReader(f))


def test_sweep_expands_the_cartesian_product_of_hydra_values():
    sweep = parse_sweep(["seed=3", "problem.resolution=16,32", "physics.rank=range(8,25,8)"])
    assert sweep.fixed == ["seed=3"] and sweep.keys == ["problem.resolution", "physics.rank"]
    assert len(sweep.points) == 6
    assert sweep.points[1] == {"problem.resolution": "16", "physics.rank": "16"}
    assert sweep.overrides(sweep.points[0]) == ["seed=3", "problem.resolution=16", "physics.rank=8"]
    assert point_directory(sweep.points[0]) == "problem.resolution=16,physics.rank=8"
    models = parse_sweep(["model=glob(*)"])  # a group's options
    assert {p["model"] for p in models.points} >= {"fno", "deeponet", "mlp"}
    assert parse_sweep(["seed=1"]).points == [{}] and point_directory({}) == "run"
    assert point_directory({"mesh.file": "meshes/disk.msh"}) == "mesh.file=meshes_disk.msh"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["hydra.run.dir=/tmp/x", "seed=1,2"], "hydra.sweep.dir"),
        (["seed=interval(0,1)"], "list of values"),
        (["seed=1,2", "seed=3,4"], "swept twice"),
        (["seed=1,,"], "seed"),
    ],
)
def test_bad_sweeps_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        parse_sweep(overrides)


def test_a_typo_in_any_point_refuses_the_sweep_before_any_run(tmp_path, capsys):
    status = sweep(tmp_path, *FEM_ONLY, "problem.resolution=9,1")
    assert status == 2 and not (tmp_path / "sweep").exists()
    assert "sweep point problem.resolution=1: problem.resolution" in capsys.readouterr().err


def test_fem_error_of_the_manufactured_solution_converges_at_order_two(tmp_path):
    assert sweep(tmp_path, *FEM_ONLY, "problem.resolution=9,17,33") == 0
    rows = summary(tmp_path)
    assert [r["problem.resolution"] for r in rows] == ["9", "17", "33"]
    assert all(r["status"] == "done" for r in rows)
    h = np.array([1 / (int(r["problem.resolution"]) - 1) for r in rows])
    errors = np.array([float(r["fem_l2_error"]) for r in rows])
    order = np.polyfit(np.log(h), np.log(errors), 1)[0]
    assert 1.8 <= order <= 2.2, f"errors {errors}"
    text = (tmp_path / "sweep" / "summary.md").read_text()
    printed = re.search(r"\| FEM \(manufactured solution\) \| h = [^|]+\|  \| ([-0-9.]+) \|", text)
    assert printed and float(printed.group(1)) == pytest.approx(order, abs=0.005)
    assert (tmp_path / "sweep" / "convergence.png").stat().st_size > 0


def test_every_row_matches_its_runs_metrics(tmp_path):
    status = sweep(
        tmp_path, *TINY_NETWORK, "method=none", "problem.resolution=8,12,16", "physics.rank=4,8"
    )
    assert status == 0
    rows = summary(tmp_path)
    assert len(rows) == 6
    assert {(r["problem.resolution"], r["physics.rank"]) for r in rows} == {
        (s, r) for s in ("8", "12", "16") for r in ("4", "8")
    }
    for row in rows:
        metrics = json.loads((tmp_path / "sweep" / row["directory"] / "metrics.json").read_text())
        physics = metrics["physics"]
        assert metrics["grid_size"] == int(row["problem.resolution"])
        assert physics["physics_lsr"]["rank"] == int(row["physics.rank"])
        expected = {
            "trained_test_rel_l2": metrics["train"]["test_rel_l2"],
            "physics_network_rel_l2": physics["stages"]["trained network"],
            "physics_lsr_rel_l2": physics["physics_lsr"]["fem_rel_l2"],
            "ilsr_rel_l2": physics["ilsr"]["fem_rel_l2"],
            "baseline_rel_l2": physics["baseline"]["fem_rel_l2"],
            "seconds": sum(metrics["seconds"].values()),
            "peak_memory_mb": metrics["peak_memory_mb"],
            "n_dofs": metrics["n_dofs"],
        }
        assert {k: float(row[k]) for k in expected} == pytest.approx(expected, rel=1e-12)


class Killed(BaseException):
    """What ends a process in the middle of a point (not an ``Exception``: nothing catches it)."""


def test_an_interrupted_sweep_resumes_without_redoing_finished_points(tmp_path, monkeypatch):
    run = pinn_lsr.run.pipeline.run
    calls, kills = [], [2]  # kill at the second call

    def interrupted_at_the_second_point(*args):
        calls.append(args[2])
        if len(calls) in kills:
            kills.clear()
            raise Killed
        return run(*args)

    monkeypatch.setattr(pinn_lsr.run.pipeline, "run", interrupted_at_the_second_point)
    with pytest.raises(Killed):
        sweep(tmp_path, *FEM_ONLY, "problem.resolution=9,17,33")
    first = tmp_path / "sweep" / "problem.resolution=9" / "metrics.json"
    finished = first.read_bytes(), first.stat().st_mtime_ns
    assert [r["status"] for r in summary(tmp_path)] == ["done", "pending", "pending"]

    calls.clear()
    assert sweep(tmp_path, *FEM_ONLY, "problem.resolution=9,17,33") == 0
    assert [d.name for d in calls] == ["problem.resolution=17", "problem.resolution=33"]
    assert (first.read_bytes(), first.stat().st_mtime_ns) == finished
    assert [r["status"] for r in summary(tmp_path)] == ["done"] * 3


@pytest.mark.parametrize("stop", [False, True])
def test_a_failed_point_is_recorded_and_the_sweep_goes_on_unless_asked_to_stop(tmp_path, stop):
    status = sweep(
        tmp_path,
        *FEM_ONLY,
        "problem.resolution=9",
        "fem.petsc_options={ksp_type: cg, pc_type: none}",
        "+fem.petsc_options.ksp_max_it=1,1000",  # one CG iteration: DIVERGED_MAX_IT
        f"sweep.stop_on_error={str(stop).lower()}",
    )
    assert status == 1
    rows = summary(tmp_path)
    assert [r["status"] for r in rows] == ["failed", "pending" if stop else "done"]
    assert "SolverError" in rows[0]["message"] and "DIVERGED_MAX_IT" in rows[0]["message"]
    assert not (tmp_path / "sweep" / rows[0]["directory"] / "metrics.json").exists()
    assert "run failed: SolverError" in (tmp_path / "sweep" / "sweep.log").read_text()
