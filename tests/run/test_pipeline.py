"""run/pipeline.py: settings -> meshes -> data -> stages -> reports."""

import json
from pathlib import Path

import pytest
from mpi4py import MPI

from pinn_lsr.run.cli import compose_config
from pinn_lsr.run.config import load_settings
from pinn_lsr.run.pipeline import check_sample_counts, run, setup

MESHES = Path(__file__).parents[2] / "meshes"
TINY = [
    "problem.resolution=8",
    "data.n_train=4",
    "data.n_test=2",
    "output.n_show=1",
    "output.progress=false",
    "~model",
    "method=none",
]


def settings(tmp_path, *overrides):
    return load_settings(compose_config([*TINY, f"data.cache_dir={tmp_path}/cache", *overrides]))


def test_function_fitting_needs_no_mesh(tmp_path):
    prepared = setup(settings(tmp_path, "problem=fit2d"), MPI.COMM_WORLD)
    assert prepared.domain is None and prepared.local_domain is None


def test_a_dirichlet_tag_the_mesh_lacks_is_refused_before_any_work(tmp_path):
    bad = settings(tmp_path, f"mesh.file={MESHES / 'lshape.msh'}", "mesh.dirichlet_tags=[7]")
    with pytest.raises(ValueError, match="7"):
        setup(bad, MPI.COMM_WORLD)


def test_a_run_without_a_model_solves_writes_fields_and_metrics_last(tmp_path):
    run_settings = settings(tmp_path)
    prepared = setup(run_settings, MPI.COMM_WORLD)
    metrics = run(run_settings, prepared, tmp_path / "run", MPI.COMM_WORLD)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["n_train"] == 4 and written["n_test"] == 2 and written["n_dofs"] == 64
    assert metrics["fem"]["distributed_vs_dataset_max_abs_diff"] < 1e-10
    assert (tmp_path / "run" / "fields" / "samples.xdmf").is_file()
    assert set(written["seconds"]) >= {"mesh", "data", "fem_solve", "output"}
    assert written["skipped"] == {
        "train": "no model (~model)",
        "lsr": "method=none",
        "physics": "no model (~model)",
    }


def test_every_rank_needs_a_sample_of_each_set(tmp_path):
    lsr = load_settings(compose_config(["data.n_train=5", "data.n_test=2", "method=lsr"]))
    check_sample_counts(lsr, 1)
    with pytest.raises(
        ValueError, match="the LSR validation part .* = 1 samples, fewer than the 2"
    ):
        check_sample_counts(lsr, 2)
    with pytest.raises(ValueError, match="data.n_test = 2 samples, fewer than the 3 MPI ranks"):
        check_sample_counts(settings(tmp_path), 3)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.cache_dir=/proc/no/cache"], "data.cache_dir=/proc/no/cache is not writable"),
        (["physics.rank=65"], "physics.rank=65 exceeds the 64 FEM dofs"),
    ],
)
def test_what_would_fail_late_is_refused_in_setup(tmp_path, overrides, message):
    base = ["problem.resolution=8", "model=mlp", "method=none", f"data.cache_dir={tmp_path}"]
    run_settings = load_settings(compose_config([*base, *overrides]))
    with pytest.raises(ValueError, match=message):
        setup(run_settings, MPI.COMM_WORLD)


def test_a_file_in_the_way_of_a_directory_is_refused(tmp_path):
    from pinn_lsr.run.pipeline import check_writable

    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="cannot be a directory: .*file is a file"):
        check_writable(tmp_path / "file" / "run", "hydra.run.dir", MPI.COMM_WORLD)
    check_writable(tmp_path / "new" / "run", "hydra.run.dir", MPI.COMM_WORLD)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing left behind
