"""The run behind ``solve.py``: settings -> problem, mesh, data, FEM solves, reports.

Stages (seconds of each recorded in ``metrics.json``):

1. ``mesh``: the distributed mesh (and each rank's own serial copy for data generation);
2. ``data``: the cached or newly generated dataset, samples split across ranks;
3. ``train`` (when a model is configured): gradient training (or GNvpro with ``method=gnvpro``),
   checkpoint, loss curve;
4. ``lsr`` (``method=lsr``): one-shot LSR of the trained model on its training data;
5. ``physics`` (``physics.instances > 0``): physics LSR, I-LSR and the gradient baseline on test
   instances against their FEM residual (:mod:`pinn_lsr.run.physics_stage`);
6. ``fem_solve``: a few (test) samples re-solved on the distributed mesh, checked against the
   data, written as XDMF with the model's prediction and error; for a problem with a
   manufactured solution (``poisson``) on the unit square, its L2 discretization error;
7. ``output``: PNG images; ``metrics.json`` is written last, so its presence marks a complete run.

Stages 3 to 5 are optional: each one a run skips is logged and recorded in ``metrics.json``
under ``skipped`` with its reason (:func:`skipped_stages`).
"""

import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

import dolfinx_solver  # noqa: F401  (must precede dolfinx / petsc4py)
import dolfinx.fem
import problems
from pinn_lsr.data.dataset import load_or_generate
from pinn_lsr.fem.evolution import PeriodicEvolution
from pinn_lsr.fem.grid_pde import GridPDE, dirichlet_facet_indices
from pinn_lsr.fem.linear_pde import LinearPDE
from pinn_lsr.fem.nonlinear_pde import NonlinearPDE
from pinn_lsr.fem.mesh import Domain, periodic_interval, read_mesh, unit_square
from pinn_lsr.io.fields import xdmf_series
from pinn_lsr.io.plots import plot_fields
from pinn_lsr.run.config import RunSettings, mesh_identity
from pinn_lsr.run.stages import write_metrics

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What the settings build before anything is written."""

    domain: Domain | None  # distributed over the run's communicator (None: function fitting)
    local_domain: Domain | None  # this rank's own serial copy, for data generation
    seconds: float  # time to build the meshes


def setup(settings: RunSettings, comm: MPI.Comm) -> Setup:
    """Build the meshes of ``settings`` and check the mesh's tags. Collective.

    Raises (on every rank alike):
        ValueError: a broken mesh file, or Dirichlet tags the mesh lacks.
        FileNotFoundError: a missing mesh file.
    """
    start = time.perf_counter()
    check_sample_counts(settings, comm.size)
    if settings.problem.kind == "function":
        return Setup(None, None, 0.0)
    check_writable(settings.data.cache_dir, "data.cache_dir", comm)
    domain = build_domain(settings, comm)
    local_domain = build_domain(settings, MPI.COMM_SELF)
    if settings.problem.kind == "evolution":  # its own periodic mesh, no physics stage
        return Setup(domain, local_domain, time.perf_counter() - start)
    dirichlet_facet_indices(domain, _tags(settings))  # a tag absent from the mesh: ValueError now
    n_dofs = domain.mesh.topology.index_map(0).size_global * settings.problem.components  # P1
    if settings.has_model and settings.physics.instances and settings.physics.ilsr.rank > n_dofs:
        raise ValueError(
            f"physics.rank={settings.physics.ilsr.rank} exceeds the {n_dofs} FEM dofs of an "
            f"instance (keep it <= dofs/4 = {n_dofs // 4} so the network does the work)"
        )
    return Setup(domain, local_domain, time.perf_counter() - start)


def check_writable(path: str | Path, key: str, comm: MPI.Comm) -> None:
    """Raise ValueError on every rank unless ``path`` is a directory this process can write, or
    can be created as one (its nearest existing ancestor is a writable directory). Rank 0 looks;
    nothing is left behind. Collective."""
    message = None
    if comm.rank == 0:
        target = Path(path).resolve()
        existing = next(p for p in (target, *target.parents) if p.exists())
        if not existing.is_dir():
            message = f"{key}={path} cannot be a directory: {existing} is a file"
        else:
            try:  # a trial folder, removed at once: permission bits do not bind root
                os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".pinn_lsr_write_test_"))
            except OSError as exc:
                message = f"{key}={path} is not writable ({existing}: {exc.strerror})"
    message = comm.bcast(message, root=0)
    if message:
        raise ValueError(message)


def check_sample_counts(settings: RunSettings, n_ranks: int) -> None:
    """Every MPI rank gets at least one sample of each set it works on: the training samples, the
    LSR fit and validation parts of them, and the test samples (if any). Local.

    Raises:
        ValueError: a set smaller than ``n_ranks``; the message names the keys to change.
    """
    n_train, n_test = settings.data.n_train, settings.data.n_test
    sets = {"data.n_train": n_train}
    if n_test:
        sets["data.n_test"] = n_test
    if settings.method == "lsr" and settings.has_model:
        n_fit = int(round(n_train * (1 - settings.lsr.validation_fraction)))
        sets["the LSR fit part (data.n_train x (1 - method.validation_fraction))"] = n_fit
        sets["the LSR validation part (data.n_train x method.validation_fraction)"] = (
            n_train - n_fit
        )
    for name, count in sets.items():
        if count < n_ranks:
            raise ValueError(
                f"{name} = {count} samples, fewer than the {n_ranks} MPI ranks: every rank needs "
                f"at least one (data.n_train={n_train}, data.n_test={n_test})"
            )


def skipped_stages(settings: RunSettings, n_test: int) -> dict[str, str]:
    """The optional stages (train, lsr, physics) that a run with ``n_test`` test samples skips,
    each with its reason. Local."""
    skipped = {}
    if not settings.has_model:
        skipped["train"] = "no model (~model)"
    if settings.method != "lsr":
        skipped["lsr"] = f"method={settings.method}"
    if not settings.has_model:
        skipped["physics"] = "no model (~model)"
    elif settings.physics.instances == 0:
        skipped["physics"] = "physics.instances=0"
    elif n_test == 0:
        skipped["physics"] = "data.n_test=0: no test instances to refine"
    return skipped


def _tags(settings: RunSettings) -> list[int] | None:
    tags = settings.mesh.dirichlet_tags
    return None if tags is None else list(tags)


def build_domain(settings: RunSettings, comm: MPI.Comm) -> Domain:
    """The unit square with ``resolution - 1`` cells per side, ``mesh.file``, or (evolution
    problems) the periodic interval of ``resolution · refinement`` cells. Collective."""
    s = settings.resolution
    if settings.problem.kind == "evolution":
        return periodic_interval(comm, s * settings.problem.refinement)
    if settings.mesh.file is None:
        return unit_square(comm, s - 1)
    return read_mesh(settings.mesh.file, comm)


def run(settings: RunSettings, prepared: Setup, run_dir: Path, comm: MPI.Comm) -> dict:
    """Run every stage and write the reports into ``run_dir``; return the metrics. Collective."""
    if prepared.domain is None:
        from pinn_lsr.run.fitting import run_function_fitting

        return run_function_fitting(settings, run_dir, comm)
    seconds = {"mesh": prepared.seconds}
    problem, domain = settings.problem, prepared.domain
    s = settings.resolution
    fem = settings.fem
    components = problem.components  # values per grid node: a solution is (s, s) or (c, s, s)
    grid = problems.grid_shape(problem, s)  # (s, s), or (s,) for an evolution problem
    field_shape = grid if components == 1 else (components, *grid)

    def make_pde(d: Domain) -> GridPDE | PeriodicEvolution:
        if problem.kind == "evolution":
            return PeriodicEvolution(
                d,
                problem.spatial_residual,
                grid_size=s,
                final_time=problem.final_time,
                n_steps=problem.time_steps,
                theta=problem.theta,
                petsc_options=fem.petsc_options,
                prefix=fem.prefix,
            )
        if problem.kind == "nonlinear":
            return NonlinearPDE(
                d,
                problem.residual,
                problem.weight,
                grid_size=s,
                input_space=fem.input_space,
                petsc_options=fem.petsc_options,
                prefix=fem.prefix,
                dirichlet_tags=_tags(settings),
            )
        return LinearPDE(
            d,
            problem.forms,
            grid_size=s,
            input_space=fem.input_space,
            petsc_options=fem.petsc_options,
            prefix=fem.prefix,
            components=components,
            dirichlet_tags=_tags(settings),
        )

    clock = time.perf_counter()
    dataset, cache = _data_stage(settings, make_pde(prepared.local_domain), comm)
    seconds["data"] = time.perf_counter() - clock
    log.info(
        "dataset: %d samples (%s) from %s in %.2f s",
        len(dataset),
        cache.status,
        cache.path,
        cache.seconds,
    )
    train_set, test_set = dataset.split(settings.data.n_train)
    shown = test_set if len(test_set) else train_set
    n_show = min(settings.output.n_show, len(shown))

    skipped = skipped_stages(settings, len(test_set))
    for stage, reason in skipped.items():
        log.info("stage %s skipped: %s", stage, reason)
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
        "skipped": skipped,
    }

    predictions: dict[str, np.ndarray] = {}
    if settings.has_model:
        import torch

        from pinn_lsr.run.stages import refine_model, train_or_load_model

        def tensors(data):
            return torch.as_tensor(data.inputs), torch.as_tensor(
                data.solutions.reshape(len(data), -1)
            )

        train_data, test_data = tensors(train_set), tensors(test_set) if len(test_set) else None
        shown_inputs = torch.as_tensor(shown.inputs[:n_show])
        clock = time.perf_counter()
        model, metrics["train"] = train_or_load_model(
            settings, train_data, test_data, run_dir, comm
        )
        seconds["train"] = time.perf_counter() - clock
        dtype = next(model.parameters()).dtype
        if model(shown_inputs[:1].to(dtype)).shape[1] != np.prod(field_shape):
            raise ValueError(f"the model predicts another grid than problem.resolution={s}")
        with torch.no_grad():
            predictions[f"{metrics['train']['model']} prediction"] = (
                model(shown_inputs.to(dtype)).double().numpy().reshape(-1, *field_shape)
            )
        predictors = {"trained network": lambda x: model(x).detach().double().numpy()}
        if settings.method == "lsr":
            clock = time.perf_counter()
            metrics["lsr"], refined = refine_model(
                settings, model, train_data, test_data, run_dir, comm
            )
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
    n_physics = min(settings.physics.instances, len(test_set))
    if predictions and n_physics and settings.physics.mode == "operator":
        from pinn_lsr.run.operator_stage import run_operator

        clock = time.perf_counter()
        metrics["physics"] = run_operator(
            settings,
            model,
            pde,
            train_set.inputs,
            test_set.inputs[:n_physics],
            predictors,
            run_dir,
            comm,
        )
        seconds["physics"] = time.perf_counter() - clock
    elif predictions and n_physics:
        from pinn_lsr.run.physics_stage import run_physics

        clock = time.perf_counter()
        metrics["physics"] = run_physics(
            settings, model, pde, test_set.inputs[:n_physics], predictors, run_dir, comm
        )
        seconds["physics"] = time.perf_counter() - clock

    clock = time.perf_counter()
    metrics["fem"] = _distributed_stage(pde, problem, shown, n_show, predictions, run_dir)
    pde.destroy()
    if hasattr(problem, "manufactured_forms") and settings.mesh.file is None:
        metrics["fem"]["manufactured_l2_error"] = _manufactured_error(settings, domain)
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


def _data_stage(settings: RunSettings, local_pde: GridPDE | PeriodicEvolution, comm: MPI.Comm):
    """Load or generate the dataset with each rank's serial ``local_pde``. Collective."""
    s, problem, seed = settings.resolution, settings.problem, settings.seed
    key = {
        "problem": problem.name,
        "parameters": dataclasses.asdict(problem),
        "grid_size": s,
        "mesh": mesh_identity(settings),
        "input_space": settings.fem.input_space,
        "petsc_options": settings.fem.petsc_options,
        "n_samples": settings.data.n_train + settings.data.n_test,
        "seed": seed,
    }
    if problem.components > 1:  # only then: the cache keys of scalar problems stay as they were
        key["components"] = problem.components
    if problem.kind == "evolution":  # likewise: 2D grids keep their keys
        key["dim"] = 1
    if settings.mesh.dirichlet_tags is not None:  # likewise: whole-boundary runs keep their keys
        key["dirichlet_tags"] = _tags(settings)

    def solve_on_grid(field: np.ndarray) -> np.ndarray:
        local_pde.solve(field)
        return local_pde.solution_on_grid()

    try:
        return load_or_generate(
            settings.data.cache_dir,
            key,
            comm=comm,
            progress=settings.output.progress,
            sample_inputs=lambda first, count: problem.sample_inputs(
                count, s, seed=seed, first=first
            ),
            solve=solve_on_grid,
        )
    finally:
        local_pde.destroy()


def _manufactured_error(settings: RunSettings, domain: Domain) -> float:
    """``||u_h - u||_L2`` of the problem's manufactured solution ``u`` on ``domain`` (the unit
    square), solved by the run's FEM solver: the discretization error a sweep over
    ``problem.resolution`` shows converging. Collective."""
    s, fem = settings.resolution, settings.fem
    pde = LinearPDE(
        domain,
        settings.problem.manufactured_forms,
        grid_size=s,
        petsc_options=fem.petsc_options,
        prefix=fem.prefix,
    )
    try:
        pde.solve(np.zeros((s, s)))
        return pde.l2_error(settings.problem.exact_solution)
    finally:
        pde.destroy()


def _distributed_stage(
    pde: GridPDE | PeriodicEvolution, problem, shown, n_show: int, predictions: dict, run_dir: Path
) -> dict:
    """Re-solve the shown samples on the distributed mesh, check them against the data and
    write input, solution, each prediction and the error of the last one as XDMF. Collective."""
    solve_seconds, max_difference = [], 0.0
    fields = {
        name: dolfinx.fem.Function(pde.V, name=name.replace(" ", "_")) for name in predictions
    }
    error = dolfinx.fem.Function(pde.V, name="error")
    to_dofs = pde.grid_to_local_dofs()
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
