import pytest

import problems


def test_registry_and_clear_errors():
    assert sorted(problems.PROBLEMS) == ["darcy", "poisson"]
    assert problems.create_problem("darcy", tau=4.0).tau == 4.0
    with pytest.raises(ValueError, match="unknown problem 'heat'; choose one of: darcy, poisson"):
        problems.create_problem("heat")
    with pytest.raises(ValueError, match="bad parameters for problem 'poisson'"):
        problems.create_problem("poisson", high=3.0)


@pytest.mark.parametrize("name", sorted(problems.PROBLEMS))
def test_samples_have_grid_shape(name):
    samples = problems.create_problem(name).sample_inputs(3, 8, seed=0)
    assert samples.shape == (3, 8, 8) and samples.dtype.kind == "f"
