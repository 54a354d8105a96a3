"""What a run must share with the checkpoints it uses, checked before any work.

``checkpoint=PATH`` loads a trained model: the run uses the checkpoint's model (its architecture
replaces the model group's, and ``config.yaml`` records it), so the problem, its parameters, the
mesh and the grid must be those it was trained for, and a model key set on the command line must
agree with it. ``train.resume=true`` continues the training in the run directory: the model,
problem, data and training settings must be those the checkpoint was written with, except what
:func:`pinn_lsr.train.loop.resume_changes` lets change (more or fewer epochs, the checkpoint
frequency), which is applied and recorded in ``metrics.json``.

Every checkpoint the run writes holds :func:`run_identity`, what these checks compare; one
written before it existed is checked on its model's shapes alone.
"""

import dataclasses
from collections.abc import Collection
from pathlib import Path

from mpi4py import MPI

from pinn_lsr.parallel.mpi import raise_collectively
from pinn_lsr.run.config import (
    ModelSettings,
    RunSettings,
    configured_model_spec,
    mesh_identity,
    problem_model_arguments,
)
from pinn_lsr.train.checkpoint import read_checkpoint, saved_precision
from pinn_lsr.train.loop import resume_changes

#: model arguments the problem and resolution fix (:func:`problem_model_arguments`), with the
#: value an architecture has without them
FIXED_ARGUMENTS = {
    "grid_size": None,
    "dim": 2,
    "out_channels": 1,
    "in_features": None,
    "out_features": None,
}
#: how a difference in each part of :func:`run_identity` is named
IDENTITY_KEYS = {
    "problem": "problem",
    "parameters": "problem parameters",
    "grid_size": "problem.resolution",
    "mesh": "mesh",
    "n_train": "data.n_train",
}


def run_identity(settings: RunSettings) -> dict:
    """What a checkpoint records about the run that trained it: the problem and its parameters,
    the number of training samples and, for grid operators, the grid size and the mesh. Local."""
    problem = settings.problem
    identity = {
        "problem": problem.name,
        "parameters": dataclasses.asdict(problem),
        "n_train": settings.data.n_train,
    }
    if problem.kind != "function":  # the unit square's size is the grid's
        square = settings.mesh.file is None and problem.kind != "evolution"
        mesh = "unit square" if square else mesh_identity(settings)
        identity.update(grid_size=settings.resolution, mesh=mesh)
    return identity


def check_checkpoints(
    settings: RunSettings, run_dir: Path, model_keys: Collection[str], comm: MPI.Comm
) -> RunSettings:
    """``settings`` checked against the checkpoints they use, with the model of
    ``checkpoint=PATH`` in place of the model group's. ``model_keys``: the model keys set on the
    command line (``name`` for ``model=NAME``, ``width`` for ``model.width=...``). Collective.

    Raises (on every rank alike):
        ValueError: an unreadable or foreign checkpoint, or one that does not fit the run; the
            message lists every difference.
    """
    message = None
    try:
        if settings.model_file is not None:
            settings = _adopt_model(settings, set(model_keys))
        resumed = run_dir / "checkpoint.pt"
        if settings.has_model and settings.train.resume and resumed.is_file():
            _check_resume(settings, resumed)
    except ValueError as exc:
        message = str(exc)
    raise_collectively(comm, message)
    return settings


def _adopt_model(settings: RunSettings, model_keys: set[str]) -> RunSettings:
    """``settings`` with the model of ``settings.model_file``, which must fit the run."""
    path = settings.model_file
    state = read_checkpoint(path)
    name, kwargs = state["model_spec"]["name"], state["model_spec"]["kwargs"]
    differences = []
    asked = settings.model
    if asked is not None and "name" in model_keys and asked.name != name:
        differences.append(f"model={asked.name} (checkpoint: {name})")
    if asked is not None and asked.name == name:
        differences += [
            f"model.{key}={asked.options.get(key)!r} (checkpoint: {kwargs.get(key)!r})"
            for key in sorted(model_keys - {"name"})
            if asked.options.get(key) != kwargs.get(key)
        ]
    asked_for = bool(differences)  # model keys of the command line the checkpoint contradicts
    identity = state.get("identity")
    if identity is None:  # an older checkpoint: its model's shapes must fit the problem
        fixed = problem_model_arguments(settings.problem, settings.resolution, name)
        differences += [
            f"the model's {key}={kwargs.get(key, default)} (this run needs "
            f"{fixed.get(key, default)})"
            for key, default in FIXED_ARGUMENTS.items()
            if kwargs.get(key, default) != fixed.get(key, default)
        ]
    differences += _identity_differences(identity, run_identity(settings), "n_train")
    if differences:
        hint = " (model keys may be left out: the checkpoint's model is used)" if asked_for else ""
        raise ValueError(f"checkpoint={path} does not fit this run: {'; '.join(differences)}{hint}")
    options = {k: v for k, v in kwargs.items() if k not in FIXED_ARGUMENTS}
    return dataclasses.replace(settings, model=ModelSettings(name=name, options=options))


def _check_resume(settings: RunSettings, path: Path) -> None:
    """Raise ValueError unless training can resume from checkpoint ``path`` with ``settings``."""
    state = read_checkpoint(path)
    prefix = f"train.resume=true with {path}: "
    try:
        resume_changes(state, settings.train.loop, name=_train_key)
    except ValueError as exc:
        raise ValueError(prefix + str(exc)) from None
    differences = []
    name, kwargs = configured_model_spec(settings)
    saved = state["model_spec"]
    if saved["name"] != name:
        differences.append(f"model={name} (checkpoint: {saved['name']})")
    else:
        differences += [
            f"model.{key}={kwargs.get(key)!r} (checkpoint: {saved['kwargs'].get(key)!r})"
            for key in sorted(set(kwargs) | set(saved["kwargs"]))
            if kwargs.get(key) != saved["kwargs"].get(key)
        ]
    precision = str(saved_precision(state)).removeprefix("torch.")
    if precision != settings.train.dtype:
        differences.append(f"train.dtype={settings.train.dtype} (checkpoint: {precision})")
    differences += _identity_differences(state.get("identity"), run_identity(settings))
    if differences:
        raise ValueError(
            f"{prefix}the run differs from the one that wrote the checkpoint: "
            f"{'; '.join(differences)} (resume with its settings, or start a new run in "
            "another hydra.run.dir)"
        )


def _train_key(field: str) -> str:
    """The configuration key of a field of :class:`pinn_lsr.train.loop.TrainSettings` (its seed
    is the run's)."""
    return "seed" if field == "seed" else f"train.{field}"


def _identity_differences(saved: dict | None, current: dict, *ignored: str) -> list[str]:
    """``key=now (checkpoint: saved)`` for each part of two run identities that differs (none
    for a checkpoint written without one; parts only one of them has and, across problems,
    parameters are not compared), ``ignored`` parts left out."""
    if saved is None:
        return []
    if saved.get("problem") != current.get("problem"):
        ignored += ("parameters",)
    return [
        f"{IDENTITY_KEYS[key]}={current.get(key)!r} (checkpoint: {saved.get(key)!r})"
        for key in IDENTITY_KEYS
        if key not in ignored and key in saved and key in current and saved[key] != current[key]
    ]
