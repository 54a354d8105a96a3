import math

import numpy as np
import pytest
import torch
from mpi4py import MPI
from torch import nn

from pinn_lsr import refine
from pinn_lsr.lsr.refined import RefinedModel
from pinn_lsr.models import build_model
from pinn_lsr.models.parameters import set_precision

COMM = MPI.COMM_SELF


def fit2d_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1
    return x, (torch.sin(math.pi * x[:, 0]) * torch.sin(math.pi * x[:, 1]))[:, None]


def small_mlp(seed=0):
    torch.manual_seed(seed)
    return set_precision(
        build_model("mlp", in_features=2, out_features=1, width=16, depth=2, activation="tanh"),
        torch.float64,
    )


def test_full_rank_lsr_of_a_linear_model_is_the_least_squares_solution():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 10, generator=g, dtype=torch.float64)
    y = X @ torch.randn(10, 1, generator=g, dtype=torch.float64) + 0.1 * torch.randn(
        60, 1, generator=g, dtype=torch.float64
    )
    model = nn.Linear(10, 1).double()
    refined, report = refine(model, X, y, rank=11, relative=False, comm=COMM)
    A = torch.cat([X, torch.ones(60, 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(A, y).solution
    committed = refined.committed()
    torch.testing.assert_close(committed.weight.detach().T, solution[:10], rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(refined.predict(X), A @ solution, rtol=1e-8, atol=1e-10)
    assert report.rank == 11 and report.effective_rank == 11


@pytest.mark.parametrize("solver", ["streaming", "dense", "lsqr"])
def test_lsr_reduces_the_error_of_a_trained_mlp(solver):
    model = small_mlp()
    x, y = fit2d_data(400, 1)
    xv, yv = fit2d_data(100, 2)
    before = (model(xv) - yv).pow(2).mean()
    refined, report = refine(
        model,
        x,
        y,
        rank=120,
        validation=(xv, yv),
        relative=False,
        solver=solver,
        chunk_samples=64,
        comm=COMM,
    )
    after = (refined.predict(xv) - yv).pow(2).mean()
    assert after < 1e-3 * before
    assert report.linearized_objective < report.initial_objective
    assert [e["rank"] for e in report.scan][-1] == 120 and report.rank in [
        e["rank"] for e in report.scan
    ]
    assert {"sketch", "projection", "svd", "gv_pass_and_qr", "solve_and_scan"} <= set(
        report.seconds
    )


def test_linear_predictor_matches_committed_weights_to_first_order():
    model = small_mlp()
    x, y = fit2d_data(200, 3)
    refined, _ = refine(model, x, y, rank=30, relative=False, comm=COMM)
    gaps = []
    direction = refined.delta / refined.delta.norm()
    for eps in (1e-2, 5e-3):
        scaled = RefinedModel(model, refined.index, eps * direction)
        gaps.append((scaled.predict(x) - scaled.committed()(x)).abs().max().item())
    assert gaps[0] / gaps[1] == pytest.approx(4.0, rel=0.1)  # second-order remainder


def test_save_and_load(tmp_path):
    model = small_mlp()
    x, y = fit2d_data(100, 4)
    refined, _ = refine(model, x, y, rank=10, comm=COMM)
    refined.save(tmp_path / "lsr.pt")
    loaded = RefinedModel.load(tmp_path / "lsr.pt", small_mlp(seed=5))
    torch.testing.assert_close(loaded.predict(x), refined.predict(x))


def test_random_subspace_and_parameter_subsets_run():
    model = small_mlp()
    x, y = fit2d_data(200, 5)
    _, randomized = refine(model, x, y, rank=20, relative=False, comm=COMM)
    _, plain = refine(model, x, y, rank=20, relative=False, subspace="random", comm=COMM)
    assert randomized.linearized_objective < plain.linearized_objective
    _, last = refine(model, x, y, rank=10, parameters=["net.4"], relative=False, comm=COMM)
    assert last.n_params == 17
    _, some = refine(model, x, y, rank=10, fraction=0.5, relative=False, comm=COMM)
    assert some.n_params < 400


def test_krylov_lsr_is_lsqr_after_rank_iterations():
    """In exact arithmetic LSR in K_r(GᵀG, Gᵀf) is the r-th LSQR iterate for min ||G δ + f||
    (compared at ranks where scipy's LSQR, which does not reorthogonalise, is still exact:
    this MLP's Jacobian has condition number 1e17)."""
    from scipy.sparse.linalg import lsqr

    from pinn_lsr.lsr.jacobian import ModelJacobian

    model = small_mlp()
    x, y = fit2d_data(200, 8)
    jacobian = ModelJacobian(model, x)
    G, f = jacobian.full().numpy(), (jacobian.outputs() - y[:, 0]).numpy()
    for rank in (1, 2, 4):
        refined, report = refine(
            model, x, y, rank=rank, relative=False, subspace="krylov", comm=COMM
        )
        expected = lsqr(G, -f, atol=0, btol=0, conlim=0, iter_lim=rank)[0]
        np.testing.assert_allclose(
            refined.delta.numpy(), expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max()
        )
        assert report.linearized_objective == pytest.approx(
            np.sum((G @ expected + f) ** 2) / 200, rel=1e-8
        )
        assert (
            report.rank == rank
            and "krylov" in report.seconds
            and len(report.singular_values) == rank
        )


def test_krylov_lowers_the_training_residual_more_than_the_randomized_subspace_at_low_rank():
    model = small_mlp()
    x, y = fit2d_data(300, 9)
    _, randomized = refine(model, x, y, rank=10, relative=False, comm=COMM)
    _, krylov = refine(model, x, y, rank=10, relative=False, subspace="krylov", comm=COMM)
    assert krylov.linearized_objective < randomized.linearized_objective


def test_krylov_stops_early_once_held_out_error_has_turned_up():
    """Noisy linear least squares (semi-convergence): later Krylov directions fit the noise."""
    g = torch.Generator().manual_seed(0)
    scale = torch.logspace(0, -3, 60, dtype=torch.float64)

    def data(n):
        X = torch.randn(n, 60, generator=g, dtype=torch.float64) * scale
        return X, X.sum(dim=1, keepdim=True) + 0.3 * torch.randn(
            n, 1, generator=g, dtype=torch.float64
        )

    (x, y), validation = data(80), data(400)
    model = nn.Linear(60, 1).double()
    _, stopped = refine(
        model, x, y, rank=61, validation=validation, relative=False, subspace="krylov", comm=COMM
    )
    _, full = refine(
        model,
        x,
        y,
        rank=61,
        validation=validation,
        relative=False,
        subspace="krylov",
        krylov_patience=None,
        comm=COMM,
    )
    assert full.max_rank == 61 and stopped.max_rank < 61
    best = lambda report: min(e["validation_objective"] for e in report.scan)  # noqa: E731
    assert best(stopped) <= 1.05 * best(full)
    assert stopped.max_rank > stopped.rank  # it looked past the rank it kept
    with pytest.raises(ValueError, match="patience"):
        refine(
            model,
            x,
            y,
            rank=5,
            validation=validation,
            subspace="krylov",
            krylov_patience=0.5,
            comm=COMM,
        )


def test_bad_input_is_rejected_before_heavy_work():
    model = small_mlp()
    x, y = fit2d_data(50, 6)
    with pytest.raises(ValueError, match="rank must be between 1 and"):
        refine(model, x, y, rank=400, comm=COMM)
    with pytest.raises(ValueError, match=r"min\(337, 19\)"):
        refine(model, x[:20], y[:20], rank=30, comm=COMM)
    with pytest.raises(ValueError, match="differ in length: 50 vs 49"):
        refine(model, x, y[:-1], rank=5, comm=COMM)
    bad = y.clone()
    bad[0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        refine(model, x, bad, rank=5, comm=COMM)
    with pytest.raises(ValueError, match="no trainable parameters"):
        refine(nn.Linear(2, 1).double().requires_grad_(False), x, y, rank=1, comm=COMM)
    nan_model = small_mlp()
    with torch.no_grad():
        nan_model.net[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="residual at θ0"):
        refine(nan_model, x, y, rank=5, comm=COMM)
    with pytest.raises(ValueError, match="non-zero norm"):
        refine(model, x, torch.zeros_like(y), rank=5, comm=COMM)
    with pytest.raises(ValueError, match="the training samples leave rank 0 of 1 without any"):
        refine(model, x[:0], y[:0], rank=5, comm=COMM)


def test_bad_validation_data_is_rejected_before_heavy_work():
    model = small_mlp()
    x, y = fit2d_data(50, 7)
    with pytest.raises(ValueError, match="differ in length: 10 vs 9"):
        refine(model, x, y, rank=5, validation=(x[:10], y[:9]), comm=COMM)
    with pytest.raises(ValueError, match="the validation samples leave rank 0 of 1 without any"):
        refine(model, x, y, rank=5, validation=(x[:0], y[:0]), comm=COMM)
    bad = y[:10].clone()
    bad[2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        refine(model, x, y, rank=5, evaluate={"test": (x[:10], bad)}, comm=COMM)


def test_dtype_refines_a_cast_copy_of_the_model():
    model32 = set_precision(small_mlp(), torch.float32)
    x, y = fit2d_data(200, 1)
    options = {"rank": 40, "relative": False, "comm": COMM}
    refined, report = refine(model32, x.float(), y.float(), dtype="float64", **options)
    same_weights = set_precision(set_precision(small_mlp(), torch.float32), torch.float64)
    expected, expected_report = refine(
        same_weights, x.float().double(), y.float().double(), **options
    )
    assert next(model32.parameters()).dtype == torch.float32  # the caller's model is untouched
    assert refined.delta.dtype == torch.float64 and refined.predict(x).dtype == torch.float64
    # the float32 model's weights, cast: the same refinement as a float64 model with those weights
    assert report.linearized_objective == pytest.approx(
        expected_report.linearized_objective, rel=1e-8
    )
    torch.testing.assert_close(refined.delta, expected.delta, rtol=1e-6, atol=1e-9)


NO_CUDA = not torch.cuda.is_available()


def test_device_cpu_runs_the_device_code_path_and_returns_cpu_results():
    model = small_mlp()
    x, y = fit2d_data(200, 3)
    refined, report = refine(model, x, y, rank=20, relative=False, device="cpu", comm=COMM)
    default, _ = refine(model, x, y, rank=20, relative=False, comm=COMM)
    assert torch.equal(refined.delta, default.delta) and refined.delta.device.type == "cpu"
    assert report.peak_device_memory_mb is None


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA device")
def test_cuda_without_a_gpu_is_refused_before_any_work():
    x, y = fit2d_data(50, 3)
    with pytest.raises(ValueError, match="device=cuda: torch sees no CUDA device"):
        refine(small_mlp(), x, y, rank=5, device="cuda", comm=COMM)


@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize(
    "options",
    [
        {"reduction": "gram"},
        {"reduction": "qr", "power_iterations": 1},
        {"subspace": "krylov"},
        {"engine": "plain"},
        {"solver": "dense"},
    ],
)
def test_cuda_refinement_agrees_with_the_cpu_one(options):
    model = small_mlp()  # float64, as the data
    x, y = fit2d_data(300, 4)
    xv, yv = fit2d_data(100, 5)
    results = {
        device: refine(
            model, x, y, rank=40, validation=(xv, yv), device=device, comm=COMM, **options
        )
        for device in ("cpu", "cuda")
    }
    (cpu, cpu_report), (cuda, cuda_report) = results["cpu"], results["cuda"]
    assert cuda.delta.device.type == "cpu" and cuda_report.peak_device_memory_mb > 0
    assert cuda_report.rank == cpu_report.rank
    scale = float(cpu.delta.abs().max())
    torch.testing.assert_close(cuda.delta, cpu.delta, rtol=0, atol=1e-8 * scale)
    torch.testing.assert_close(cuda.predict(xv), cpu.predict(xv), rtol=1e-8, atol=1e-10)
