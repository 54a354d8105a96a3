import h5py
import numpy as np
import pytest
from mpi4py import MPI

from pinn_lsr.data.dataset import load_or_generate, settings_key

SIZE = 4


class CountingSolver:
    """A stand-in for the FEM solve: u = 2 a + 1, counting its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, a):
        self.calls += 1
        return 2 * a + 1


def sample_inputs(first, count):
    return np.stack([np.full((SIZE, SIZE), float(first + i)) for i in range(count)])


def settings(**changes):
    return {"problem": "toy", "grid_size": SIZE, "n_samples": 5, **changes}


def load(cache_dir, solver, **kwargs):
    return load_or_generate(
        cache_dir,
        settings(**kwargs),
        sample_inputs=sample_inputs,
        solve=solver,
        comm=MPI.COMM_SELF,
        progress=False,
    )


def test_generate_then_reuse(tmp_path):
    solver = CountingSolver()
    data, report = load(tmp_path, solver)
    assert report.status == "generated" and solver.calls == 5
    np.testing.assert_array_equal(data.inputs[:, 0, 0], np.arange(5.0))
    np.testing.assert_array_equal(data.solutions, 2 * data.inputs + 1)
    again, report = load(tmp_path, solver)
    assert report.status == "hit" and solver.calls == 5
    np.testing.assert_array_equal(again.solutions, data.solutions)
    assert report.path.name == f"toy-{settings_key(settings())}.h5"


def test_other_settings_use_another_file(tmp_path):
    solver = CountingSolver()
    _, first = load(tmp_path, solver)
    _, second = load(tmp_path, solver, seed=1)
    assert first.path != second.path and second.status == "generated"


def test_truncated_cache_is_regenerated(tmp_path):
    solver = CountingSolver()
    _, report = load(tmp_path, solver)
    report.path.write_bytes(report.path.read_bytes()[:500])
    data, again = load(tmp_path, solver)
    assert again.status == "regenerated" and "cannot be read" in again.reason and solver.calls == 10
    np.testing.assert_array_equal(data.solutions, 2 * data.inputs + 1)


def test_tampered_cache_fails_checksum(tmp_path):
    solver = CountingSolver()
    _, report = load(tmp_path, solver)
    with h5py.File(report.path, "r+") as f:
        f["solutions"][0, 0, 0] = 99.0
    data, again = load(tmp_path, solver)
    assert again.status == "regenerated" and again.reason == "checksum mismatch"
    assert data.solutions[0, 0, 0] == 1.0


def test_split_and_shape_errors(tmp_path):
    data, _ = load(tmp_path, CountingSolver())
    train, test = data.split(3)
    assert len(train) == 3 and len(test) == 2
    with pytest.raises(ValueError, match="cannot split"):
        data.split(6)
    with pytest.raises(ValueError, match="expected"):
        load_or_generate(
            tmp_path,
            settings(grid_size=5),
            sample_inputs=sample_inputs,
            solve=CountingSolver(),
            comm=MPI.COMM_SELF,
            progress=False,
        )


def test_nan_solutions_are_refused_and_nothing_is_cached(tmp_path):
    with pytest.raises(FloatingPointError):
        load(tmp_path, lambda a: np.full_like(a, np.nan))
    assert not list(tmp_path.glob("*.h5"))


def test_one_dimensional_grid(tmp_path):
    def lines(first, count):
        return np.stack([np.full(SIZE, float(first + i)) for i in range(count)])

    kwargs = dict(sample_inputs=lines, solve=CountingSolver(), comm=MPI.COMM_SELF, progress=False)
    data, report = load_or_generate(tmp_path, settings(dim=1), **kwargs)
    assert report.status == "generated" and data.inputs.shape == data.solutions.shape == (5, SIZE)
    again, report = load_or_generate(tmp_path, settings(dim=1), **kwargs)
    assert report.status == "hit"
    np.testing.assert_array_equal(again.solutions, 2 * again.inputs + 1)
    with pytest.raises(ValueError, match=r"expected \(5, 4, 4\)"):  # the default grid is 2D
        load_or_generate(tmp_path, settings(), **kwargs)
