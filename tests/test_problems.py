import pytest

import problems


def test_registry_and_clear_errors():
    assert sorted(problems.PROBLEMS) == ["darcy", "fit2d", "nonlinear_diffusion", "poisson"]
    assert problems.create_problem("darcy", tau=4.0).tau == 4.0
    with pytest.raises(ValueError, match="unknown problem .heat.; choose one of: darcy, fit2d, nonlinear_diffusion, poisson"):
        problems.create_problem("heat")
    with pytest.raises(ValueError, match="bad parameters for problem 'poisson'"):
        problems.create_problem("poisson", high=3.0)


@pytest.mark.parametrize("name", ["darcy", "poisson", "nonlinear_diffusion"])
def test_samples_have_grid_shape(name):
    samples = problems.create_problem(name).sample_inputs(3, 8, seed=0)
    assert samples.shape == (3, 8, 8) and samples.dtype.kind == "f"


def test_fit2d_data():
    fit = problems.create_problem("fit2d")
    points, values = fit.training_data(50, seed=0)
    assert points.shape == (50, 2) and values.shape == (50, 1) and abs(points).max() <= 1
    grid, exact = fit.test_data(10)
    assert grid.shape == (100, 2) and abs(exact).max() <= 1
    with pytest.raises(ValueError, match="unknown target 'cos'"):
        problems.create_problem("fit2d", target="cos")
