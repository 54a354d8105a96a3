import pytest
from petsc4py import PETSc

from pinn_lsr.fem.options import flatten_options, options_inserted


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
