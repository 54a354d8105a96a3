import re

import dolfinx_solver  # noqa: F401  (orders mpi4py before petsc4py)
import pytest
from petsc4py import PETSc

from pinn_lsr.fem.options import check_options, flatten_options, options_inserted


def test_flatten_nested_and_flags():
    flat = flatten_options(
        {"ksp": {"type": "cg", "monitor": None}, "pc_type": "jacobi", "ksp_norm": True}
    )
    assert flat == {"ksp_type": "cg", "ksp_monitor": "", "pc_type": "jacobi", "ksp_norm": "true"}


def test_options_inserted_then_removed_and_user_options_win():
    database = PETSc.Options()
    database.setValue("opt_test_ksp_type", "gmres")  # as if given by the user
    try:
        with options_inserted("opt_test_", {"ksp_type": "cg", "pc_type": "none"}):
            assert database.getString("opt_test_ksp_type") == "gmres"
            assert database.getString("opt_test_pc_type") == "none"
        assert not database.hasName("opt_test_pc_type")
        assert database.getString("opt_test_ksp_type") == "gmres"
    finally:
        database.delValue("opt_test_ksp_type")


@pytest.mark.parametrize("prefix", ["", "fem"])
def test_prefix_must_end_in_underscore(prefix):
    with pytest.raises(ValueError, match="end in '_'"):
        with options_inserted(prefix, {}):
            pass


@pytest.mark.parametrize(
    "options, solver, message",
    [
        (
            {"ksp_type": "nosuch"},
            "ksp",
            "t.ksp_type=nosuch is refused by PETSc: Unable to find requested KSP type nosuch",
        ),
        ({"ksp_type": "cg", "pc": {"type": "nosuch"}}, "ksp", "t.pc_type=nosuch is refused"),
        ({"ksp_rtol": "small"}, "ksp", "t.ksp_rtol=small is refused"),
        ({"snes_type": "newtonish"}, "snes", "SNES type newtonish"),
        ({"ksp_type": "nosuch"}, "snes", "KSP type nosuch"),
    ],
)
def test_options_petsc_refuses_are_named_with_their_key(options, solver, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_options("check_", options, key="t", solver=solver)
    assert not any(name.startswith("check_") for name in PETSc.Options().getAll())


def test_options_petsc_accepts_pass():
    check_options("check_", {"ksp_type": "gmres", "ksp_rtol": 1e-8, "pc_type": "jacobi"}, key="t")
    check_options(
        "check_", {"snes_type": "newtonls", "snes_linesearch_type": "bt"}, key="t", solver="snes"
    )
    check_options("check_", None, key="t")
