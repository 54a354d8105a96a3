from pathlib import Path

import gmsh
import meshio
import numpy as np
import pytest
from mpi4py import MPI

import dolfinx.io
from pinn_lsr.fem.mesh import read_mesh, unit_square


def write_gmsh_box(path: Path, *, dim: int = 2, physical: bool = True) -> Path:
    """A unit square (dim 2) or cube (dim 3) meshed by gmsh, optionally without physical groups."""
    gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        if dim == 2:
            tag = gmsh.model.occ.addRectangle(0, 0, 0, 1, 1)
        else:
            tag = gmsh.model.occ.addBox(0, 0, 0, 1, 1, 1)
        gmsh.model.occ.synchronize()
        if physical:
            gmsh.model.addPhysicalGroup(dim, [tag], 1)
        gmsh.option.setNumber("Mesh.MeshSizeMax", 0.3)
        gmsh.model.mesh.generate(dim)
        gmsh.write(str(path))
    finally:
        gmsh.finalize()
    return path


def test_unit_square_counts():
    domain = unit_square(MPI.COMM_WORLD, 4)
    assert domain.mesh.topology.index_map(2).size_global == 32
    lower, upper = domain.bounding_box
    np.testing.assert_allclose(lower, [0, 0])
    np.testing.assert_allclose(upper, [1, 1])
    with pytest.raises(ValueError, match="at least 1 cell"):
        unit_square(MPI.COMM_WORLD, 0)


def test_reads_gmsh_file_with_boundary_markers(lshape_msh):
    domain = read_mesh(lshape_msh, MPI.COMM_WORLD)
    assert domain.mesh.topology.dim == 2
    assert set(np.unique(domain.facet_tags.values)) == {2, 3}
    cells = meshio.read(lshape_msh).get_cells_type("triangle")
    assert domain.mesh.topology.index_map(2).size_global == len(cells)
    lower, upper = domain.bounding_box
    np.testing.assert_allclose(upper - lower, [1, 1])


def test_xdmf_round_trip(tmp_path, lshape_msh):
    domain = read_mesh(lshape_msh, MPI.COMM_WORLD)
    with dolfinx.io.XDMFFile(MPI.COMM_WORLD, str(tmp_path / "l.xdmf"), "w") as xdmf:
        xdmf.write_mesh(domain.mesh)
    again = read_mesh(tmp_path / "l.xdmf", MPI.COMM_WORLD)
    assert (
        again.mesh.topology.index_map(2).size_global
        == domain.mesh.topology.index_map(2).size_global
    )
    assert again.facet_tags is None


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.msh does not exist"):
        read_mesh(tmp_path / "nowhere.msh", MPI.COMM_WORLD)


def test_broken_msh_names_the_file(tmp_path):
    broken = tmp_path / "broken.msh"
    broken.write_text("$MeshFormat\n4.1 0 8\n$EndMeshFormat\n$Nodes\ngarbage\n")
    with pytest.raises(ValueError, match="broken.msh"):
        read_mesh(broken, MPI.COMM_WORLD)


def test_truncated_msh_is_rejected(tmp_path, lshape_msh):
    truncated = tmp_path / "truncated.msh"
    truncated.write_bytes(lshape_msh.read_bytes()[: lshape_msh.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.msh"):
        read_mesh(truncated, MPI.COMM_WORLD)


def test_msh_without_physical_groups_is_rejected(tmp_path):
    path = write_gmsh_box(tmp_path / "nogroups.msh", physical=False)
    with pytest.raises(ValueError, match="no physical group"):
        read_mesh(path, MPI.COMM_WORLD)


def test_3d_mesh_for_2d_problem_is_rejected(tmp_path):
    path = write_gmsh_box(tmp_path / "cube.msh", dim=3)
    with pytest.raises(ValueError, match="3D mesh, expected 2D"):
        read_mesh(path, MPI.COMM_WORLD)


def test_empty_mesh_is_rejected(tmp_path):
    path = tmp_path / "empty.msh"
    path.write_text("$MeshFormat\n4.1 0 8\n$EndMeshFormat\n")
    with pytest.raises(ValueError, match="no cells"):
        read_mesh(path, MPI.COMM_WORLD)


def test_unknown_suffix_and_xdmf_without_data(tmp_path):
    (tmp_path / "mesh.vtk").write_text("x")
    with pytest.raises(ValueError, match="unknown format '.vtk'"):
        read_mesh(tmp_path / "mesh.vtk", MPI.COMM_WORLD)
    domain = unit_square(MPI.COMM_WORLD, 2)
    with dolfinx.io.XDMFFile(MPI.COMM_WORLD, str(tmp_path / "m.xdmf"), "w") as xdmf:
        xdmf.write_mesh(domain.mesh)
    (tmp_path / "m.h5").unlink()
    with pytest.raises(ValueError, match="m.h5, which does not exist"):
        read_mesh(tmp_path / "m.xdmf", MPI.COMM_WORLD)
    (tmp_path / "bad.xdmf").write_text("<Xdmf><Domain>")
    with pytest.raises(ValueError, match="not valid XDMF"):
        read_mesh(tmp_path / "bad.xdmf", MPI.COMM_WORLD)


def test_vtu_without_triangles_or_unreadable_is_rejected(tmp_path):
    lines = tmp_path / "lines.vtu"
    meshio.write_points_cells(
        lines, np.array([[0, 0, 0], [1, 0, 0.0]]), [("line", np.array([[0, 1]]))]
    )
    with pytest.raises(ValueError, match="lines.vtu holds no linear triangles"):
        read_mesh(lines, MPI.COMM_WORLD)
    (tmp_path / "broken.vtu").write_text("<VTKFile")
    with pytest.raises(ValueError, match="broken.vtu could not be read by meshio"):
        read_mesh(tmp_path / "broken.vtu", MPI.COMM_WORLD)
