"""Coupling with a user's FEM system over 2 ranks gives the 1-rank answer; bad input on one rank
raises on both (no hang)."""

import runpy
import sys
from pathlib import Path

import dolfinx_solver  # noqa: F401
import numpy as np
import pytest
import ufl
from mpi4py import MPI

import dolfinx.fem
from pinn_lsr.fem.norms import matrix_norm
from pinn_lsr.physics.instances import FEMInstances
from pinn_lsr.physics.refine import refine_physics
from tests.physics.coupling_cases import from_builtin, user_forms_instances, tiny_deeponet
from tests.physics.physics_cases import tiny_fno

EXAMPLE = Path(__file__).parents[2] / "examples" / "couple_dolfinx.py"


def close(a, b, rtol=1e-10):
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * np.abs(b).max())


def test_user_petsc_pair_two_ranks_equal_one_and_the_builtin_path(comm, instances):
    model = tiny_fno(8)
    grids = {}
    for name, fem in instances.items():
        coupled = from_builtin(fem, to_dofs=fem.to_dofs)
        result = refine_physics(coupled.residual(model), 10)
        builtin = refine_physics(fem.residual(model), 10)
        assert result.report.rank == builtin.report.rank == 10
        for x, y in zip(result.fields, builtin.fields):
            close(x, y)
        grids[name] = fem.on_grid(result.fields)
        coupled.destroy()
    close(grids["parallel"], grids["serial"], rtol=1e-8)


def test_deeponet_at_the_dofs_two_ranks_equal_one(comm, instances):
    model = tiny_deeponet(8)
    grids = {
        name: fem.on_grid(refine_physics(fem.residual(model, evaluate_at="dofs"), 10).fields)
        for name, fem in instances.items()
    }
    close(grids["parallel"], grids["serial"], rtol=1e-8)


def test_user_forms_and_exported_function_two_ranks_equal_one(comm):
    mu = np.array([0.6, -0.4])
    figures = {}
    for name, c in (("parallel", MPI.COMM_WORLD), ("serial", MPI.COMM_SELF)):
        model = tiny_deeponet(8)
        for evaluate_at in ("grid", "dofs"):
            _, coupled = user_forms_instances(c, mu, evaluate_at=evaluate_at)
            result = refine_physics(coupled.residual(model), 12)
            refined = coupled.to_function(result.fields[0])
            # the Function's L2 norm assembled over cells (ghosts needed) equals the dof values'
            # mass norm
            l2 = np.sqrt(
                c.allreduce(
                    dolfinx.fem.assemble_scalar(dolfinx.fem.form(refined * refined * ufl.dx))
                )
            )
            assert l2 == pytest.approx(
                matrix_norm(coupled.mass_matrix(), result.fields[0]), rel=1e-12
            )
            figures[name, evaluate_at] = (
                coupled.errors(coupled.network_fields(model))[0],
                coupled.errors(result.fields)[0],
                l2,
                result.report.residual_l2_after,
            )
            coupled.destroy()
    for evaluate_at in ("grid", "dofs"):
        assert figures["parallel", evaluate_at] == pytest.approx(
            figures["serial", evaluate_at], rel=1e-8
        )
        assert figures["serial", evaluate_at][1] < figures["serial", evaluate_at][0]


def test_bad_input_on_one_rank_raises_on_every_rank(comm, instances):
    fem = instances["parallel"]
    P = fem.to_dofs if comm.rank == 0 else fem.to_dofs[:-1]
    with pytest.raises(ValueError, match="to_dofs has .* rows but A has .* local rows"):
        FEMInstances.from_petsc(
            [s.A for s in fem.systems], [s.b for s in fem.systems], fem.inputs, to_dofs=P
        )


def test_example_runs_on_two_ranks(comm, shared_tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        sys, "argv", [str(EXAMPLE), "--out", str(shared_tmp_path / "out"), "--rank", "16"]
    )
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    assert (shared_tmp_path / "out" / "refined.xdmf").is_file()
    if comm.rank == 0:
        assert "refined" in capsys.readouterr().out
