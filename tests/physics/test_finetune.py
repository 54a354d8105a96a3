import copy

import numpy as np
import pytest
from mpi4py import MPI

from pinn_lsr.physics.finetune import fem_loss_and_grid_gradient, physics_finetune
from tests.physics.physics_cases import darcy_instances, problem_instances, tiny_fno


@pytest.fixture(scope="module")
def fem():
    instances = darcy_instances(MPI.COMM_SELF, size=6, n=2, seed=1)
    yield instances
    instances.destroy()


@pytest.fixture(scope="module")
def cdr():
    """Convection–diffusion–reaction: a non-symmetric operator with an SPD weighting (dual norm)."""
    instances = problem_instances("cdr", MPI.COMM_SELF, size=6, n=2, seed=1)
    yield instances
    instances.destroy()


@pytest.mark.parametrize("norm", ["energy", "dual", "l2"])
def test_fem_loss_gradient_matches_finite_differences(fem, cdr, norm):
    fem = cdr if norm == "dual" else fem
    rng = np.random.default_rng(0)
    grid = rng.standard_normal((2, 36)) * 0.01
    _, gradient = fem_loss_and_grid_gradient(fem, grid, norm)
    direction = rng.standard_normal(grid.shape)
    h = 1e-6
    plus, _ = fem_loss_and_grid_gradient(fem, grid + h * direction, norm)
    minus, _ = fem_loss_and_grid_gradient(fem, grid - h * direction, norm)
    np.testing.assert_allclose((plus - minus) / (2 * h), np.sum(gradient * direction), rtol=1e-6)


def test_energy_loss_is_smallest_at_the_fem_solution(fem):
    grid = np.stack([fem.pde.field_on_grid(u).ravel() for u in fem.references])
    best, gradient = fem_loss_and_grid_gradient(fem, grid, "energy")
    assert np.abs(gradient).max() < 1e-10
    worse, _ = fem_loss_and_grid_gradient(fem, grid * 1.01, "energy")
    assert worse > best


@pytest.mark.parametrize("optimizer,lr", [("adam", 1e-3), ("lbfgs", 1.0)])
def test_physics_finetune_lowers_the_error_within_its_time(fem, optimizer, lr):
    model = tiny_fno(6)
    history = physics_finetune(copy.deepcopy(model), fem, seconds=1.0, optimizer=optimizer, lr=lr)
    assert history[0]["step"] == 0 and len(history) > 1
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["rel_l2"] < history[0]["rel_l2"]


def test_physics_finetune_scores_an_evaluation_set_at_the_recorded_times(fem):
    unseen = darcy_instances(MPI.COMM_SELF, size=6, n=1, seed=2)
    model = tiny_fno(6)
    start = unseen.errors(unseen.network_fields(model))[0]
    history = physics_finetune(
        model,
        fem,
        seconds=0.5,
        optimizer="adam",
        lr=1e-3,
        evaluation={"unseen": unseen},
        record_at=[0.2],
    )
    # the start, the first step past 0.2 s, the last and the kept (lowest-loss) network
    assert len(history) == 4 and history[-1]["kept"]
    assert history[1]["seconds"] >= 0.2 and history[2]["seconds"] >= 0.5
    assert history[0]["unseen_rel_l2"] == pytest.approx(start, rel=1e-12)
    assert history[-1]["unseen_rel_l2"] == pytest.approx(
        unseen.errors(unseen.network_fields(model))[0], rel=1e-12
    )
    unseen.destroy()


@pytest.mark.parametrize("keep_best", [True, False])
def test_physics_finetune_keeps_the_lowest_loss_iterate_when_asked(fem, keep_best):
    """An Adam rate far too large makes the loss jump about; the kept network is the one of lowest
    loss among the evaluated iterates, and without keep_best the last one is returned."""
    model = copy.deepcopy(tiny_fno(6))
    history = physics_finetune(
        model, fem, seconds=0.5, optimizer="adam", lr=0.3, keep_best=keep_best
    )
    grid = model(fem.model_inputs(model)).reshape(len(fem), -1).detach().double().numpy()
    loss, _ = fem_loss_and_grid_gradient(fem, grid, "energy")
    if keep_best:
        assert history[-1]["kept"]
        assert loss == pytest.approx(history[-1]["loss"], rel=1e-12)
        assert loss <= min(entry["loss"] for entry in history[:-1])
        assert history[-1]["rel_l2"] == pytest.approx(
            float(np.mean(fem.errors(fem.network_fields(model)))), rel=1e-12
        )
    else:
        assert "kept" not in history[-1]
        assert loss > min(entry["loss"] for entry in history)  # the large rate did overshoot


@pytest.mark.parametrize("problem", ["cdr", "nonlinear_diffusion"])
def test_dual_loss_vanishes_only_at_the_fem_solution(problem):
    fem = problem_instances(problem, MPI.COMM_SELF, size=6, n=2, seed=1)
    grid = np.stack([fem.pde.field_on_grid(u).ravel() for u in fem.references])
    best, gradient = fem_loss_and_grid_gradient(fem, grid, "dual")
    worse, _ = fem_loss_and_grid_gradient(fem, grid * 1.01, "dual")
    fem.destroy()
    assert best < 1e-20 and np.abs(gradient).max() < 1e-10
    assert worse > 1e-12


def test_physics_finetune_in_the_dual_norm_lowers_the_loss(cdr):
    history = physics_finetune(
        tiny_fno(6), cdr, seconds=1.0, optimizer="adam", lr=1e-3, norm="dual"
    )
    assert len(history) > 1 and history[-1]["loss"] < history[0]["loss"]


def test_the_kept_networks_error_is_that_of_the_lowest_loss_iterate_at_every_record(fem):
    """Adam's step k evaluates the loss of iterate k - 1 (recorded by entry k - 1): at each entry
    the kept network is the iterate of lowest loss among those evaluated so far."""
    history = physics_finetune(
        copy.deepcopy(tiny_fno(6)), fem, seconds=0.5, optimizer="adam", lr=0.3, track_kept=True
    )
    steps = history[:-1]  # without the final kept entry
    assert steps[0]["kept_rel_l2"] == steps[0]["rel_l2"]
    for n in range(1, len(steps)):
        k = min(range(1, n + 1), key=lambda i: steps[i]["loss"])
        assert steps[n]["kept_rel_l2"] == pytest.approx(steps[k - 1]["rel_l2"], rel=1e-12)
    assert history[-1]["kept_rel_l2"] == pytest.approx(history[-1]["rel_l2"], rel=1e-12)
    with pytest.raises(ValueError, match="track_kept"):
        physics_finetune(tiny_fno(6), fem, seconds=0.1, keep_best=False, track_kept=True)
