"""The settings of one data LSR (:func:`pinn_lsr.lsr.refine.refine`), validated once.

:class:`LSRSettings` is built by the library (``refine(model, x, y, rank=40)``) or from the
``method`` block of the configuration (:meth:`LSRSettings.from_mapping` with
``prefix="method."``): both apply the same rules, and the messages name the key as the caller
wrote it. Checks that need the data (the rank against the parameter and row counts, the rows
left by ``row_fraction``, NaN in the residual) are made by ``refine``.
"""

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pinn_lsr.lsr.reduced import REDUCTIONS
from pinn_lsr.lsr.subspace import DISTRIBUTIONS
from pinn_lsr.parallel.device import check_device

SOLVERS = ("streaming", "dense", "lsqr")
DTYPES = ("float32", "float64")
DATA_SUBSPACES = ("randomized", "krylov", "random")
ENGINES = ("lean", "plain")


@dataclass(frozen=True)
class LSRSettings:
    """Every option of a data LSR, grouped below by the phase that uses it (the modules named
    there document them). Frozen; raises ValueError on construction for a bad value."""

    # rank planning (pinn_lsr.lsr.planning, pinn_lsr.lsr.budget)
    rank: int | None = None  # r; None: the largest rank the budget affords (rank caps it)
    memory_budget_gb: float | None = None  # summed over the MPI ranks
    time_budget_minutes: float | None = None
    validation_fraction: float = 0.2  # share of the training samples the run stage holds out
    # residual
    relative: bool = True  # weigh samples by 1/||y_i|| (relative errors) instead of plain MSE
    parameters: tuple[str, ...] | None = None  # names or name prefixes of the refined tensors
    fraction: float | None = None  # refine a random fraction of the selected entries only
    # subspace construction (pinn_lsr.lsr.basis)
    subspace: str = "randomized"  # one of DATA_SUBSPACES
    krylov_patience: float | None = 2.0  # krylov: stop at this many times the best rank
    oversampling: int = 10  # p: randomized sketch of r + p columns
    power_iterations: int = 0
    distribution: str = "gaussian"  # of Ω: one of pinn_lsr.lsr.subspace.DISTRIBUTIONS
    scaled: bool = True  # V = right singular vectors / singular values
    row_fraction: float | None = None  # find the subspace on this fraction of the samples
    engine: str = "lean"  # randomized: lean (pinn_lsr.lsr.lean) or plain (the paper's recipe)
    block_columns: int = 256  # lean: tangents per product block
    # reduction (pinn_lsr.lsr.reduction)
    solver: str = "streaming"  # streaming (block QR over row chunks) | dense | lsqr (PETSc)
    reduction: str = "qr"  # streaming: qr (Householder) | gram (normal equations)
    petsc_options: Mapping | None = None  # lsqr: options under the prefix lsr_
    # restarts (pinn_lsr.lsr.restart): lean engine, randomized subspace
    restart_dir: str | Path | None = None  # where sketch, projection and reduction pieces live
    restart_seconds: float = 300.0  # period of saving the reduced factor so far
    # validation scan (pinn_lsr.lsr.scan)
    scan_ranks: tuple[int, ...] | None = None  # ranks scored (default: ~20 up to r)
    # Jacobian products
    chunk_samples: int | str = 256  # samples per vectorised product, or "auto" (measured)
    chunk_tangents: int = 64  # tangents per vectorised product
    seed: int = 0  # of Ω, the parameter fraction, the row subset and the LSQR sketch
    dtype: str | None = None  # precision of products, basis and refined predictor: one of DTYPES
    #   (a copy of the model is cast); None: the model's
    device: str = "cpu"  # cpu | cuda | cuda:N: where products, sketch, basis and the gram
    #   reduction run (a copy of the model is moved; the result is on the CPU)

    def __post_init__(self):
        check(self.as_dict())
        for name in ("parameters", "scan_ranks"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.petsc_options is not None:
            object.__setattr__(self, "petsc_options", dict(self.petsc_options))

    @property
    def budgeted(self) -> bool:
        """Whether a memory and/or time budget picks the rank."""
        return self.memory_budget_gb is not None or self.time_budget_minutes is not None

    def as_dict(self) -> dict:
        """The fields by name (values as held, not copied)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes) -> "LSRSettings":
        """A copy with ``changes`` applied (``dataclasses.replace``), validated again.

        Raises:
            ValueError: an unknown key (the valid ones are listed) or a bad value.
        """
        _check_keys(changes, "")
        return dataclasses.replace(self, **changes) if changes else self

    @classmethod
    def from_mapping(cls, options: Mapping, *, prefix: str = "") -> "LSRSettings":
        """Settings from a plain mapping, e.g. the ``method`` block of the configuration without
        its ``name``; missing keys take their defaults.

        Args:
            options: field name -> value.
            prefix: put before every key named in a message (``"method."`` for the CLI).

        Raises:
            ValueError: an unknown key (the valid ones are listed) or a bad value.
        """
        _check_keys(options, prefix)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        check({**defaults, **options}, prefix)
        return cls(**options)


def _check_keys(options: Mapping, prefix: str) -> None:
    valid = [f.name for f in dataclasses.fields(LSRSettings)]
    unknown = [key for key in options if key not in valid]
    if unknown:
        raise ValueError(
            f"unknown LSR setting(s) {', '.join(prefix + str(key) for key in unknown)}; "
            f"valid: {', '.join(prefix + key for key in valid)}"
        )


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def _is_int(value, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= minimum


def check(values: Mapping, prefix: str = "") -> None:
    """Apply the rules of :class:`LSRSettings` to ``values`` (every field present). Local.

    Raises:
        ValueError: the first bad value; the message names the key (after ``prefix``) and what
            was received.
    """
    p, v = prefix, values
    budgets = ("memory_budget_gb", "time_budget_minutes")
    for key in budgets:
        if v[key] is not None and not (_is_number(v[key]) and v[key] > 0):
            raise ValueError(f"{p}{key} must be a positive number or null, got {v[key]!r}")
    budgeted = any(v[key] is not None for key in budgets)
    if v["rank"] is None and not budgeted:
        raise ValueError(
            f"{p}rank must be an integer >= 1, got None; give a rank, or a memory and/or time "
            f"budget ({p}memory_budget_gb, {p}time_budget_minutes) to choose it"
        )
    for key, minimum in (
        ("rank", 1),
        ("block_columns", 1),
        ("oversampling", 0),
        ("power_iterations", 0),
        ("chunk_tangents", 1),
        ("seed", 0),
    ):
        if not (key == "rank" and v[key] is None) and not _is_int(v[key], minimum):
            raise ValueError(f"{p}{key} must be an integer >= {minimum}, got {v[key]!r}")
    if v["chunk_samples"] != "auto" and not _is_int(v["chunk_samples"], 1):
        raise ValueError(
            f"{p}chunk_samples must be an integer >= 1 or 'auto', got {v['chunk_samples']!r}"
        )
    for key in ("row_fraction", "fraction"):
        if v[key] is not None and not (_is_number(v[key]) and 0 < v[key] <= 1):
            raise ValueError(f"{p}{key} must be in (0, 1] or null, got {v[key]!r}")
    patience = v["krylov_patience"]
    if patience is not None and not (_is_number(patience) and patience >= 1):
        raise ValueError(f"{p}krylov_patience must be a number >= 1 or null, got {patience!r}")
    if not (_is_number(v["validation_fraction"]) and 0 < v["validation_fraction"] < 1):
        raise ValueError(
            f"{p}validation_fraction must be in (0, 1), got {v['validation_fraction']!r}"
        )
    if not (_is_number(v["restart_seconds"]) and v["restart_seconds"] >= 0):
        raise ValueError(
            f"{p}restart_seconds must be a non-negative number, got {v['restart_seconds']!r}"
        )
    for key in ("relative", "scaled"):
        if not isinstance(v[key], bool):
            raise ValueError(f"{p}{key} must be true or false, got {v[key]!r}")
    for key, choices in (
        ("solver", SOLVERS),
        ("subspace", DATA_SUBSPACES),
        ("distribution", DISTRIBUTIONS),
        ("engine", ENGINES),
        ("reduction", REDUCTIONS),
    ):
        if v[key] not in choices:
            raise ValueError(f"{p}{key} must be one of {choices}, got {v[key]!r}")
    if v["parameters"] is not None and (
        isinstance(v["parameters"], str)
        or not isinstance(v["parameters"], list | tuple)
        or not all(isinstance(name, str) for name in v["parameters"])
    ):
        raise ValueError(
            f"{p}parameters must be a list of parameter names or null, got {v['parameters']!r}"
        )
    if v["scan_ranks"] is not None and (
        not isinstance(v["scan_ranks"], list | tuple)
        or not all(_is_int(r, 1) for r in v["scan_ranks"])
    ):
        raise ValueError(
            f"{p}scan_ranks must be a list of integers >= 1 or null, got {v['scan_ranks']!r}"
        )
    if v["dtype"] is not None and v["dtype"] not in DTYPES:
        raise ValueError(f"{p}dtype must be one of {DTYPES} or null, got {v['dtype']!r}")
    if v["petsc_options"] is not None and not isinstance(v["petsc_options"], Mapping):
        raise ValueError(f"{p}petsc_options must be a mapping or null, got {v['petsc_options']!r}")
    if v["restart_dir"] is not None and (v["engine"] != "lean" or v["subspace"] != "randomized"):
        raise ValueError(
            f"{p}restart_dir needs {p}engine=lean and {p}subspace=randomized, "
            f"got {p}engine={v['engine']} and {p}subspace={v['subspace']}"
        )
    check_device(v["device"])  # the key is ``device`` in the library and on the command line
    if v["device"] != "cpu" and budgeted:
        raise ValueError(
            f"budgets ({p}memory_budget_gb, {p}time_budget_minutes) are predicted for "
            f"device=cpu only, got device={v['device']}"
        )
    if v["subspace"] == "random" and budgeted:
        raise ValueError(
            "budgets are predicted for the randomized and krylov subspaces only, "
            f"got {p}subspace=random"
        )
