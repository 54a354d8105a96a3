"""Every option of a run, validated once into frozen typed settings.

:func:`load_settings` turns the configuration Hydra composed (``pinn_lsr/conf``) into one
:class:`RunSettings`; the pipeline and its stages read only that, never the configuration. A bad
value raises ``ValueError`` naming its key (``train.lr must be ...``), a missing file
``FileNotFoundError``, before anything is computed or written.

Local: every rank validates the same configuration and raises the same error.
"""

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import problems
from pinn_lsr.fem.grid_pde import INPUT_SPACES
from pinn_lsr.fem.options import check_options, flatten_options
from pinn_lsr.lsr.settings import LSRSettings
from pinn_lsr.parallel.device import check_device
from pinn_lsr.physics.iterative import ALIGN_TARGETS, UPDATES, AlignSettings, ILSRSettings
from pinn_lsr.physics.refine import PHYSICS_SUBSPACES, PRECONDITIONERS
from pinn_lsr.physics.refine import PREFIX as PHYSICS_PREFIX
from pinn_lsr.physics.residual import NORMS
from pinn_lsr.train.loop import TrainSettings
from pinn_lsr.vpro import GNSettings

DTYPES = ("float32", "float64")
METHODS = ("lsr", "gnvpro", "none")
ALIGN_OPTIMIZERS = ("lbfgs", "adam")
BASELINE_OPTIMIZERS = ("adam", "lbfgs", "none")
PHYSICS_MODES = ("instance", "operator")
#: PETSc solvers and preconditioners that assume a symmetric matrix (wrong for problems whose
#: operator is not symmetric)
SYMMETRIC_ONLY = {
    "ksp_type": ("cg", "pipecg", "groppcg", "pipecgrr", "cr", "pipecr", "minres", "symmlq"),
    "pc_type": ("cholesky", "icc"),
}


@dataclass(frozen=True)
class MeshSettings:
    file: str | None  # gmsh .msh, XDMF or .vtu; None: the unit square
    dirichlet_tags: tuple[int, ...] | None  # facet tags where u = 0; None: the whole boundary


@dataclass(frozen=True)
class FEMSettings:
    input_space: str  # one of INPUT_SPACES
    prefix: str  # PETSc options prefix of the FEM solver
    petsc_options: dict | None  # nested or flat PETSc options under the prefix


@dataclass(frozen=True)
class DataSettings:
    n_train: int
    n_test: int
    cache_dir: str  # relative to the working directory


@dataclass(frozen=True)
class ModelSettings:
    name: str  # fno | deeponet | mlp
    options: dict  # the model group's other keys: the builder's keyword arguments


@dataclass(frozen=True)
class TrainingSettings:
    """Gradient training: the loop's settings, the dtype and whether to resume."""

    loop: TrainSettings
    dtype: str  # one of DTYPES
    resume: bool  # continue from checkpoint.pt in the run directory


@dataclass(frozen=True)
class PhysicsStageSettings:
    """Physics LSR, I-LSR and the gradient baseline on test instances."""

    instances: int  # 0: no physics stage
    ilsr: ILSRSettings  # rank, (resolved) norm, subspace, ... and the outer iterations
    baseline_optimizer: str  # one of BASELINE_OPTIMIZERS
    baseline_lr: float
    # the baseline's fine-tuning finished by physics LSR in the same time: the LSR's share of it
    # (0: not run) and its most directions
    finetune_lsr_share: float = 0.0
    finetune_lsr_rank: int = 256
    # mode=operator: one network refined on operator_inputs unlabeled training inputs, the rank
    # chosen on operator_select held-out ones (0: physics.rank), evaluated on the test instances
    mode: str = "instance"  # one of PHYSICS_MODES
    operator_inputs: int = 0
    operator_select: int = 0


@dataclass(frozen=True)
class OutputSettings:
    n_show: int  # samples written as fields and images
    progress: bool  # progress bars on rank 0


@dataclass(frozen=True)
class RunSettings:
    """One run, as :func:`load_settings` validated it."""

    problem: problems.Problem  # the problem instance, with its parameters
    resolution: int  # grid nodes per side (function fitting: test grid points per side)
    seed: int
    device: str  # cpu | cuda | cuda:N: gradient training and data LSR (PETSc stays on the CPU)
    model_file: str | None  # the ``checkpoint`` key: a trained model to load instead of training
    mesh: MeshSettings
    fem: FEMSettings
    data: DataSettings
    model: ModelSettings | None  # None: no model (``~model``)
    train: TrainingSettings
    method: str  # one of METHODS
    lsr: LSRSettings | None  # method=lsr
    gnvpro: GNSettings | None  # method=gnvpro
    physics: PhysicsStageSettings
    output: OutputSettings

    @property
    def has_model(self) -> bool:
        """A model is trained or loaded."""
        return self.model is not None or self.model_file is not None


def load_settings(cfg: DictConfig) -> RunSettings:
    """Validate ``cfg`` (the job configuration, without Hydra's node) into settings. Local.

    Raises:
        ValueError: a bad value; the message names the key, what was received and what is valid.
        FileNotFoundError: a model file (``checkpoint``) or mesh file that does not exist.
    """
    problem = problems.create_problem(cfg.problem.name, **cfg.problem.params)
    resolution = require_int(cfg, "problem.resolution", minimum=2)
    seed = require_int(cfg, "seed", minimum=0)
    device = cfg.get("device", "cpu")
    check_device(device, key="device")
    data = DataSettings(
        n_train=require_int(cfg, "data.n_train", minimum=1),
        n_test=require_int(cfg, "data.n_test", minimum=0),
        cache_dir=str(cfg.data.cache_dir),
    )
    output = OutputSettings(
        n_show=require_int(cfg, "output.n_show", minimum=0), progress=bool(cfg.output.progress)
    )
    fem = FEMSettings(
        input_space=require_choice(cfg, "fem.input_space", INPUT_SPACES),
        prefix=str(cfg.fem.prefix),
        petsc_options=_container(cfg.fem.petsc_options),
    )
    mesh = MeshSettings(file=cfg.mesh.file, dirichlet_tags=_dirichlet_tags(cfg))
    model_file = cfg.checkpoint
    model = None
    if cfg.get("model") is not None:
        options = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "name"}
        model = ModelSettings(name=cfg.model.name, options=options)
    method = require_choice(cfg, "method.name", METHODS)
    settings = RunSettings(
        problem=problem,
        resolution=resolution,
        seed=seed,
        device=device,
        model_file=model_file,
        mesh=mesh,
        fem=fem,
        data=data,
        model=model,
        train=_training(cfg, seed),
        method=method,
        lsr=_lsr(cfg, seed, device) if method == "lsr" else None,
        gnvpro=_gnvpro(cfg, seed, data.n_train) if method == "gnvpro" else None,
        physics=_physics(cfg, problem, seed, data.n_train),
        output=output,
    )
    _check_method(settings)
    if problem.kind == "evolution":
        _check_evolution(settings)
    if problem.kind != "function":
        _check_fem_solver(problem, fem)
    if model_file is not None and not Path(model_file).is_file():
        raise FileNotFoundError(f"checkpoint {model_file} does not exist")
    return settings


def require_int(cfg: DictConfig, key: str, *, minimum: int) -> int:
    """The integer at ``key`` (not a bool), at least ``minimum``. Local; raises ValueError."""
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def require_choice(cfg: DictConfig, key: str, choices: tuple) -> str:
    """The value at ``key``, one of ``choices``. Local; raises ValueError listing them."""
    value = OmegaConf.select(cfg, key)
    if value not in choices:
        raise ValueError(f"{key} must be one of {choices}, got {value!r}")
    return value


def require_positive(cfg: DictConfig, key: str, *, allow_zero: bool = False) -> float:
    """The finite number at ``key`` (not a bool), > 0 (or >= 0). Local; raises ValueError."""
    value = OmegaConf.select(cfg, key)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{key} must be a finite number {bound}, got {value!r}")
    return float(value)


def _container(node) -> dict | None:
    return None if node is None else OmegaConf.to_container(node, resolve=True)


def _dirichlet_tags(cfg: DictConfig) -> tuple[int, ...] | None:
    """``mesh.dirichlet_tags`` as a tuple of ints (a single int allowed), or None."""
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
            "mesh.dirichlet_tags must be null or a non-empty list of integer facet tags, "
            f"got {tags!r}"
        )
    return tuple(tags)


def _training(cfg: DictConfig, seed: int) -> TrainingSettings:
    from pinn_lsr.train.losses import LOSSES
    from pinn_lsr.train.optim import OPTIMIZERS, SCHEDULERS

    require_int(cfg, "train.epochs", minimum=0)
    require_int(cfg, "train.batch_size", minimum=1)
    require_int(cfg, "train.checkpoint_every", minimum=0)
    require_positive(cfg, "train.lr")
    require_positive(cfg, "train.weight_decay", allow_zero=True)
    for key, choices in (
        ("optimizer", OPTIMIZERS),
        ("scheduler", SCHEDULERS),
        ("loss", tuple(LOSSES)),
        ("dtype", DTYPES),
    ):
        require_choice(cfg, f"train.{key}", choices)
    options = {k: v for k, v in _container(cfg.train).items() if k not in ("dtype", "resume")}
    try:
        loop = TrainSettings(seed=seed, **options)
    except TypeError as exc:
        raise ValueError(f"bad train setting: {exc}") from None
    return TrainingSettings(loop=loop, dtype=cfg.train.dtype, resume=bool(cfg.train.resume))


def _lsr(cfg: DictConfig, seed: int, device: str) -> LSRSettings:
    from pinn_lsr.lsr import lsqr

    options = {k: v for k, v in _container(cfg.method).items() if k != "name"}
    if options.get("device", device) != device:  # the top-level key, not the method's
        raise ValueError(f"set the device by device={options['device']}, not method.device")
    settings = LSRSettings.from_mapping(
        {"seed": seed, **options, "device": device}, prefix="method."
    )
    check_options(lsqr.PREFIX, settings.petsc_options, key="method.petsc_options")
    return settings


def _gnvpro(cfg: DictConfig, seed: int, n_train: int) -> GNSettings:
    """GNSettings of ``cfg.method`` (squared loss, seeded by ``seed``); a ``curvature_batch_size``
    or ``batch_size`` in (0, 1) is a fraction of ``data.n_train``."""
    from pinn_lsr.vpro.optimizer import GLOBALIZATIONS

    options = {k: v for k, v in _container(cfg.method).items() if k != "name"}
    for key in ("curvature_batch_size", "batch_size"):
        if isinstance(options.get(key), float) and 0 < options[key] < 1:
            options[key] = max(1, round(options[key] * n_train))
    try:
        settings = GNSettings(**{"loss": "squared", "seed": seed, **options})
    except TypeError as exc:
        raise ValueError(
            f"bad method=gnvpro setting: {exc}; see pinn_lsr.vpro.GNSettings"
        ) from None
    if settings.loss != "squared":
        raise ValueError(
            "method=gnvpro fits the data with the squared loss only, "
            f"got method.loss={settings.loss!r}"
        )
    if settings.globalization not in GLOBALIZATIONS:
        raise ValueError(
            f"method.globalization must be one of {GLOBALIZATIONS}, got {settings.globalization!r}"
        )
    for key, minimum in (("max_iterations", 0), ("krylov_max_iterations", 1), ("monitor_every", 1)):
        value = getattr(settings, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"method.{key} must be an integer >= {minimum}, got {value!r}")
    for key in ("curvature_batch_size", "batch_size"):
        value = getattr(settings, key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= n_train
        ):
            raise ValueError(
                f"method.{key} must be null, a fraction in (0, 1) or an integer in "
                f"[1, data.n_train={n_train}], got {value!r}"
            )
    if settings.batch_size is not None and settings.curvature_batch_size is not None:
        raise ValueError("choose method.batch_size or method.curvature_batch_size, not both")
    return settings


def _physics(
    cfg: DictConfig, problem: problems.Problem, seed: int, n_train: int
) -> PhysicsStageSettings:
    for key, minimum in (
        ("instances", 0),
        ("rank", 1),
        ("block_size", 1),
        ("probes", 1),
        ("oversampling", 0),
        ("ilsr.iterations", 0),
        ("ilsr.align_iterations", 1),
        ("finetune_lsr.rank", 1),
    ):
        require_int(cfg, f"physics.{key}", minimum=minimum)
    for key in ("ilsr.align_lr", "ilsr.align_dtau", "baseline.lr"):
        require_positive(cfg, f"physics.{key}")
    for key, choices in (
        ("norm", ("auto", *NORMS)),
        ("subspace", PHYSICS_SUBSPACES),
        ("precondition", PRECONDITIONERS),
        ("ilsr.update", UPDATES),
        ("ilsr.align_optimizer", ALIGN_OPTIMIZERS),
        ("ilsr.align_target", ALIGN_TARGETS),
        ("baseline.optimizer", BASELINE_OPTIMIZERS),
    ):
        require_choice(cfg, f"physics.{key}", choices)
    p = cfg.physics
    share = p.finetune_lsr.share
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share < 1:
        raise ValueError(
            f"physics.finetune_lsr.share must be a number in [0, 1) (0: skip), got {share!r}"
        )
    norm = p.norm if problem.kind in ("function", "evolution") else resolve_norm(problem, p.norm)
    check_options(PHYSICS_PREFIX, _container(p.petsc_options), key="physics.petsc_options")
    ranks = _ilsr_ranks(p.ilsr)
    if not isinstance(p.ilsr.recycle, bool):
        raise ValueError(f"physics.ilsr.recycle must be true or false, got {p.ilsr.recycle!r}")
    if p.precondition != "none" and p.subspace != "krylov":
        raise ValueError(
            f"physics.precondition={p.precondition} needs physics.subspace=krylov, got "
            f"{p.subspace!r}"
        )
    if p.ilsr.recycle and p.subspace != "krylov":
        raise ValueError(f"physics.ilsr.recycle needs physics.subspace=krylov, got {p.subspace!r}")
    if p.ilsr["update"] == "align" and p.ilsr.align_target == "pseudo_time" and norm != "energy":
        raise ValueError(
            "physics.ilsr.align_target=pseudo_time is in the energy norm (linear SPD problems); "
            f"physics.norm resolves to {norm!r} for {problem.name}"
        )
    ilsr = ILSRSettings(
        iterations=p.ilsr.iterations,
        rank=p.rank,
        norm=norm,
        subspace=p.subspace,
        block_size=p.block_size,
        precondition=p.precondition,
        probes=p.probes,
        oversampling=p.oversampling,
        petsc_options=_container(p.petsc_options),
        align=AlignSettings(
            p.ilsr.align_optimizer,
            p.ilsr.align_iterations,
            float(p.ilsr.align_lr),
            p.ilsr.align_target,
            float(p.ilsr.align_dtau),
        ),
        update=p.ilsr["update"],
        recycle=p.ilsr.recycle,
        ranks=ranks,
    )
    return PhysicsStageSettings(
        instances=p.instances,
        ilsr=ilsr,
        baseline_optimizer=p.baseline.optimizer,
        baseline_lr=float(p.baseline.lr),
        finetune_lsr_share=float(share),
        finetune_lsr_rank=p.finetune_lsr.rank,
        **_operator_mode(cfg, n_train),
    )


def _operator_mode(cfg: DictConfig, n_train: int) -> dict:
    """``physics.mode`` and, for ``operator``, the unlabeled training inputs it uses."""
    mode = require_choice(cfg, "physics.mode", PHYSICS_MODES)
    if mode == "instance":
        return {"mode": mode}
    inputs = require_int(cfg, "physics.operator.inputs", minimum=1)
    select = require_int(cfg, "physics.operator.select", minimum=0)
    if inputs + select > n_train:
        raise ValueError(
            f"physics.operator.inputs + physics.operator.select = {inputs} + {select} must be "
            f"at most data.n_train={n_train} (both are drawn from the training inputs)"
        )
    return {"mode": mode, "operator_inputs": inputs, "operator_select": select}


def _ilsr_ranks(ilsr: DictConfig) -> tuple[int, ...] | None:
    """``physics.ilsr.ranks``: None, or one positive integer per outer iteration."""
    ranks = ilsr.get("ranks")
    if ranks is None:
        return None
    ranks = OmegaConf.to_container(ranks) if OmegaConf.is_list(ranks) else ranks
    if (
        not isinstance(ranks, list)
        or len(ranks) != ilsr.iterations
        or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in ranks)
    ):
        raise ValueError(
            "physics.ilsr.ranks must be null or a list of positive integers, one per outer "
            f"iteration (physics.ilsr.iterations={ilsr.iterations}), got {ranks!r}"
        )
    return tuple(ranks)


def resolve_norm(problem: problems.PDEProblem, norm: str) -> str:
    """``physics.norm`` for ``problem``: ``auto`` is ``energy`` for symmetric problems and ``dual``
    (through the SPD weighting the problem defines) for the others: nonlinear ones (the SPD part
    of the Jacobian) and linear ones whose ``forms`` add a weighting (``cdr``).

    Raises:
        ValueError: a norm the problem cannot provide.
    """
    operator = "Jacobian" if problem.kind == "nonlinear" else "operator"
    if norm == "auto":
        return "energy" if problem.symmetric else "dual"
    if norm == "energy" and not problem.symmetric:
        raise ValueError(
            f"physics.norm=energy needs a symmetric operator; the {operator} of {problem.name} "
            "is not (use dual or auto)"
        )
    if norm == "dual" and problem.symmetric:
        raise ValueError(
            f"physics.norm=dual needs an SPD weighting operator, which {problem.name} does not "
            "define (its operator is SPD: use energy or auto)"
        )
    return norm


def _check_fem_solver(problem: problems.PDEProblem, fem: FEMSettings) -> None:
    """The FEM solver's options: PETSc must accept them (a dry KSP, or SNES for a nonlinear
    problem), and a symmetric-only solver for a problem whose operator is not symmetric is
    refused; LU (the default) or GMRES fit."""
    solver = "snes" if problem.kind in ("nonlinear", "evolution") else "ksp"
    check_options(fem.prefix, fem.petsc_options, key="fem.petsc_options", solver=solver)
    if problem.symmetric:
        return
    options = flatten_options(fem.petsc_options)
    for key, symmetric_only in SYMMETRIC_ONLY.items():
        if options.get(key) in symmetric_only:
            raise ValueError(
                f"fem.petsc_options.{key}={options[key]} needs a symmetric matrix, but the "
                f"operator of {problem.name} is not symmetric (use ksp_type=preonly with "
                "pc_type=lu, or gmres)"
            )


def _check_evolution(settings: RunSettings) -> None:
    """An evolution problem (``burgers``) runs on its own periodic mesh and has data LSR only."""
    name = settings.problem.name
    if settings.physics.instances:
        raise ValueError(
            f"physics.instances={settings.physics.instances}: physics LSR is not available for "
            f"problem={name} (a time-dependent PDE: the physics stage refines against the residual "
            f"of a steady FEM problem). Its data LSR runs with method=lsr; set physics.instances=0 "
            f"(problem={name}'s default)"
        )
    if settings.mesh.file is not None or settings.mesh.dirichlet_tags is not None:
        raise ValueError(
            f"problem={name} runs on the periodic unit interval (problem.resolution grid nodes, "
            f"problem.params.refinement cells each): mesh.file and mesh.dirichlet_tags must be "
            f"null, got {settings.mesh.file!r} and {settings.mesh.dirichlet_tags!r}"
        )


def _check_method(settings: RunSettings) -> None:
    """What the chosen method needs of the model; the model's arguments (by building it)."""
    if settings.model is not None and settings.model_file is None:
        build_configured_model(settings)  # raises ValueError for bad model arguments
    if settings.method == "lsr" and not settings.has_model:
        raise ValueError("method=lsr needs a model: choose model=... or checkpoint=PATH")
    if settings.model_file is not None and settings.train.resume:
        raise ValueError(
            "train.resume=true continues the training in hydra.run.dir, checkpoint=PATH skips "
            "training: choose one"
        )
    if settings.method != "gnvpro":
        return
    if settings.model_file is not None:
        raise ValueError(
            "method=gnvpro trains a new model; to use checkpoint=PATH choose method=none or "
            "method=lsr"
        )
    if settings.model is None:
        raise ValueError("method=gnvpro needs a model to train: choose model=deeponet or model=mlp")
    if settings.train.resume:
        raise ValueError("train.resume applies to gradient training only, not to method=gnvpro")
    from pinn_lsr.vpro import as_separable

    try:
        as_separable(build_configured_model(settings))
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"method=gnvpro cannot train model={settings.model.name}: GNvpro eliminates the "
            "network's final affine layer, which model=deeponet and model=mlp have; choose one "
            f"of them ({exc})"
        ) from None


def build_configured_model(settings: RunSettings):
    """The model ``settings.model`` for the problem (:func:`configured_model_spec`).

    Raises:
        ValueError: bad model arguments, or a model that does not fit the problem.
    """
    from pinn_lsr.models import build_model

    name, kwargs = configured_model_spec(settings)
    return build_model(name, **kwargs)


def configured_model_spec(settings: RunSettings) -> tuple[str, dict]:
    """``(name, kwargs)`` of the model ``settings.model`` for the problem: the model group's
    options and the arguments :func:`problem_model_arguments` fixes. Local.

    Raises:
        ValueError: a model that does not fit the problem.
    """
    name = settings.model.name
    fixed = problem_model_arguments(settings.problem, settings.resolution, name)
    return name, {**settings.model.options, **fixed}


def problem_model_arguments(problem: problems.Problem, resolution: int, name: str) -> dict:
    """The arguments of model ``name`` that the problem and resolution fix: grid operators take
    the s × s grid (an MLP maps the flattened grid to itself), or the s-node 1D grid of an
    evolution problem (``dim=1``); function fitting takes an MLP from 2 inputs to 1 output. A
    vector problem (``components = c > 1``) gets c output channels (MLP: c·s·s outputs). Local.

    Raises:
        ValueError: a model that does not fit the problem.
    """
    s = resolution
    if problem.kind == "function":
        if name != "mlp":
            raise ValueError(
                f"problem={problem.name} fits a function of (x, y): use model=mlp, not {name}"
            )
        return {"in_features": 2, "out_features": 1}
    n_nodes = math.prod(problems.grid_shape(problem, s))
    if name == "mlp":
        return {"in_features": n_nodes, "out_features": problem.components * n_nodes}
    channels = problem.components
    return {
        "grid_size": s,
        **({"dim": 1} if problem.kind == "evolution" else {}),
        **({"out_channels": channels} if channels > 1 else {}),
    }


def mesh_identity(settings: RunSettings) -> str:
    """What data and trained models depend on about the mesh: the unit square's resolution, the
    periodic interval's cells (evolution problems), or the mesh file's name and content hash.
    Local."""
    if settings.problem.kind == "evolution":
        return f"periodic_interval({settings.resolution * settings.problem.refinement})"
    if settings.mesh.file is None:
        return f"unit_square({settings.resolution - 1})"
    digest = hashlib.sha256(Path(settings.mesh.file).read_bytes()).hexdigest()[:16]
    return f"{Path(settings.mesh.file).name}:sha256={digest}"
