"""Meshes under 2 ranks: Dirichlet facet tags, .vtu / converted XDMF reading, CLI runs on
meshes/."""

import json
from pathlib import Path

import meshio
import numpy as np
import pytest
from mpi4py import MPI

import problems
from pinn_lsr.run.cli import main
from pinn_lsr.fem.linear_pde import LinearPDE
from pinn_lsr.fem.mesh import convert_mesh, read_mesh
from tests.run.test_cli import SMALL as CLI_SMALL

MESHES = Path(__file__).parents[2] / "meshes"
SMALL = [*CLI_SMALL, "method=none"]


def facet_tag_lengths(domain):
    import ufl

    import dolfinx.fem

    comm = domain.mesh.comm
    ds = ufl.Measure("ds", domain=domain.mesh, subdomain_data=domain.facet_tags)
    one = dolfinx.fem.Constant(domain.mesh, 1.0)
    area = comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(one * ufl.dx)))
    return area, [
        comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(one * ds(t)))) for t in (2, 3)
    ]


@pytest.mark.parametrize("tags", [None, [2], [3]])
def test_dirichlet_tags_same_solution_on_one_and_two_ranks(comm, lshape_msh, tags):
    darcy = problems.create_problem("darcy")
    field = darcy.sample_inputs(1, 16, seed=4)[0]
    grids, norms = [], []
    for c in (MPI.COMM_SELF, comm):
        pde = LinearPDE(read_mesh(lshape_msh, c), darcy.forms, grid_size=16, dirichlet_tags=tags)
        pde.solve(field)
        grids.append(pde.solution_on_grid())
        norms.append(pde.l2_error(lambda x: 0.0))
        pde.destroy()
    assert np.abs(grids[0] - grids[1]).max() < 1e-10 and abs(norms[0] - norms[1]) < 1e-12 * norms[0]
    assert comm.allreduce(np.abs(grids[1] - comm.bcast(grids[1])).max(), op=MPI.MAX) == 0.0


def test_bad_tag_fails_on_every_rank(comm, lshape_msh):
    domain = read_mesh(lshape_msh, comm)
    darcy = problems.create_problem("darcy")
    with pytest.raises(ValueError, match=r"its facet tags are \[2, 3\]"):
        LinearPDE(domain, darcy.forms, grid_size=8, dirichlet_tags=[5])


def test_vtu_and_converted_xdmf_on_two_ranks(comm, shared_tmp_path, lshape_msh):
    if comm.rank == 0:
        mesh = meshio.read(lshape_msh)
        mesh.cell_sets = {}
        meshio.write(shared_tmp_path / "l.vtu", mesh)
        convert_mesh(lshape_msh, shared_tmp_path / "l.xdmf")
    comm.Barrier()
    reference = facet_tag_lengths(read_mesh(lshape_msh, comm))
    for name in ("l.vtu", "l.xdmf"):
        domain = read_mesh(shared_tmp_path / name, comm)
        assert domain.mesh.topology.index_map(2).size_global == len(
            meshio.read(lshape_msh).get_cells_type("triangle")
        )
        area, lengths = facet_tag_lengths(domain)
        assert abs(area - reference[0]) < 1e-12 and np.allclose(lengths, reference[1], atol=1e-12)


def test_bad_vtu_fails_on_every_rank(comm, shared_tmp_path):
    if comm.rank == 0:
        (shared_tmp_path / "bad.vtu").write_text("nothing")
    comm.Barrier()
    with pytest.raises(ValueError, match="bad.vtu could not be read by meshio"):
        read_mesh(shared_tmp_path / "bad.vtu", comm)


@pytest.mark.parametrize(
    "overrides",
    [
        ["problem=darcy", f"mesh.file={MESHES / 'disk.msh'}"],
        ["problem=poisson", f"mesh.file={MESHES / 'lshape.msh'}", "mesh.dirichlet_tags=[2]"],
    ],
)
def test_cli_runs_on_meshes(comm, shared_tmp_path, overrides):
    code = main(
        [
            f"hydra.run.dir={shared_tmp_path / 'run'}",
            f"data.cache_dir={shared_tmp_path / 'cache'}",
            *SMALL,
            *overrides,
        ]
    )
    assert comm.allgather(code) == [0, 0]
    metrics = json.loads((shared_tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_ranks"] == 2 and metrics["mesh"] == overrides[1].split("=", 1)[1]
    assert metrics["fem"]["distributed_vs_dataset_max_abs_diff"] < 1e-10


def test_cli_bad_tag_exits_2_on_every_rank(comm, shared_tmp_path, capsys):
    code = main(
        [
            f"hydra.run.dir={shared_tmp_path / 'run'}",
            f"data.cache_dir={shared_tmp_path / 'cache'}",
            f"mesh.file={MESHES / 'lshape.msh'}",
            "mesh.dirichlet_tags=[2,9]",
        ]
    )
    assert comm.allgather(code) == [2, 2]
    assert not (shared_tmp_path / "run").exists()
    if comm.rank == 0:
        assert "dirichlet_tags [9] not found" in capsys.readouterr().err
