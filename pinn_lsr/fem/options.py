"""PETSc options: nested YAML-style dicts flattened under an object's prefix.

``{"ksp": {"type": "lsqr"}}`` under prefix ``physics_`` becomes ``-physics_ksp_type lsqr``,
as firedrake does. Options already in PETSc's database (from the ``PETSC_OPTIONS`` environment
variable or the command line) win over the ones given here.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

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
