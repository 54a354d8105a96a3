"""The run behind ``solve.py``: configuration -> problem, mesh, data, FEM solves, reports.

Stages (seconds of each recorded in ``metrics.json``):

1. ``mesh``: the distributed mesh (and each rank's own serial copy for data generation);
2. ``data``: the cached or newly generated dataset, samples split across ranks;
3. ``train`` (when a model is configured): gradient training (or GNvpro with ``method=gnvpro``),
   checkpoint, loss curve;
4. ``lsr`` (``method=lsr``): one-shot LSR of the trained model on its training data;
5. ``physics`` (``physics.instances > 0``): physics LSR, I-LSR and the gradient baseline on test
   instances against their FEM residual (:mod:`pinn_lsr.run.physics_stage`);
6. ``fem_solve``: a few (test) samples re-solved on the distributed mesh, checked against the
   data, written as XDMF with the model's prediction and error;
7. ``output``: PNG images; ``metrics.json`` is written last, so its presence marks a complete run.
"""

import dataclasses
import hashlib
import logging
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI
from omegaconf import DictConfig, OmegaConf

import dolfinx_solver  # noqa: F401  (must precede dolfinx / petsc4py)
import dolfinx.fem
import problems
from pinn_lsr.data.dataset import load_or_generate
from pinn_lsr.fem.grid_pde import INPUT_SPACES, GridPDE, dirichlet_facet_indices
from pinn_lsr.fem.linear_pde import LinearPDE
from pinn_lsr.fem.nonlinear_pde import NonlinearPDE
from pinn_lsr.fem.mesh import Domain, read_mesh, unit_square
from pinn_lsr.fem.transfer import grid_to_dofs_local
from pinn_lsr.io.fields import xdmf_series
from pinn_lsr.io.plots import plot_fields
from pinn_lsr.run.stages import lsr_settings, write_metrics

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What the configuration builds before anything is written."""

    problem: object  # a problem from ``problems/``
    domain: Domain | None  # distributed over the run's communicator (None: function fitting)
    local_domain: Domain | None  # this rank's own serial copy, for data generation
    seconds: float  # time to build the meshes


def setup(cfg: DictConfig, comm: MPI.Comm) -> Setup:
    """Validate ``cfg`` and build the problem and meshes. Collective.

    Raises (on every rank alike):
        ValueError: a bad configuration value or a broken mesh file.
        FileNotFoundError: a missing mesh file.
    """
    start = time.perf_counter()
    _validate(cfg)
    problem = problems.create_problem(cfg.problem.name, **cfg.problem.params)
    if problem.kind == "function":
        return Setup(problem, None, None, 0.0)
    s = int(cfg.problem.resolution)
    domain = build_domain(cfg.mesh.file, s, comm)
    local_domain = build_domain(cfg.mesh.file, s, MPI.COMM_SELF)
    dirichlet_facet_indices(
        domain, dirichlet_tags(cfg)
    )  # a tag absent from the mesh: ValueError now
    return Setup(problem, domain, local_domain, time.perf_counter() - start)


def _validate(cfg: DictConfig) -> None:
    """Check values that Hydra does not type-check. Local; raises ValueError naming the key."""
    require_int(cfg, "problem.resolution", minimum=2)
    require_int(cfg, "data.n_train", minimum=1)
    require_int(cfg, "data.n_test", minimum=0)
    require_int(cfg, "output.n_show", minimum=0)
    require_int(cfg, "seed", minimum=0)
    if cfg.fem.input_space not in INPUT_SPACES:
        raise ValueError(
            f"fem.input_space must be one of {INPUT_SPACES}, got {cfg.fem.input_space!r}"
        )
    dirichlet_tags(cfg)
    if cfg.get("model") is not None and cfg.checkpoint is None:
        _validate_training(cfg)
    if cfg.checkpoint is not None and not Path(cfg.checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {cfg.checkpoint} does not exist")
    if cfg.method.name == "lsr":
        _validate_lsr(cfg)
    from pinn_lsr.run.physics_stage import validate as validate_physics
    from pinn_lsr.run.stages import validate_gnvpro

    validate_gnvpro(cfg)
    validate_physics(cfg)


def _validate_lsr(cfg: DictConfig) -> None:
    if cfg.get("model") is None and cfg.checkpoint is None:
        raise ValueError("method=lsr needs a model: choose model=... or checkpoint=PATH")
    lsr_settings(cfg)  # the rules of pinn_lsr.lsr.settings.LSRSettings, keys named method.<key>


def _validate_training(cfg: DictConfig) -> None:
    from pinn_lsr.run.stages import build_configured_model
    from pinn_lsr.train.losses import LOSSES
    from pinn_lsr.train.optim import OPTIMIZERS, SCHEDULERS

    require_int(cfg, "train.epochs", minimum=0)
    require_int(cfg, "train.batch_size", minimum=1)
    require_int(cfg, "train.checkpoint_every", minimum=0)
    for key, choices in (
        ("optimizer", OPTIMIZERS),
        ("scheduler", SCHEDULERS),
        ("loss", tuple(LOSSES)),
        ("dtype", ("float32", "float64")),
    ):
        if cfg.train[key] not in choices:
            raise ValueError(f"train.{key} must be one of {choices}, got {cfg.train[key]!r}")
    build_configured_model(cfg)  # raises ValueError for bad model arguments


def require_int(cfg: DictConfig, key: str, *, minimum: int) -> None:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")


def dirichlet_tags(cfg: DictConfig) -> list[int] | None:
    """``mesh.dirichlet_tags`` as a list of ints (a single int allowed), or None. Local.

    Raises:
        ValueError: anything else (the key is named).
    """
    tags = cfg.mesh.get("dirichlet_tags")
    if tags is None:
        return None
    tags = OmegaConf.to_container(tags) if OmegaConf.is_list(tags) else tags
    tags = [tags] if isinstance(tags, int) and not isinstance(tags, bool) else tags
    if (
        not isinstance(tags, list)
        or not tags
        or any(isinstance(t, bool) or not isinstance(t, int) for t in tags)
    ):
        raise ValueError(
            f"mesh.dirichlet_tags must be null or a non-empty list of integer facet tags, got {tags!r}"
        )
    return tags


def build_domain(mesh_file: str | None, resolution: int, comm: MPI.Comm) -> Domain:
    """The unit square with ``resolution - 1`` cells per side, or the mesh file. Collective."""
    if mesh_file is None:
        return unit_square(comm, resolution - 1)
    return read_mesh(mesh_file, comm)


def run(cfg: DictConfig, prepared: Setup, run_dir: Path, comm: MPI.Comm) -> dict:
    """Run every stage and write the reports into ``run_dir``; return the metrics. Collective."""
    if prepared.domain is None:
        from pinn_lsr.run.fitting import run_fit

        return run_fit(cfg, prepared.problem, run_dir, comm)
    seconds = {"mesh": prepared.seconds}
    problem, domain = prepared.problem, prepared.domain
    s = int(cfg.problem.resolution)
    petsc_options = OmegaConf.to_container(cfg.fem.petsc_options)
    components = problem.components  # values per grid node: a solution is (s, s) or (c, s, s)
    field_shape = (s, s) if components == 1 else (components, s, s)

    def make_pde(d: Domain) -> GridPDE:
        if problem.kind == "nonlinear":
            return NonlinearPDE(
                d,
                problem.residual,
                problem.weight,
                grid_size=s,
                input_space=cfg.fem.input_space,
                petsc_options=petsc_options,
                prefix=cfg.fem.prefix,
                dirichlet_tags=dirichlet_tags(cfg),
            )
        return LinearPDE(
            d,
            problem.forms,
            grid_size=s,
            input_space=cfg.fem.input_space,
            petsc_options=petsc_options,
            prefix=cfg.fem.prefix,
            components=components,
            dirichlet_tags=dirichlet_tags(cfg),
        )

    clock = time.perf_counter()
    dataset, cache = _data_stage(cfg, problem, make_pde(prepared.local_domain), petsc_options, comm)
    seconds["data"] = time.perf_counter() - clock
    log.info(
        "dataset: %d samples (%s) from %s in %.2f s",
        len(dataset),
        cache.status,
        cache.path,
        cache.seconds,
    )
    train_set, test_set = dataset.split(int(cfg.data.n_train))
    shown = test_set if len(test_set) else train_set
    n_show = min(int(cfg.output.n_show), len(shown))

    metrics = {
        "problem": problem.name,
        "parameters": dataclasses.asdict(problem),
        "mesh": domain.source,
        "grid_size": s,
        "n_samples": len(dataset),
        "n_train": len(train_set),
        "n_test": len(test_set),
        "n_ranks": comm.size,
        "data": {
            "cache": cache.status,
            "cache_file": str(cache.path),
            "samples_per_second": cache.samples_per_second,
        },
    }

    predictions: dict[str, np.ndarray] = {}
    if cfg.checkpoint is not None or cfg.get("model") is not None:
        import torch

        from pinn_lsr.run.stages import build_configured_model, fit_model, refine_model

        def tensors(data):
            return torch.as_tensor(data.inputs), torch.as_tensor(
                data.solutions.reshape(len(data), -1)
            )

        train_data, test_data = tensors(train_set), tensors(test_set) if len(test_set) else None
        shown_inputs = torch.as_tensor(shown.inputs[:n_show])
        clock = time.perf_counter()
        model, metrics["train"] = fit_model(
            cfg, lambda: build_configured_model(cfg), train_data, test_data, run_dir, comm
        )
        seconds["train"] = time.perf_counter() - clock
        dtype = next(model.parameters()).dtype
        if model(shown_inputs[:1].to(dtype)).shape[1] != components * s * s:
            raise ValueError(f"the model predicts another grid than problem.resolution={s}")
        with torch.no_grad():
            predictions[f"{metrics['train']['model']} prediction"] = (
                model(shown_inputs.to(dtype)).double().numpy().reshape(-1, *field_shape)
            )
        predictors = {"trained network": lambda x: model(x).detach().double().numpy()}
        if cfg.method.name == "lsr":
            clock = time.perf_counter()
            metrics["lsr"], refined = refine_model(cfg, model, train_data, test_data, run_dir, comm)
            seconds["lsr"] = time.perf_counter() - clock
            predictions["LSR refined"] = (
                refined.predict(shown_inputs.to(dtype)).double().numpy().reshape(-1, *field_shape)
            )
            predictors["LSR (data, linear predictor)"] = lambda x: (
                refined.predict(x).double().numpy()
            )

    pde = make_pde(domain)
    pde.input.name = problem.input_name
    metrics["n_dofs"] = pde.n_dofs
    n_physics = min(int(cfg.physics.instances), len(test_set))
    if predictions and n_physics:
        from pinn_lsr.run.physics_stage import run_physics

        clock = time.perf_counter()
        metrics["physics"] = run_physics(
            cfg, model, pde, test_set.inputs[:n_physics], predictors, run_dir, comm
        )
        seconds["physics"] = time.perf_counter() - clock

    clock = time.perf_counter()
    metrics["fem"] = _distributed_stage(pde, problem, shown, n_show, predictions, run_dir)
    pde.destroy()
    seconds["fem_solve"] = time.perf_counter() - clock

    clock = time.perf_counter()
    if comm.rank == 0 and n_show:
        columns = [
            (problem.input_name, shown.inputs[:n_show]),
            ("FEM solution u", shown.solutions[:n_show]),
        ]
        columns += list(predictions.items())
        if predictions:
            best = list(predictions.values())[-1]
            columns.append(
                (f"|error| ({list(predictions)[-1]})", np.abs(best - shown.solutions[:n_show]))
            )
        label = "test" if len(test_set) else "train"
        plot_fields(
            run_dir / "samples.png",
            columns,
            sample_labels=[f"{label} sample {k}" for k in range(n_show)],
        )
    seconds["output"] = time.perf_counter() - clock
    return write_metrics(run_dir, metrics, seconds, comm)


def _data_stage(cfg, problem, local_pde: GridPDE, petsc_options, comm):
    """Load or generate the dataset with each rank's serial ``local_pde``. Collective."""
    s = local_pde.grid.size
    settings = {
        "problem": problem.name,
        "parameters": dataclasses.asdict(problem),
        "grid_size": s,
        "mesh": _mesh_identity(cfg.mesh.file, s),
        "input_space": cfg.fem.input_space,
        "petsc_options": petsc_options,
        "n_samples": int(cfg.data.n_train) + int(cfg.data.n_test),
        "seed": int(cfg.seed),
    }
    if local_pde.components > 1:  # only then: the cache keys of scalar problems stay as they were
        settings["components"] = local_pde.components
    if dirichlet_tags(cfg) is not None:  # likewise: whole-boundary runs keep their cache keys
        settings["dirichlet_tags"] = dirichlet_tags(cfg)

    def solve_on_grid(field: np.ndarray) -> np.ndarray:
        local_pde.solve(field)
        return local_pde.solution_on_grid()

    try:
        return load_or_generate(
            cfg.data.cache_dir,
            settings,
            comm=comm,
            progress=bool(cfg.output.progress),
            sample_inputs=lambda first, count: problem.sample_inputs(
                count, s, seed=int(cfg.seed), first=first
            ),
            solve=solve_on_grid,
        )
    finally:
        local_pde.destroy()


def _distributed_stage(
    pde: GridPDE, problem, shown, n_show: int, predictions: dict, run_dir: Path
) -> dict:
    """Re-solve the shown samples on the distributed mesh, check them against the data and
    write input, solution, each prediction and the error of the last one as XDMF. Collective."""
    solve_seconds, max_difference = [], 0.0
    fields = {
        name: dolfinx.fem.Function(pde.V, name=name.replace(" ", "_")) for name in predictions
    }
    error = dolfinx.fem.Function(pde.V, name="error")
    to_dofs = grid_to_dofs_local(pde.V, pde.grid)
    with xdmf_series(run_dir / "fields", "samples", pde.domain.mesh) as xdmf:
        for k in range(n_show):
            start = time.perf_counter()
            pde.solve(shown.inputs[k])
            solve_seconds.append(time.perf_counter() - start)
            max_difference = max(
                max_difference, float(np.max(np.abs(pde.solution_on_grid() - shown.solutions[k])))
            )
            xdmf.write_function(pde.input, float(k))
            xdmf.write_function(pde.solution, float(k))
            for name, field in fields.items():
                field.x.array[:] = to_dofs @ predictions[name][k].ravel()
                xdmf.write_function(field, float(k))
            if fields:
                error.x.array[:] = list(fields.values())[-1].x.array - pde.solution.x.array
                xdmf.write_function(error, float(k))
    log.info(
        "distributed FEM solves of %d samples agree with the dataset to %.2e",
        n_show,
        max_difference,
    )
    return {
        **pde.solver_description,
        "solve_seconds_median": float(np.median(solve_seconds))
        if n_show
        else None,  # assembly included
        "distributed_vs_dataset_max_abs_diff": max_difference,
    }


def _mesh_identity(mesh_file: str | None, resolution: int) -> str:
    """What the data depend on about the mesh: its resolution, or the file's content hash."""
    if mesh_file is None:
        return f"unit_square({resolution - 1})"
    return f"{Path(mesh_file).name}:sha256={hashlib.sha256(Path(mesh_file).read_bytes()).hexdigest()[:16]}"
