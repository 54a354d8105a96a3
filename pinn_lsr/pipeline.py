"""The run behind ``solve.py``: configuration -> problem, mesh, data, FEM solves, reports.

Stages (seconds of each recorded in ``metrics.json``):

1. ``mesh``: the distributed mesh (and each rank's own serial copy for data generation);
2. ``data``: the cached or newly generated dataset, samples split across ranks;
3. ``fem_solve``: a few samples re-solved on the distributed mesh, checked against the data;
4. ``output``: XDMF fields, PNG images; ``metrics.json`` is written last, so its presence
   marks a complete run.
"""

import dataclasses
import hashlib
import logging
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI
from omegaconf import DictConfig, OmegaConf

import problems
from pinn_lsr.data.dataset import load_or_generate
from pinn_lsr.fem.linear_pde import INPUT_SPACES, LinearPDE
from pinn_lsr.fem.mesh import Domain, read_mesh, unit_square
from pinn_lsr.io.atomic import write_json
from pinn_lsr.io.fields import xdmf_series
from pinn_lsr.io.plots import plot_fields

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What the configuration builds before anything is written."""

    problem: object  # a problem from ``problems/``
    domain: Domain  # distributed over the run's communicator
    local_domain: Domain  # this rank's own serial copy, for data generation
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
    s = int(cfg.problem.resolution)
    domain = build_domain(cfg.mesh.file, s, comm)
    local_domain = build_domain(cfg.mesh.file, s, MPI.COMM_SELF)
    return Setup(problem, domain, local_domain, time.perf_counter() - start)


def _validate(cfg: DictConfig) -> None:
    """Check values that Hydra does not type-check. Local; raises ValueError naming the key."""
    _require_int(cfg, "problem.resolution", minimum=2)
    _require_int(cfg, "data.n_train", minimum=1)
    _require_int(cfg, "data.n_test", minimum=0)
    _require_int(cfg, "output.n_show", minimum=0)
    _require_int(cfg, "seed", minimum=0)
    if cfg.fem.input_space not in INPUT_SPACES:
        raise ValueError(f"fem.input_space must be one of {INPUT_SPACES}, got {cfg.fem.input_space!r}")


def _require_int(cfg: DictConfig, key: str, *, minimum: int) -> None:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")


def build_domain(mesh_file: str | None, resolution: int, comm: MPI.Comm) -> Domain:
    """The unit square with ``resolution - 1`` cells per side, or the mesh file. Collective."""
    if mesh_file is None:
        return unit_square(comm, resolution - 1)
    return read_mesh(mesh_file, comm)


def run(cfg: DictConfig, prepared: Setup, run_dir: Path, comm: MPI.Comm) -> dict:
    """Run every stage and write the reports into ``run_dir``; return the metrics. Collective."""
    seconds = {"mesh": prepared.seconds}
    problem, domain = prepared.problem, prepared.domain
    s = int(cfg.problem.resolution)
    petsc_options = OmegaConf.to_container(cfg.fem.petsc_options)
    make_pde = lambda domain: LinearPDE(  # noqa: E731
        domain, problem.forms, grid_size=s, input_space=cfg.fem.input_space,
        petsc_options=petsc_options, prefix=cfg.fem.prefix,
    )

    clock = time.perf_counter()
    local_pde = make_pde(prepared.local_domain)
    n_samples = int(cfg.data.n_train) + int(cfg.data.n_test)
    settings = {
        "problem": problem.name,
        "parameters": dataclasses.asdict(problem),
        "grid_size": s,
        "mesh": _mesh_identity(cfg.mesh.file, s),
        "input_space": cfg.fem.input_space,
        "petsc_options": petsc_options,
        "n_samples": n_samples,
        "seed": int(cfg.seed),
    }

    def solve_on_grid(field: np.ndarray) -> np.ndarray:
        local_pde.solve(field)
        return local_pde.solution_on_grid()

    dataset, cache = load_or_generate(
        cfg.data.cache_dir, settings, comm=comm, progress=bool(cfg.output.progress),
        sample_inputs=lambda first, count: problem.sample_inputs(count, s, seed=int(cfg.seed), first=first),
        solve=solve_on_grid,
    )
    local_pde.destroy()
    seconds["data"] = time.perf_counter() - clock
    log.info("dataset: %d samples (%s) from %s in %.2f s", len(dataset), cache.status, cache.path, cache.seconds)

    clock = time.perf_counter()
    pde = make_pde(domain)
    n_show = min(int(cfg.output.n_show), len(dataset))
    assemble_seconds, solve_seconds, max_difference = [], [], 0.0
    with xdmf_series(run_dir / "fields", "samples", domain.mesh) as xdmf:
        for k in range(n_show):
            pde.set_input(dataset.inputs[k])
            t0 = time.perf_counter()
            pde.assemble()
            t1 = time.perf_counter()
            pde.solve()
            solve_seconds.append(time.perf_counter() - t1)
            assemble_seconds.append(t1 - t0)
            max_difference = max(max_difference, float(np.max(np.abs(pde.solution_on_grid() - dataset.solutions[k]))))
            pde.input.name = problem.input_name
            xdmf.write_function(pde.input, float(k))
            xdmf.write_function(pde.solution, float(k))
    seconds["fem_solve"] = time.perf_counter() - clock
    log.info("distributed FEM solves of %d samples agree with the dataset to %.2e", n_show, max_difference)

    clock = time.perf_counter()
    metrics = {
        "problem": problem.name,
        "parameters": dataclasses.asdict(problem),
        "mesh": domain.source,
        "n_dofs": pde.n_dofs,
        "grid_size": s,
        "n_samples": len(dataset),
        "n_train": int(cfg.data.n_train),
        "n_test": int(cfg.data.n_test),
        "n_ranks": comm.size,
        "data": {
            "cache": cache.status,
            "cache_file": str(cache.path),
            "samples_per_second": cache.samples_per_second,
        },
        "fem": {
            "ksp_type": pde.ksp.getType(),
            "pc_type": pde.ksp.getPC().getType(),
            "assemble_seconds_median": float(np.median(assemble_seconds)) if n_show else None,
            "solve_seconds_median": float(np.median(solve_seconds)) if n_show else None,
            "distributed_vs_dataset_max_abs_diff": max_difference,
        },
    }
    pde.destroy()
    if comm.rank == 0 and n_show:
        plot_fields(
            run_dir / "samples.png",
            [(problem.input_name, dataset.inputs[:n_show]), ("FEM solution u", dataset.solutions[:n_show])],
            sample_labels=[f"sample {k}" for k in range(n_show)],
        )
    seconds["output"] = time.perf_counter() - clock
    metrics["seconds"] = seconds
    if comm.rank == 0:
        write_json(run_dir / "metrics.json", metrics)
    comm.Barrier()
    return metrics


def _mesh_identity(mesh_file: str | None, resolution: int) -> str:
    """What the data depend on about the mesh: its resolution, or the file's content hash."""
    if mesh_file is None:
        return f"unit_square({resolution - 1})"
    return f"{Path(mesh_file).name}:sha256={hashlib.sha256(Path(mesh_file).read_bytes()).hexdigest()[:16]}"
