"""Conversion through meshio: msh -> XDMF (with facet tags) and .vtu, read back by read_mesh."""

from pathlib import Path

import meshio
import numpy as np
import pytest
import ufl
from mpi4py import MPI

import dolfinx.fem
from pinn_lsr.fem.mesh import Domain, read_mesh
from pinn_lsr.fem.mesh import convert_mesh
from pinn_lsr.io.meshio_io import read_triangles

MESHES = Path(__file__).parents[2] / "meshes"


def measures(domain: Domain) -> tuple[int, int, float, dict[int, float]]:
    """Global vertices, cells, area and boundary length per facet tag. Collective."""
    mesh, comm = domain.mesh, domain.mesh.comm
    one = dolfinx.fem.Constant(mesh, 1.0)

    def integral(measure):
        return comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(one * measure)))

    ds = ufl.Measure("ds", domain=mesh, subdomain_data=domain.facet_tags)
    tags = sorted(set().union(*comm.allgather(set(np.unique(domain.facet_tags.values).tolist()))))
    return (
        mesh.topology.index_map(0).size_global,
        mesh.topology.index_map(2).size_global,
        integral(ufl.dx),
        {tag: integral(ds(tag)) for tag in tags},
    )


def write_vtu(source: Path, target: Path) -> Path:
    mesh = meshio.read(source)
    mesh.cell_sets = {}  # meshio's vtu writer trips over gmsh's cell sets
    meshio.write(target, mesh)
    return target


def assert_same(a, b):
    assert a[:2] == b[:2] and abs(a[2] - b[2]) < 1e-12 and a[3].keys() == b[3].keys()
    assert all(abs(a[3][tag] - b[3][tag]) < 1e-12 for tag in a[3])


@pytest.mark.parametrize("name", ["lshape", "disk", "plate_holes"])
def test_msh_to_xdmf_and_back_is_the_same_mesh(tmp_path, name):
    msh = MESHES / f"{name}.msh"
    target = convert_mesh(msh, tmp_path / f"{name}.xdmf")
    original, converted = (
        measures(read_mesh(msh, MPI.COMM_WORLD)),
        measures(read_mesh(target, MPI.COMM_WORLD)),
    )
    assert_same(original, converted)
    assert original[0] == len(meshio.read(msh).points)


def test_plate_with_holes_has_the_documented_tags():
    vertices, _, area, lengths = measures(read_mesh(MESHES / "plate_holes.msh", MPI.COMM_WORLD))
    assert 300 <= vertices <= 1500 and abs(area - (2 - 2 * np.pi * 0.04)) < 5e-3
    assert list(lengths) == [2, 3, 4, 5]
    np.testing.assert_allclose([lengths[2], lengths[3], lengths[4]], [1, 1, 4], atol=1e-12)
    assert abs(lengths[5] - 2 * 2 * np.pi * 0.2) < 2e-2


def test_vtu_reads_like_the_msh(tmp_path, lshape_msh):
    vtu = write_vtu(lshape_msh, tmp_path / "l.vtu")
    assert_same(
        measures(read_mesh(lshape_msh, MPI.COMM_WORLD)), measures(read_mesh(vtu, MPI.COMM_WORLD))
    )


def test_vtu_without_triangles_or_unreadable(tmp_path):
    quads = tmp_path / "quads.vtu"
    meshio.write_points_cells(
        quads, np.array([[0, 0], [1, 0], [1, 1], [0, 1.0]]), [("quad", np.array([[0, 1, 2, 3]]))]
    )
    with pytest.raises(
        ValueError, match=r"quads.vtu holds no linear triangles \(cell types: \['quad'\]\)"
    ):
        read_mesh(quads, MPI.COMM_WORLD)
    with pytest.raises(ValueError, match="quads.vtu holds no linear triangles"):
        convert_mesh(quads, tmp_path / "q.xdmf")
    garbage = tmp_path / "garbage.vtu"
    garbage.write_text("not a vtu")
    with pytest.raises(ValueError, match="garbage.vtu could not be read by meshio"):
        read_mesh(garbage, MPI.COMM_WORLD)


def test_non_planar_points_and_bad_target(tmp_path):
    tilted = tmp_path / "tilted.vtu"
    meshio.write_points_cells(
        tilted, np.array([[0, 0, 0], [1, 0, 0], [0, 1, 1.0]]), [("triangle", np.array([[0, 1, 2]]))]
    )
    with pytest.raises(ValueError, match="not planar"):
        read_triangles(tilted)
    with pytest.raises(ValueError, match="must end in .xdmf"):
        convert_mesh(MESHES / "disk.msh", tmp_path / "disk.vtu")
    with pytest.raises(FileNotFoundError, match="nowhere.msh does not exist"):
        convert_mesh(tmp_path / "nowhere.msh", tmp_path / "x.xdmf")


def test_unused_points_are_dropped():
    triangles = read_triangles(MESHES / "lshape.msh")
    assert triangles.points.shape[1] == 2 and triangles.cells.max() == len(triangles.points) - 1
    assert set(np.unique(triangles.facet_tags)) == {2, 3} and set(
        np.unique(triangles.cell_tags)
    ) == {1}
