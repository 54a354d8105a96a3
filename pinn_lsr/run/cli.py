"""Command line: ``mpirun -n N python solve.py problem=darcy [key=value ...]`` (or ``pinn-lsr``).

Hydra composes the configuration from ``pinn_lsr/conf``. All ranks parse the same arguments;
rank 0 resolves the run directory (``hydra.run.dir=DIR`` to choose it) and broadcasts it, and
only rank 0 writes reports. A bad override exits with status 2 and a message listing the valid
choices before anything is written; an error raised later exits with status 1 and a one-line
message (``hydra.verbose=true``: with its traceback), aborting every rank under MPI.
``-m key=a,b other=x,y`` runs a sweep (:mod:`pinn_lsr.run.sweep`): every point validated first,
then run as it would run alone.
"""

import logging
import sys
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from mpi4py import MPI
from omegaconf import DictConfig, OmegaConf, open_dict

from pinn_lsr.parallel.mpi import (
    abort,
    abort_on_uncaught_exception,
    configure_logging,
    every_rank_arrives,
)
from pinn_lsr.parallel.threads import share_cores
from pinn_lsr.run.sweep import Outcome, parse_sweep, point_directory, run_sweep

log = logging.getLogger("pinn_lsr")

USAGE = """usage: solve.py [--help] [--cfg] [-m] [key=value ...]

  problem=NAME          the problem ({problems})
  model=NAME            the model ({models}); ~model skips training
  method=NAME           after (or instead of) training ({methods})
  key=value             override any configuration key, e.g. problem.resolution=64 data.n_train=200
  hydra.run.dir=DIR     put every output of the run in DIR
  hydra.verbose=true    show the traceback of an error during the run (else one line, status 1)
  --cfg                 print the composed configuration and exit
  -m, --multirun        a sweep: key=a,b,c (or range(16,65,16), glob(*)) runs every combination,
                        one run directory per point under hydra.sweep.dir=DIR, with summary.csv,
                        summary.md and convergence.png there; run again to finish an interrupted one
  --help [group=NAME]   this text, with the configuration files of the chosen groups

PETSc options come from the configuration (fem.petsc_options) or PETSC_OPTIONS="-fem_ksp_monitor".

The configuration files below, with their comments, document every key; a group's keys are
overridden under its name (model=deeponet model.latent=64).
{files}"""

GROUPS = ("problem", "model", "method")
#: seconds a rank that failed a sweep's point waits for the others to fail it too (then: abort)
FAILURE_WAIT = 60.0


class UsageError(ValueError):
    """A command-line mistake: reported without a traceback, exit status 2."""


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose the configuration (with its ``hydra`` node) for ``overrides``. Local.

    Raises:
        UsageError: malformed override, unknown group choice or unknown key; the message lists
            the valid choices.
    """
    with initialize_config_module("pinn_lsr.conf", version_base=None):
        try:
            return compose("config", overrides=overrides, return_hydra_config=True)
        except HydraException as exc:
            raise UsageError(_explain(exc, overrides)) from None


def _explain(exc: HydraException, overrides: list[str]) -> str:
    message = str(exc).split("\nConfig search path:")[0].strip()
    marker = "Could not override '"
    if marker not in message:
        return message
    key = message.split(marker, 1)[1].split("'", 1)[0]
    key = getattr(exc.__cause__, "full_key", None) or key  # a new key inside a dict value
    groups = [o for o in overrides if "=" in o and "." not in o.split("=", 1)[0]]
    base = compose("config", overrides=groups)
    parent_path, _, _ = key.rpartition(".")
    parent = OmegaConf.select(base, parent_path) if parent_path else base
    while parent is None and parent_path:
        parent_path, _, _ = parent_path.rpartition(".")
        parent = OmegaConf.select(base, parent_path) if parent_path else base
    valid = (
        ", ".join(f"{parent_path + '.' if parent_path else ''}{k}" for k in parent)
        if isinstance(parent, DictConfig)
        else ""
    )
    hint = ""
    if parent_path.endswith("petsc_options"):  # free-form: any PETSc option may be added
        hint = f" (a PETSc option not set yet: +{key}=VALUE)"
    return f"unknown configuration key '{key}'{hint}. Valid keys here: {valid}"


def run_directory(cfg: DictConfig, comm: MPI.Comm) -> Path:
    """The run directory chosen on rank 0 (``hydra.run.dir``), the same on all ranks. Collective."""
    path = OmegaConf.to_container(cfg.hydra.run, resolve=True)["dir"] if comm.rank == 0 else None
    return Path(comm.bcast(path, root=0)).resolve()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``solve.py`` and ``pinn-lsr``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    comm = MPI.COMM_WORLD
    abort_on_uncaught_exception(comm)
    threads = share_cores(comm)  # before torch and numpy are imported (below) where possible
    from pinn_lsr.lsr.allocator import retain_freed_memory
    from pinn_lsr.lsr.denormals import flush_denormals

    retain_freed_memory()
    flush_denormals()  # training, LSR and physics products: several times faster once trained
    configure_logging(comm)
    flags = {a for a in argv if a.startswith("-")}
    overrides = [a for a in argv if not a.startswith("-")]
    unknown_flags = flags - {"-h", "--help", "--cfg", "-m", "--multirun"}
    if unknown_flags:
        return _refuse(
            f"unknown option(s) {sorted(unknown_flags)}; options are --help, --cfg and -m", comm
        )
    if flags & {"-m", "--multirun"}:
        return _sweep(overrides, flags, comm, threads)
    return _solve(overrides, flags, comm, threads).status


@dataclass(frozen=True)
class _SweepPoint:
    """Where a sweep's point runs and how its failure is handled."""

    run_dir: Path
    sweep_log: Path
    failures: MPI.Comm  # a private copy of the world, for agreeing that every rank failed


def _solve(
    overrides: list[str],
    flags: set[str],
    comm: MPI.Comm,
    threads: str,
    point: _SweepPoint | None = None,
) -> Outcome:
    """One run (a sweep's ``point``, or the whole command). Collective."""
    try:
        cfg = compose_config(overrides)
        problem_names = _problem_names()
        if "-h" in flags or "--help" in flags:
            if comm.rank == 0:
                print(usage(cfg, problem_names))
            return Outcome(0)
        if "--cfg" in flags:
            if comm.rank == 0:
                print(OmegaConf.to_yaml(_job_config(cfg)))
            return Outcome(0)
        job_cfg = _job_config(cfg)
        from pinn_lsr.run.checkpoints import check_checkpoints
        from pinn_lsr.run.config import load_settings
        from pinn_lsr.run.pipeline import check_writable, setup

        settings = load_settings(job_cfg)  # local: every rank raises the same error
        run_dir = run_directory(cfg, comm) if point is None else point.run_dir
        check_writable(run_dir, "hydra.run.dir", comm)
        prepared = setup(settings, comm)  # collective: errors are raised on every rank alike
        settings = check_checkpoints(settings, run_dir, _model_keys(overrides), comm)
        if settings.model_file is not None:  # config.yaml records the model that runs
            with open_dict(job_cfg):
                job_cfg.model = {"name": settings.model.name, **settings.model.options}
    except (ValueError, FileNotFoundError) as exc:  # UsageError is a ValueError
        status = _refuse(str(exc), comm)
        if point is not None:
            _agree_on_failure(point, comm)
        return Outcome(status, str(exc))

    from pinn_lsr.parallel.memory import reset_peak_memory

    reset_peak_memory()  # metrics.json's peak is this run's, also after earlier points of a sweep
    previous = run_dir / "metrics.json"
    moved = comm.bcast(previous.is_file() if comm.rank == 0 else None, root=0)
    if comm.rank == 0:
        if moved:  # metrics.json marks a complete run: never leave another run's beside ours
            previous.replace(run_dir / "metrics.previous.json")
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(job_cfg, run_dir / ".hydra" / "config.yaml", resolve=True)
        OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")
    comm.Barrier()
    logfiles = [run_dir / "solve.log"] + ([point.sweep_log] if point else [])
    configure_logging(comm, logfiles=logfiles)
    log.info("run directory %s (%d MPI rank(s)); %s", run_dir, comm.size, threads)
    if moved:
        log.warning(
            "the run directory held a finished run: its metrics.json is now metrics.previous.json"
        )

    from pinn_lsr.run.pipeline import run

    start = time.perf_counter()
    try:
        run(settings, prepared, run_dir, comm)
    except Exception as exc:  # reported in one line; KeyboardInterrupt is not caught
        return _failed(exc, comm, verbose=bool(cfg.hydra.verbose), point=point)
    log.info("done in %.1f s; outputs in %s", time.perf_counter() - start, run_dir)
    return Outcome(0)


def _sweep(overrides: list[str], flags: set[str], comm: MPI.Comm, threads: str) -> int:
    """``-m``: every point of the sweep (:mod:`pinn_lsr.run.sweep`), or the ``--help`` or
    ``--cfg`` of its first point. Collective."""
    try:
        sweep = parse_sweep(overrides)
        first = sweep.overrides(sweep.points[0])
        if flags & {"-h", "--help", "--cfg"}:
            return _solve(first, flags, comm, threads).status
        from pinn_lsr.run.config import load_settings

        for point in sweep.points:  # a typo refuses the sweep before any point runs
            try:
                load_settings(_job_config(compose_config(sweep.overrides(point))))
            except (ValueError, FileNotFoundError) as exc:
                raise UsageError(f"sweep point {point_directory(point)}: {exc}") from None
        cfg = compose_config(first)
        stop_on_error = cfg.sweep.stop_on_error
        if not isinstance(stop_on_error, bool):
            raise UsageError(f"sweep.stop_on_error must be true or false, got {stop_on_error!r}")
        path = OmegaConf.select(cfg, "hydra.sweep.dir")  # resolved (subdir is unused)
        sweep_dir = Path(comm.bcast(path if comm.rank == 0 else None, root=0)).resolve()
        from pinn_lsr.run.pipeline import check_writable

        check_writable(sweep_dir, "hydra.sweep.dir", comm)
    except ValueError as exc:
        return _refuse(str(exc), comm)
    if comm.rank == 0:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    comm.Barrier()
    sweep_log = sweep_dir / "sweep.log"
    configure_logging(comm, logfiles=[sweep_log])
    log.info(
        "sweep of %d point(s) over %s in %s (%d MPI rank(s))",
        len(sweep.points),
        ", ".join(sweep.keys) or "nothing",
        sweep_dir,
        comm.size,
    )
    failures = comm.Dup()

    def run_point(point_overrides: list[str], run_dir: Path) -> Outcome:
        outcome = _solve(
            point_overrides, flags, comm, threads, _SweepPoint(run_dir, sweep_log, failures)
        )
        configure_logging(comm, logfiles=[sweep_log])
        return outcome

    status = run_sweep(sweep, sweep_dir, comm, run_point, stop_on_error=stop_on_error)
    failures.Free()
    return status


def _refuse(message: str, comm: MPI.Comm) -> int:
    """Report a command-line or configuration error (rank 0) and return exit status 2."""
    if comm.rank == 0:
        print(f"error: {message}", file=sys.stderr)
    return 2


def _agree_on_failure(point: _SweepPoint, comm: MPI.Comm) -> None:
    """In a sweep under MPI, go on only if every rank failed this point: abort the job when some
    rank is still in it (it may wait for this one in a collective) after ``FAILURE_WAIT`` s."""
    if comm.size > 1 and not every_rank_arrives(point.failures, FAILURE_WAIT):
        log.error("the other ranks did not fail alike: aborting the sweep")
        abort(comm)


def _failed(
    exc: Exception, comm: MPI.Comm, *, verbose: bool, point: _SweepPoint | None = None
) -> Outcome:
    """Report an error raised during the run (after every check passed) in one line, or with its
    traceback under ``hydra.verbose=true``, on the rank that raised it and in ``solve.log``;
    return exit status 1. Under MPI the job is aborted instead (the other ranks may be waiting
    for this one in a collective), except in a sweep whose ranks all failed the point."""
    lines = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {lines[0] if lines else 'no message'}"
    if verbose:
        log.error("run failed: %s", message, exc_info=exc)
    else:
        log.error("run failed: %s (hydra.verbose=true shows the traceback)", message)
    if point is not None:
        _agree_on_failure(point, comm)
    elif comm.size > 1:
        abort(comm)
    return Outcome(1, message)


def usage(cfg: DictConfig, problem_names: list[str]) -> str:
    """The ``--help`` text: options, then ``config.yaml`` and the group files ``cfg`` chose, as
    written (their comments are the documentation of the keys). Local."""
    conf = files("pinn_lsr.conf")
    choices = cfg.hydra.runtime.choices
    paths = ["config.yaml"] + [
        f"{group}/{choices[group]}.yaml" for group in GROUPS if choices.get(group) is not None
    ]
    text = "".join(f"\n==> pinn_lsr/conf/{path} <==\n{(conf / path).read_text()}" for path in paths)

    def names(group: str) -> str:
        return ", ".join(
            sorted(p.name[:-5] for p in (conf / group).iterdir() if p.name.endswith(".yaml"))
        )

    return USAGE.format(
        problems=", ".join(problem_names),
        models=names("model"),
        methods=names("method"),
        files=text,
    )


def _model_keys(overrides: list[str]) -> set[str]:
    """The model keys set on the command line: ``name`` for ``model=NAME``, ``KEY`` for
    ``model.KEY=VALUE``."""
    keys = set()
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key == "model":
            keys.add("name")
        elif key.startswith("model."):
            keys.add(key.removeprefix("model.").split(".")[0])
    return keys


def _job_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` without Hydra's own node."""
    job = cfg.copy()
    with open_dict(job):
        job.pop("hydra", None)
    return job


def _problem_names() -> list[str]:
    from problems import PROBLEMS

    return sorted(PROBLEMS)


if __name__ == "__main__":
    sys.exit(main())
