"""Rank planning (pinn_lsr.lsr.planning): the data checks, the row subset the subspace is found
on, and the chunk sizes of the Jacobian products."""

import pytest
import torch
from mpi4py import MPI

from pinn_lsr.lsr.planning import check_rank, planned_jacobian, sketch_samples
from pinn_lsr.lsr.settings import LSRSettings

COMM = MPI.COMM_SELF


def test_check_rank_allows_one_to_min_of_parameters_and_rows_minus_one():
    check_rank(None, 10, 5)  # the budget chooses
    check_rank(4, 10, 5)
    check_rank(10, 10, 50)
    for rank, n_params, n_rows in ((5, 10, 5), (11, 10, 50), (0, 10, 50)):
        with pytest.raises(ValueError, match=r"rank must be between 1 and min\(parameters"):
            check_rank(rank, n_params, n_rows)


def test_the_sketch_subset_is_seeded_and_checked_against_rank_plus_oversampling():
    assert sketch_samples(100, 3, LSRSettings(rank=5), COMM) == (None, None)
    settings = LSRSettings(rank=5, row_fraction=0.3, seed=2)
    mask, n_rows = sketch_samples(100, 3, settings, COMM)
    again, _ = sketch_samples(100, 3, settings, COMM)
    assert mask.dtype == torch.bool and len(mask) == 100 and torch.equal(mask, again)
    assert n_rows == 3 * int(mask.sum()) and 15 < int(mask.sum()) < 45
    other, _ = sketch_samples(100, 3, settings.replace(seed=3), COMM)
    assert not torch.equal(mask, other)
    with pytest.raises(ValueError, match="fewer than rank \\+ oversampling = 110"):
        sketch_samples(100, 3, settings.replace(rank=100), COMM)


def test_planned_jacobian_takes_the_chunks_of_the_settings_or_measures_them():
    model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x = torch.rand(40, 2)
    options = dict(index=None, forward=None, comm=COMM)
    fixed = planned_jacobian(
        model, x, settings=LSRSettings(rank=3, chunk_samples=7, chunk_tangents=5), **options
    )
    assert fixed.chunks["chunk_samples"] == 7 and fixed.chunks["chunk_tangents"] == 5
    auto = planned_jacobian(model, x, settings=LSRSettings(rank=3, chunk_samples="auto"), **options)
    assert 1 <= auto.chunks["chunk_samples"] <= 40 and 1 <= auto.chunks["vjp_chunk_samples"] <= 40
