"""PETSc options: nested YAML-style dicts flattened under an object's prefix, and checked.

``{"ksp": {"type": "lsqr"}}`` under prefix ``physics_`` becomes ``-physics_ksp_type lsqr``,
as firedrake does. Options already in PETSc's database (from the ``PETSC_OPTIONS`` environment
variable or the command line) win over the ones given here. :func:`check_options` lets PETSc
read them once, dry, so a bad solver name or value is reported before any work.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import dolfinx_solver  # noqa: F401  (orders mpi4py before petsc4py)
from mpi4py import MPI
from petsc4py import PETSc


def flatten_options(options: Mapping | None, parent: str = "") -> dict[str, str]:
    """Flatten nested option dicts: ``{"ksp": {"type": "cg"}} -> {"ksp_type": "cg"}``.

    Booleans become ``"true"/"false"``; ``None`` means a flag given without a value.
    """
    flat: dict[str, str] = {}
    for key, value in (options or {}).items():
        name = f"{parent}_{key}" if parent else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_options(value, name))
        elif isinstance(value, bool):
            flat[name] = "true" if value else "false"
        else:
            flat[name] = "" if value is None else str(value)
    return flat


def check_prefix(prefix: str) -> None:
    """Raise ValueError unless ``prefix`` is non-empty and ends in an underscore."""
    if not prefix or not prefix.endswith("_"):
        raise ValueError(f"a PETSc options prefix must be non-empty and end in '_', got {prefix!r}")


@contextmanager
def options_inserted(prefix: str, options: Mapping | None) -> Iterator[None]:
    """Insert ``options`` under ``prefix`` for the duration of the block, then remove them.

    Local. Entries already present in the options database (set by the user) are kept as they
    are and left in place afterwards.
    """
    check_prefix(prefix)
    database = PETSc.Options()
    inserted = []
    for name, value in flatten_options(options).items():
        full = prefix + name
        if not database.hasName(full):
            database.setValue(full, value)
            inserted.append(full)
    try:
        yield
    finally:
        for full in inserted:
            database.delValue(full)


def check_options(prefix: str, options: Mapping | None, *, key: str, solver: str = "ksp") -> None:
    """Raise ValueError unless PETSc accepts ``options`` under ``prefix``: a dry KSP (``solver=
    "ksp"``) or SNES (``"snes"``, which configures its KSP too) on this process reads them with
    ``setFromOptions``, as the real solver will. Catches unknown types and malformed values,
    not options that are read only during a solve. Local.

    Raises:
        ValueError: naming ``key.option=value`` (the first option PETSc refuses on its own, or
            all of them with ``PETSC_OPTIONS`` when only their combination fails) and PETSc's
            reason.
    """
    flat = flatten_options(options)
    reason = _refusal(prefix, flat, solver)
    if reason is None:
        return
    for name, value in flat.items():
        alone = _refusal(prefix, {name: value}, solver)
        if alone is not None:
            raise ValueError(f"{key}.{name}={value} is refused by PETSc: {alone}")
    raise ValueError(f"{key} (with PETSC_OPTIONS) is refused by PETSc: {reason}")


def _refusal(prefix: str, options: Mapping, solver: str) -> str | None:
    """PETSc's reason for refusing ``options`` under ``prefix`` in a fresh ``solver``, or None."""
    obj = {"ksp": PETSc.KSP, "snes": PETSc.SNES}[solver]().create(MPI.COMM_SELF)
    try:
        obj.setOptionsPrefix(prefix)
        with options_inserted(prefix, options):
            obj.setFromOptions()
            if solver == "ksp":
                obj.getPC().setFromOptions()
        return None
    except PETSc.Error as error:  # its last line without a source location says why
        lines = [line.removeprefix("[0] ") for line in str(error).splitlines()[1:]]
        return ([line for line in lines if "() at " not in line] or [str(error)])[-1]
    finally:
        obj.destroy()
