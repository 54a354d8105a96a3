"""run/config.py: every option validated once into frozen typed settings."""

import dataclasses
from pathlib import Path

import pytest
from omegaconf import open_dict

from pinn_lsr.lsr.settings import LSRSettings
from pinn_lsr.run.cli import compose_config
from pinn_lsr.run.config import (
    RunSettings,
    build_configured_model,
    load_settings,
    mesh_identity,
    resolve_norm,
)
from pinn_lsr.train.loop import TrainSettings

MESHES = Path(__file__).parents[2] / "meshes"


def settings(*overrides) -> RunSettings:
    return load_settings(compose_config(list(overrides)))


def test_defaults_become_typed_frozen_settings():
    run = settings()
    assert run.problem.name == "darcy" and run.resolution == 32 and run.seed == 0
    assert isinstance(run.train.loop, TrainSettings) and run.train.loop.seed == run.seed
    assert isinstance(run.lsr, LSRSettings) and run.lsr.rank == 40 and run.gnvpro is None
    assert run.physics.ilsr.norm == "energy"  # auto, resolved for the symmetric Darcy operator
    assert run.mesh.dirichlet_tags is None and run.has_model
    assert run.device == "cpu" and run.lsr.device == "cpu"  # the top-level key reaches LSR
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.seed = 1


def test_every_section_is_read_once():
    run = settings(
        "problem=cdr",
        "seed=3",
        "mesh.dirichlet_tags=5",
        "train.lr=0.01",
        "method=none",
        "physics.rank=8",
        "~model",
    )
    assert run.problem.name == "cdr" and run.seed == 3 and run.mesh.dirichlet_tags == (5,)
    assert run.train.loop.lr == 0.01 and run.method == "none" and run.lsr is None
    assert run.physics.ilsr.rank == 8 and run.physics.ilsr.norm == "dual"
    assert run.model is None and not run.has_model


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["problem.resolution=1"], "problem.resolution must be an integer >= 2, got 1"),
        (["data.n_train=true"], "data.n_train must be an integer >= 1, got True"),
        (["train.lr=-1"], "train.lr must be a finite number > 0, got -1"),
        (["train.lr=nan"], "train.lr must be a finite number > 0, got nan"),
        (["train.lr=inf"], "train.lr must be a finite number > 0, got inf"),
        (["physics.baseline.lr=0"], "physics.baseline.lr must be a finite number > 0, got 0"),
        (["train.dtype=float16"], "train.dtype must be one of ('float32', 'float64')"),
        (["physics.subspace=full"], "physics.subspace must be one of"),
        (
            ["physics.precondition=jacobi"],
            "physics.precondition must be one of ('none', 'diagonal')",
        ),
        (["physics.probes=0"], "physics.probes must be an integer >= 1, got 0"),
        (
            ["physics.precondition=diagonal", "physics.subspace=randomized"],
            "physics.precondition=diagonal needs physics.subspace=krylov",
        ),
        (["physics.norm=energy", "problem=cdr"], "physics.norm=energy needs a symmetric operator"),
        (["physics.norm=dual"], "physics.norm=dual needs an SPD weighting operator"),
        (["method.rank=0"], "method.rank must be an integer >= 1, got 0"),
        (["physics.ilsr.update=jump"], "physics.ilsr.update must be one of ('align', 'commit')"),
        (["physics.ilsr.align_target=energy"], "physics.ilsr.align_target must be one of"),
        (["physics.ilsr.align_dtau=0"], "physics.ilsr.align_dtau must be a finite number > 0"),
        (["physics.ilsr.recycle=1"], "physics.ilsr.recycle must be true or false, got 1"),
        (["physics.finetune_lsr.share=1"], "physics.finetune_lsr.share must be a number in"),
        (["physics.finetune_lsr.rank=0"], "physics.finetune_lsr.rank must be an integer >= 1"),
        (
            ["physics.ilsr.recycle=true", "physics.subspace=randomized"],
            "physics.ilsr.recycle needs physics.subspace=krylov",
        ),
        (["physics.ilsr.ranks=[8,16]"], "physics.ilsr.ranks must be null or a list"),
        (["physics.ilsr.ranks=[8,0,8]"], "physics.ilsr.ranks must be null or a list"),
        (
            ["problem=cdr", "physics.ilsr.update=align", "physics.ilsr.align_target=pseudo_time"],
            "physics.ilsr.align_target=pseudo_time is in the energy norm",
        ),
        (["method=lsr", "~model"], "method=lsr needs a model"),
        (["model=mlp", "model.activation=swish"], "swish"),
        (["problem=fit2d", "model=fno"], "problem=fit2d fits a function of (x, y): use model=mlp"),
        (
            ["fem.petsc_options.ksp_type=nosuch"],
            "fem.petsc_options.ksp_type=nosuch is refused by PETSc: Unable to find requested KSP "
            "type nosuch",
        ),
        (
            ["problem=nonlinear_diffusion", "+fem.petsc_options.snes_type=newtonish"],
            "fem.petsc_options.snes_type=newtonish is refused by PETSc",
        ),
        (
            ["physics.petsc_options={ksp_type: nosuch}"],
            "physics.petsc_options.ksp_type=nosuch is refused by PETSc",
        ),
        (
            ["method.petsc_options={pc_type: nosuch}"],
            "method.petsc_options.pc_type=nosuch is refused by PETSc",
        ),
        (
            ["problem=nonlinear_diffusion", "fem.petsc_options.ksp_type=cg"],
            "fem.petsc_options.ksp_type=cg needs a symmetric matrix",
        ),
    ],
)
def test_bad_values_name_their_key(overrides, message):
    with pytest.raises(ValueError) as error:
        settings(*overrides)
    assert message in str(error.value)


def test_the_ilsr_options_reach_the_settings():
    ilsr = settings(
        "physics.ilsr.iterations=3",
        "physics.ilsr.update=commit",
        "physics.ilsr.align_target=pseudo_time",
        "physics.ilsr.align_dtau=0.5",
        "physics.ilsr.recycle=true",
        "physics.ilsr.ranks=[8,16,32]",
        "physics.precondition=diagonal",
        "physics.probes=32",
    ).physics.ilsr
    assert (ilsr.update, ilsr.recycle, ilsr.ranks) == ("commit", True, (8, 16, 32))
    assert (ilsr.precondition, ilsr.probes) == ("diagonal", 32)
    assert (ilsr.align.target, ilsr.align.dtau) == ("pseudo_time", 0.5)


def test_unknown_train_key_is_a_value_error():
    cfg = compose_config([])
    with open_dict(cfg):
        cfg.train.warmup = 3
    with pytest.raises(ValueError, match="bad train setting"):
        load_settings(cfg)


def test_a_missing_model_file_is_reported_after_the_values(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt does not exist"):
        settings(f"checkpoint={tmp_path / 'nowhere.pt'}")


def test_resolve_norm_follows_the_problem():
    run = settings()
    assert resolve_norm(run.problem, "auto") == "energy"
    assert resolve_norm(run.problem, "l2") == "l2"
    assert settings("problem=nonlinear_diffusion").physics.ilsr.norm == "dual"


def test_the_model_fits_the_problem():
    vector = settings("problem=elasticity", "model=mlp", "model.width=8", "problem.resolution=6")
    model = build_configured_model(vector)
    assert model.net[-1].out_features == 2 * 6 * 6  # two components per grid node


def test_the_mesh_is_named_by_content():
    assert mesh_identity(settings("problem.resolution=33")) == "unit_square(32)"
    identity = mesh_identity(settings(f"mesh.file={MESHES / 'lshape.msh'}"))
    assert identity.startswith("lshape.msh:sha256=") and len(identity.split("=")[1]) == 16
