import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pinn_lsr.run.cli import main
from pinn_lsr.train.checkpoint import load_model

ROOT = Path(__file__).parents[2]
# no physics stage and (unless a test picks a method) no LSR: the stages under test only
SMALL = [
    "problem.resolution=12",
    "data.n_train=4",
    "data.n_test=2",
    "output.n_show=2",
    "output.progress=false",
    "physics.instances=0",
    "train.epochs=2",
    "train.batch_size=2",
    "model.width=4",
    "model.modes=3",
]


def run(tmp_path, *overrides):
    method = [] if any(o.startswith("method=") for o in overrides) else ["method=none"]
    return main(
        [
            f"hydra.run.dir={tmp_path / 'run'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            *SMALL,
            *method,
            *overrides,
        ]
    )


@pytest.mark.parametrize("problem", ["darcy", "poisson"])
def test_run_writes_metrics_fields_and_png(tmp_path, problem):
    assert run(tmp_path, f"problem={problem}") == 0
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["problem"] == problem and metrics["n_dofs"] == 144 and metrics["n_samples"] == 6
    assert set(metrics["seconds"]) == {"mesh", "data", "train", "fem_solve", "output"}
    assert metrics["fem"]["distributed_vs_dataset_max_abs_diff"] < 1e-12
    train = metrics["train"]
    assert train["model"] == "fno" and train["epochs"] == 2 and len(train["history"]) == 2
    assert 0 < train["test_rel_l2"] < 10 and train["seconds"] > 0 and train["forward_samples"] > 0
    for name in ("samples.png", "loss.png", "checkpoint.pt"):
        assert (out / name).stat().st_size > 0
    with h5py.File(out / "fields" / "samples.h5") as f:
        assert "Mesh" in f and "Function" in f and {"fno_prediction", "error"} <= set(f["Function"])
    assert "<Xdmf" in (out / "fields" / "samples.xdmf").read_text()
    assert (out / ".hydra" / "config.yaml").exists()


@pytest.mark.parametrize("model", ["deeponet", "mlp"])
def test_other_models_train_from_the_cli(tmp_path, model):
    assert (
        main(
            [
                f"hydra.run.dir={tmp_path / 'run'}",
                f"data.cache_dir={tmp_path / 'cache'}",
                *SMALL[:6],
                "train.epochs=2",
                f"model={model}",
                "model.width=8",
                "method=none",
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train"]["model"] == model and np.isfinite(metrics["train"]["test_rel_l2"])


def test_fem_only_run_without_model(tmp_path):
    assert (
        main(
            [
                f"hydra.run.dir={tmp_path / 'run'}",
                f"data.cache_dir={tmp_path / 'cache'}",
                *SMALL[:6],
                "~model",
                "method=none",
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "train" not in metrics and not (tmp_path / "run" / "checkpoint.pt").exists()


def test_resume_continues_the_run(tmp_path):
    assert run(tmp_path, "train.checkpoint_every=1") == 0
    assert run(tmp_path, "train.resume=true", "train.epochs=3") == 0
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["train"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    model = load_model(tmp_path / "run" / "checkpoint.pt")
    assert model(torch.ones(1, 12, 12) * 3).shape == (1, 144)


def test_second_run_reuses_the_cache(tmp_path):
    assert run(tmp_path) == 0
    assert run(tmp_path) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["data"]["cache"] == "hit"


def test_mesh_file_run(tmp_path, lshape_msh):
    assert run(tmp_path, f"mesh.file={lshape_msh}") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["mesh"] == str(lshape_msh) and metrics["n_dofs"] > 100


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "problem=heat",
            "Available options in 'problem':\n\tburgers\n\tcdr\n\tdarcy\n\telasticity\n\tfit2d\n"
            "\tnonlinear_diffusion\n\tpoisson\n\treaction_diffusion",
        ),
        (
            "data.n_trains=3",
            "unknown configuration key 'data.n_trains'. Valid keys here: data.n_train, data.n_test",
        ),
        ("problem.resolution=1", "problem.resolution must be an integer >= 2, got 1"),
        ("fem.input_space=edge", "fem.input_space must be one of"),
        (
            "model=unet",
            "Available options in 'model':\n\tdeeponet\n\tdeeponet_burgers\n\tfno\n\tmlp",
        ),
        ("train.optimizer=rmsprop", "train.optimizer must be one of ('adam', 'sgd', 'lbfgs')"),
        ("model.modes=40", "modes=40 exceed"),
        ("method=gn", "Available options in 'method':\n\tgnvpro\n\tlsr\n\tnone"),
        ("checkpoint=nowhere.pt", "checkpoint nowhere.pt does not exist"),
        ("mesh.file=nowhere.msh", "mesh file nowhere.msh does not exist"),
        ("mesh.dirichlet_tags=[2]", "mesh unit_square(11) has no facet tags"),
        (
            "mesh.dirichlet_tags=[a]",
            "mesh.dirichlet_tags must be null or a non-empty list of integer facet tags",
        ),
        ("--verbose", "unknown option"),
        (
            "fem.petsc_options.ksp_type=nosuch",
            "fem.petsc_options.ksp_type=nosuch is refused by PETSc",
        ),
        ("device=gpu", "device must be one of cpu | cuda | cuda:N, got 'gpu'"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, override, message):
    assert run(tmp_path, override) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_help_lists_problems(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert (
        "burgers, cdr, darcy, elasticity, fit2d, nonlinear_diffusion, poisson, reaction_diffusion"
        in out
        and "n_train" in out
    )


def test_help_prints_the_commented_files_of_the_chosen_groups(capsys):
    assert main(["--help", "model=deeponet", "method=gnvpro"]) == 0
    out = capsys.readouterr().out
    for path in ("config.yaml", "problem/darcy.yaml", "model/deeponet.yaml", "method/gnvpro.yaml"):
        assert f"==> pinn_lsr/conf/{path} <==" in out
    assert "fno.yaml" not in out and "# training samples" in out  # the comments are the key docs


def test_console_script_and_solve_py_agree_on_errors(tmp_path):
    for command in (
        [sys.executable, str(ROOT / "solve.py")],
        [str(Path(sys.executable).parent / "pinn-lsr")],
    ):
        result = subprocess.run(
            [*command, "problem=heat"], capture_output=True, text=True, cwd=tmp_path
        )
        assert result.returncode == 2 and "Available options in 'problem'" in result.stderr
        assert list(tmp_path.iterdir()) == []


def test_lsr_after_training_and_from_checkpoint(tmp_path):
    lsr = ["method=lsr", "method.rank=8", "data.n_train=10", "data.n_test=3", "output.n_show=1"]
    assert run(tmp_path, *lsr) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    result = metrics["lsr"]
    assert 1 <= result["rank"] <= 8 and result["max_rank"] == 8
    assert result["n_rows"] == 8 * 144  # 80 % of 10 samples, 144 grid values each
    for key in (
        "train_rel_l2",
        "validation_rel_l2",
        "test_rel_l2",
        "committed_test_rel_l2",
        "seconds",
    ):
        assert np.isfinite(result[key]), key
    assert result["objective"]["linearized"] <= result["objective"]["initial"]
    assert [e["rank"] for e in result["scan"]][-1] == 8 and "test_rel_l2" in result["scan"][0]
    assert (tmp_path / "run" / "lsr_rank.png").stat().st_size > 0
    with h5py.File(tmp_path / "run" / "fields" / "samples.h5") as f:
        assert "LSR_refined" in f["Function"]

    checkpoint = tmp_path / "run" / "checkpoint.pt"
    again = tmp_path / "again"
    assert (
        main(
            [
                f"hydra.run.dir={again}",
                f"data.cache_dir={tmp_path / 'cache'}",
                *SMALL[:6],
                *lsr,
                f"checkpoint={checkpoint}",
            ]
        )
        == 0
    )
    reloaded = json.loads((again / "metrics.json").read_text())
    assert reloaded["train"]["checkpoint"] == str(checkpoint) and "epochs" not in reloaded["train"]
    assert reloaded["train"]["test_rel_l2"] == pytest.approx(
        metrics["train"]["test_rel_l2"], rel=1e-5
    )
    assert reloaded["lsr"]["test_rel_l2"] == pytest.approx(result["test_rel_l2"], rel=1e-4)


def test_function_fitting_problem_with_lsr(tmp_path):
    args = [
        f"hydra.run.dir={tmp_path / 'run'}",
        "problem=fit2d",
        "problem.resolution=20",
        "model=mlp",
        "model.width=16",
        "model.depth=2",
        "model.activation=tanh",
        "data.n_train=500",
        "train.loss=mse",
        "train.epochs=2",
        "train.batch_size=32",
        "method=lsr",
        "method.rank=60",
        "method.relative=false",
        "output.progress=false",
    ]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["problem"] == "fit2d" and metrics["n_test"] == 400
    assert metrics["lsr"]["test_mse"] < 1e-2 * metrics["train"]["test_mse"]
    assert (tmp_path / "run" / "samples.png").exists() and (
        tmp_path / "run" / "lsr_rank.png"
    ).exists()


def test_function_fitting_needs_an_mlp(tmp_path, capsys):
    assert main([f"hydra.run.dir={tmp_path / 'run'}", "problem=fit2d"]) == 2
    assert "use model=mlp, not fno" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["deeponet", "mlp"])
def test_lsr_refines_other_operator_models(tmp_path, model):
    args = [
        f"hydra.run.dir={tmp_path / 'run'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        *SMALL[:6],
        "data.n_train=10",
        f"model={model}",
        "model.width=8",
        "train.epochs=2",
        "method=lsr",
        "method.rank=6",
    ]
    assert main(args) == 0
    lsr = json.loads((tmp_path / "run" / "metrics.json").read_text())["lsr"]
    assert lsr["objective"]["linearized"] <= lsr["objective"]["initial"] and np.isfinite(
        lsr["test_rel_l2"]
    )


def test_physics_stage_refines_test_instances_against_their_fem_residual(tmp_path):
    physics = [
        "physics.instances=1",
        "physics.rank=8",
        "physics.ilsr.iterations=2",
        "physics.ilsr.align_iterations=20",
        "physics.baseline.lr=1e-3",
    ]
    assert run(tmp_path, "train.epochs=5", *physics) == 0
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    physics = metrics["physics"]
    assert (
        physics["instances"] == 1 and physics["n_dofs"] == 144 and "physics" in metrics["seconds"]
    )
    one_shot = physics["physics_lsr"]
    assert one_shot["norm"] == "energy" and one_shot["per_instance"][0]["ksp_reason"].startswith(
        "CONVERGED"
    )
    assert one_shot["fem_rel_l2"] < physics["stages"]["trained network"]
    assert [h["iteration"] for h in physics["ilsr"]["history"]] == [1, 2, 3]
    assert physics["ilsr"]["fem_rel_l2"] < physics["stages"]["trained network"]
    assert physics["baseline"]["optimizer"] == "adam" and np.isfinite(
        physics["baseline"]["fem_rel_l2"]
    )
    for name in ("physics.png", "physics_errors.png", "ilsr.png"):
        assert (out / name).stat().st_size > 0
    with h5py.File(out / "physics_fields" / "physics.h5") as f:
        assert {"reference", "network", "physics_LSR", "ILSR", "error"} <= set(f["Function"])


def test_operator_mode_refines_on_unlabeled_training_inputs_and_scores_unseen_ones(tmp_path):
    operator = [
        "physics.mode=operator",
        "physics.instances=2",
        "physics.operator.inputs=3",
        "physics.operator.select=1",
        "physics.rank=16",
        "physics.baseline.lr=1e-3",
    ]
    assert run(tmp_path, "train.epochs=5", *operator) == 0
    out = tmp_path / "run"
    physics = json.loads((out / "metrics.json").read_text())["physics"]
    assert physics["mode"] == "operator" and physics["instances"] == 2
    section = physics["operator"]
    assert section["inputs"] == 3 and section["select"] == 1 and section["rank"] == 16
    assert set(section["selection"]) == {"8", "16"} and section["chosen_rank"] in (8, 16)
    assert section["loss_after"] < section["loss_before"]  # on the 3 training inputs
    assert section["baseline"]["optimizer"] == "adam" and section["baseline"]["steps"] >= 1
    # the closing table: trained / operator LSR / gradient at equal time, on the unseen inputs
    assert set(physics["stages"]) == {
        "trained network",
        "operator LSR (linear predictor)",
        "operator LSR (committed weights)",
        "gradient (adam, same time)",
    }
    assert all(np.isfinite(v) for v in physics["stages"].values())
    for name in ("physics.png", "physics_errors.png"):
        assert (out / name).stat().st_size > 0


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["physics.norm=h1"], "physics.norm must be one of"),
        (["physics.rank=0"], "physics.rank must be an integer >= 1"),
        (["physics.baseline.optimizer=sgd"], "physics.baseline.optimizer"),
        (
            ["physics.mode=joint"],
            "physics.mode must be one of ('instance', 'operator'), got 'joint'",
        ),
        (
            ["physics.mode=operator", "physics.operator.inputs=0"],
            "physics.operator.inputs must be an integer >= 1, got 0",
        ),
        (
            ["physics.mode=operator", "physics.operator.inputs=3", "physics.operator.select=2"],
            "physics.operator.inputs + physics.operator.select = 3 + 2 must be at most "
            "data.n_train=4",
        ),
    ],
)
def test_bad_physics_settings_are_usage_errors(tmp_path, capsys, overrides, message):
    assert run(tmp_path, *overrides) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_nonlinear_problem_runs_the_whole_pipeline_with_gauss_newton_physics_lsr(tmp_path):
    physics = [
        "physics.instances=1",
        "physics.rank=8",
        "physics.ilsr.iterations=2",
        "physics.ilsr.align_iterations=20",
    ]
    assert run(tmp_path, "problem=nonlinear_diffusion", "train.epochs=5", *physics) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (
        metrics["fem"]["snes_type"] == "newtonls"
        and metrics["fem"]["distributed_vs_dataset_max_abs_diff"] < 1e-10
    )
    physics = metrics["physics"]
    assert physics["physics_lsr"]["norm"] == "dual"
    assert physics["physics_lsr"]["fem_rel_l2"] < physics["stages"]["trained network"]
    history = physics["ilsr"]["history"]  # the dual norm, not the l2 norm of F, is what decreases
    assert history[0]["refined_rel_l2"] < history[0]["network_rel_l2"]
    assert np.isfinite(physics["baseline"]["fem_rel_l2"])


def test_energy_norm_on_a_nonlinear_problem_is_a_usage_error(tmp_path, capsys):
    assert run(tmp_path, "problem=nonlinear_diffusion", "physics.norm=energy") == 2
    assert "use dual or auto" in capsys.readouterr().err


@pytest.mark.parametrize("problem,norm", [("cdr", "dual"), ("reaction_diffusion", "energy")])
def test_new_linear_problems_run_training_data_lsr_and_physics_lsr(tmp_path, problem, norm):
    physics = [
        "physics.instances=1",
        "physics.rank=8",
        "physics.ilsr.iterations=1",
        "physics.ilsr.align_iterations=20",
    ]
    assert (
        run(
            tmp_path,
            f"problem={problem}",
            "train.epochs=5",
            "data.n_train=10",
            "data.n_test=3",
            "method=lsr",
            "method.rank=6",
            *physics,
        )
        == 0
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["problem"] == problem and metrics["n_dofs"] == 144
    assert metrics["fem"]["distributed_vs_dataset_max_abs_diff"] < 1e-12
    assert 0 < metrics["train"]["test_rel_l2"] < 10
    lsr = metrics["lsr"]
    assert 1 <= lsr["rank"] <= 6 and np.isfinite(lsr["test_rel_l2"])
    assert lsr["objective"]["linearized"] <= lsr["objective"]["initial"]
    physics = metrics["physics"]
    one_shot = physics["physics_lsr"]
    assert one_shot["norm"] == norm and one_shot["per_instance"][0]["ksp_reason"].startswith(
        "CONVERGED"
    )
    assert one_shot["fem_rel_l2"] < physics["stages"]["trained network"]
    assert physics["ilsr"]["fem_rel_l2"] < physics["stages"]["trained network"]
    assert np.isfinite(physics["baseline"]["fem_rel_l2"])


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["problem=cdr", "physics.norm=energy"], "the operator of cdr is not (use dual or auto)"),
        (["problem=reaction_diffusion", "physics.norm=dual"], "its operator is SPD: use energy"),
        (
            ["problem=cdr", "fem.petsc_options.ksp_type=cg"],
            "fem.petsc_options.ksp_type=cg needs a symmetric matrix",
        ),
        (
            ["problem=cdr", "fem.petsc_options.pc_type=cholesky"],
            "pc_type=cholesky needs a symmetric matrix",
        ),
    ],
)
def test_settings_the_new_problems_cannot_use_are_usage_errors(
    tmp_path, capsys, overrides, message
):
    assert run(tmp_path, *overrides) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cdr_runs_with_an_iterative_nonsymmetric_fem_solver(tmp_path):
    # own prefix: an earlier nonlinear run in this process leaves its -fem_* options in PETSc's
    # database
    gmres = [
        "fem.prefix=gmres_",
        "fem.petsc_options.ksp_type=gmres",
        "fem.petsc_options.pc_type=jacobi",
        "+fem.petsc_options.ksp_rtol=1e-12",
    ]
    assert run(tmp_path, "problem=cdr", *gmres) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["fem"]["ksp_type"] == "gmres"


def test_a_finished_runs_metrics_are_moved_aside_before_work_starts(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text('{"old": true}')
    import pinn_lsr.run.pipeline

    def interrupted(*args):
        raise KeyboardInterrupt  # a run killed mid-way

    monkeypatch.setattr(pinn_lsr.run.pipeline, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path)
    # no complete-looking result beside the new configuration
    assert not (run_dir / "metrics.json").exists()
    assert json.loads((run_dir / "metrics.previous.json").read_text()) == {"old": True}
    monkeypatch.undo()
    assert run(tmp_path) == 0
    assert json.loads((run_dir / "metrics.json").read_text())["n_train"] == 4


@pytest.mark.parametrize("verbose", [False, True])
def test_an_error_during_the_run_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys, verbose):
    import pinn_lsr.run.pipeline

    def failing(*args):
        raise RuntimeError("the solver diverged\nsecond line")

    monkeypatch.setattr(pinn_lsr.run.pipeline, "run", failing)
    assert run(tmp_path, *(["hydra.verbose=true"] if verbose else [])) == 1
    error = capsys.readouterr().err
    assert "run failed: RuntimeError: the solver diverged" in error
    assert ("Traceback" in error) == verbose and ("second line" in error) == verbose
    assert "run failed: RuntimeError" in (tmp_path / "run" / "solve.log").read_text()


FAIL_ON_RANK_1 = """
import sys
from mpi4py import MPI
import pinn_lsr.run.pipeline
from pinn_lsr.run.cli import main

def run(*args):
    if MPI.COMM_WORLD.rank == 1:
        raise RuntimeError("only rank 1 fails")
    MPI.COMM_WORLD.Barrier()  # rank 0 would wait here forever without the abort

pinn_lsr.run.pipeline.run = run
sys.exit(main(sys.argv[1:]))
"""


def test_an_error_on_one_rank_ends_every_rank_with_one_line_and_exit_1(tmp_path):
    mpirun = Path(sys.executable).parent / "mpirun"
    args = [
        f"hydra.run.dir={tmp_path / 'run'}",
        f"data.cache_dir={tmp_path}",
        *SMALL,
        "method=none",
    ]
    result = subprocess.run(
        [str(mpirun), "-n", "2", sys.executable, "-c", FAIL_ON_RANK_1, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,  # imports this checkout's pinn_lsr
    )
    line = "[rank 1] ERROR pinn_lsr: run failed: RuntimeError: only rank 1 fails"
    assert result.returncode == 1, result.stderr
    assert line in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_without_test_samples_the_skipped_physics_stage_is_logged_and_recorded(tmp_path, capsys):
    assert run(tmp_path, "data.n_test=0", "physics.instances=2") == 0
    text = (tmp_path / "run" / "metrics.json").read_text()
    metrics = json.loads(text)  # strict JSON: no NaN for the missing test errors
    assert metrics["skipped"] == {
        "lsr": "method=none",
        "physics": "data.n_test=0: no test instances to refine",
    }
    assert "physics" not in metrics and "NaN" not in text
    assert "stage physics skipped: data.n_test=0" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
@pytest.mark.parametrize("method", ["method=none", "method=lsr"])
def test_cuda_without_a_gpu_exits_2_before_any_work(tmp_path, capsys, method):
    assert run(tmp_path, "device=cuda", method) == 2
    assert "device=cuda: torch sees no CUDA device on this machine" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
