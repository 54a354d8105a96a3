"""physics/operator.py: one network refined on K unlabeled instances, evaluated on unseen ones."""

import numpy as np
import pytest
from mpi4py import MPI

from pinn_lsr.lsr.refined import RefinedModel
from pinn_lsr.physics.operator import physics_loss, refine_operator, scan_ranks
from tests.physics.physics_cases import FieldModel, darcy_instances, dense, tiny_fno


@pytest.fixture(scope="module")
def unseen():
    """Two other 6 × 6 Darcy inputs (seed 1), with their FEM solutions."""
    instances = darcy_instances(MPI.COMM_SELF, size=6, n=2, seed=1)
    yield instances
    instances.destroy()


def test_energy_loss_differences_are_energy_norm_errors(fem):
    """E(u) − E(u*) = ½ ||u − u*||²_A: the loss chooses ranks as the error would, unlabeled."""
    rng = np.random.default_rng(0)
    fields = [ref + 0.1 * rng.standard_normal(ref.shape) for ref in fem.references]
    gap = physics_loss(fem, fields, "energy") - physics_loss(fem, fem.references, "energy")
    errors = [u - ref for u, ref in zip(fields, fem.references)]
    expected = sum(0.5 * e @ dense(s.A) @ e for e, s in zip(errors, fem.systems))
    np.testing.assert_allclose(gap, expected, rtol=1e-10)


@pytest.mark.parametrize("make_model", [lambda: FieldModel(36), lambda: tiny_fno(6)])
def test_refined_operator_lowers_the_training_energy_and_predicts_through_the_jacobian(
    fem, make_model
):
    model = make_model()
    before = fem.network_fields(model)
    result = refine_operator(model, fem, 12)
    report = result.report
    assert report.rank == report.chosen_rank == 12 and report.n_train == 2
    assert report.loss_after < report.loss_before
    assert report.residual_l2_after < report.residual_l2_before
    assert report.n_rows == 2 * 36 and not report.selection
    # the linearized predictor on the training inputs is the reduced problem's field (J(Vc)
    # against (JV)c: the tiny FNO's vmapped products round at 1e-7 relative, as in
    # tests/mpi/test_physics_refine_parallel.py; the FieldModel's are exact to round-off)
    trained = np.stack(result.training_fields())
    tol = 1e-12 if isinstance(model, FieldModel) else 1e-6
    np.testing.assert_allclose(
        np.stack(result.fields(fem)), trained, atol=tol * np.abs(trained).max()
    )
    assert physics_loss(fem, list(trained), "energy") == pytest.approx(report.loss_after, rel=1e-12)
    # ... and the network is untouched (θ0 is the expansion point)
    np.testing.assert_array_equal(np.stack(fem.network_fields(model)), np.stack(before))


def test_unseen_inputs_get_the_network_plus_its_jacobian_along_delta(fem, unseen):
    model = FieldModel(36)  # float64 to round-off (the tiny FNO's 1e-7 would swamp the difference)
    result = refine_operator(model, fem, 8)
    linear, network = np.stack(result.fields(unseen)), np.stack(unseen.network_fields(model))
    assert np.linalg.norm(linear - network) > 0  # δ reaches inputs it was not fitted on
    # J(a) δ on the unseen inputs, by a central difference of the committed network along δ
    refined = result.predictor(unseen)
    h = 1e-5

    def moved(step):
        return np.stack(
            unseen.network_fields(
                RefinedModel(model, refined.index, step * refined.delta).committed()
            )
        )

    derivative = (moved(h) - moved(-h)) / (2 * h)
    np.testing.assert_allclose(linear - network, derivative, atol=1e-6 * np.abs(derivative).max())
    committed = np.stack(result.committed_fields(unseen))
    np.testing.assert_array_equal(committed, moved(1.0))
    assert np.isfinite(unseen.errors(list(linear))).all()


def test_a_rank_chosen_on_the_training_instances_is_the_largest(fem, unseen):
    """On the instances it was fitted on, the Galerkin energy only falls as the (nested) subspace
    grows; on unseen ones the held-out energy picks among the candidates."""
    model = tiny_fno(6)
    result = refine_operator(model, fem, 16, select=fem)
    assert result.report.chosen_rank == 16 and list(result.report.selection) == [8, 16]
    assert result.report.selection[16] < result.report.selection[8]
    held_out = refine_operator(model, fem, 16, select=unseen, ranks=[2, 4, 16])
    selection = held_out.report.selection
    assert list(selection) == [2, 4, 16] and held_out.report.n_select == 2
    assert held_out.report.chosen_rank == min(selection, key=selection.get)
    assert "selection" in held_out.report.seconds


def test_scan_ranks_doubles_up_to_the_rank():
    assert scan_ranks(100) == [8, 16, 32, 64, 100] and scan_ranks(64) == [8, 16, 32, 64]
    assert scan_ranks(5) == [5]


@pytest.mark.parametrize(
    "rank, kwargs, message",
    [
        (0, {}, "rank must be an integer >= 1, got 0"),
        (73, {}, "rank must be between 1 and min(parameters, FEM rows)"),
        (8, {"ranks": [4, 9]}, "ranks must lie in [1, rank=8], got [4, 9]"),
        (8, {"chunk_samples": 0}, "chunk_samples must be at least 1, got 0"),
    ],
)
def test_bad_arguments_are_value_errors(fem, rank, kwargs, message):
    with pytest.raises(ValueError) as error:
        refine_operator(tiny_fno(6), fem, rank, **kwargs)
    assert message in str(error.value)
