"""Meshes: the unit square at a given resolution, the periodic unit interval, or a gmsh ``.msh`` /
XDMF / ``.vtu`` file.

Every reader validates the file on one rank and broadcasts the verdict before any collective,
so a missing or broken file raises the same clear error on every rank instead of hanging.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import dolfinx_solver  # noqa: F401  (orders mpi4py before petsc4py)
import numpy as np
from mpi4py import MPI

import dolfinx
import dolfinx.io
import dolfinx.io.gmsh
import dolfinx.mesh
from pinn_lsr.io.meshio_io import Triangles, read_triangles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Domain:
    """A mesh with its optional markers.

    Attributes:
        mesh: distributed DOLFINx mesh, triangles in 2D (intervals in the plane:
            :func:`periodic_interval`).
        facet_tags: boundary markers from the file's physical groups, or None.
        source: ``"unit_square(n)"``, ``"periodic_interval(n)"`` or the file path, for reports
            and cache keys.
    """

    mesh: dolfinx.mesh.Mesh
    facet_tags: dolfinx.mesh.MeshTags | None
    source: str

    @property
    def bounding_box(self) -> tuple[np.ndarray, np.ndarray]:
        """Global (lower, upper) corners, shape (2,) each, identical on all ranks. Collective."""
        return bounding_box(self.mesh)


def bounding_box(mesh: dolfinx.mesh.Mesh) -> tuple[np.ndarray, np.ndarray]:
    """The (lower, upper) corners of ``mesh``'s (x, y) extent over all ranks, shape (2,) each,
    identical on all ranks (a rank without vertices contributes nothing). Collective."""
    x = mesh.geometry.x[:, :2]
    comm = mesh.comm
    lower = np.empty(2)
    upper = np.empty(2)
    comm.Allreduce(x.min(axis=0) if len(x) else np.full(2, np.inf), lower, op=MPI.MIN)
    comm.Allreduce(x.max(axis=0) if len(x) else np.full(2, -np.inf), upper, op=MPI.MAX)
    return lower, upper


def unit_square(comm: MPI.Comm, n_cells: int) -> Domain:
    """Unit square split into ``n_cells`` × ``n_cells`` squares, each cut into two triangles.

    Collective on ``comm``. With ``n_cells = s - 1`` the vertices are the nodes of the
    ``s × s`` grid used by the operators.
    """
    if int(n_cells) < 1:
        raise ValueError(f"unit_square needs at least 1 cell per side, got {n_cells}")
    mesh = dolfinx.mesh.create_unit_square(
        comm, int(n_cells), int(n_cells), dolfinx.mesh.CellType.triangle
    )
    return Domain(mesh=mesh, facet_tags=None, source=f"unit_square({int(n_cells)})")


def periodic_interval(comm: MPI.Comm, n_cells: int) -> Domain:
    """The periodic unit interval as a closed chain of ``n_cells`` interval cells: the regular
    ``n_cells``-gon of perimeter 1 in the plane, vertex ``j`` at arc length ``j / n_cells``
    (counter-clockwise from (R, 0)).

    DOLFINx has no periodic constraint without dolfinx_mpc; a closed chain has the periodic
    topology itself. Each straight cell of length ``h = 1 / n_cells`` is isometric to the cell
    ``[j h, (j+1) h]`` of the periodic interval, so P1 forms written with the arc-length
    derivative (:func:`arc_length_derivative`) assemble exactly the periodic interval's matrices.
    Built on rank 0 and distributed. Collective on ``comm``.
    """
    import basix.ufl
    import ufl

    n = int(n_cells)
    if n < 3:
        raise ValueError(f"periodic_interval needs at least 3 cells, got {n_cells}")
    angles = 2 * np.pi * np.arange(n) / n
    radius = 1.0 / (2 * n * np.sin(np.pi / n))  # chord 1 / n
    mine = comm.rank == 0
    x = radius * np.column_stack([np.cos(angles), np.sin(angles)]) if mine else np.empty((0, 2))
    cells = np.column_stack([np.arange(n), (np.arange(n) + 1) % n]) if mine else np.empty((0, 2))
    element = ufl.Mesh(basix.ufl.element("Lagrange", "interval", 1, shape=(2,)))
    mesh = dolfinx.mesh.create_mesh(comm, cells.astype(np.int64), element, x)
    return Domain(mesh=mesh, facet_tags=None, source=f"periodic_interval({n})")


def arc_length(points: np.ndarray) -> np.ndarray:
    """The periodic coordinate in [0, 1) of points (n, 2 or 3) on a :func:`periodic_interval`'s
    vertices (their angle over 2π). Local."""
    return (np.arctan2(points[:, 1], points[:, 0]) / (2 * np.pi)) % 1.0


def arc_length_derivative(mesh: dolfinx.mesh.Mesh):
    """``d(f)``: the derivative of a UFL expression along a :func:`periodic_interval`, in the
    counter-clockwise direction whatever a cell's vertex order (the unit tangent ``J / |J|``
    signed by the orientation ``x × J``, constant on a straight cell)."""
    import ufl

    x, J = ufl.SpatialCoordinate(mesh), ufl.Jacobian(mesh)
    tangent = ufl.as_vector([J[0, 0], J[1, 0]])
    tangent = (
        ufl.sign(x[0] * J[1, 0] - x[1] * J[0, 0]) * tangent / ufl.sqrt(ufl.dot(tangent, tangent))
    )
    return lambda f: ufl.dot(ufl.grad(f), tangent)


def read_mesh(path: str | Path, comm: MPI.Comm, *, tdim: int = 2) -> Domain:
    """Read a 2D mesh from a gmsh ``.msh``, an XDMF file or a ``.vtu``.

    Facet tags come from the ``.msh`` physical curves, the MeshTags Grid ``facet_tags`` of an
    XDMF (as :func:`convert_mesh` writes), or the ``gmsh:physical`` data
    of a ``.vtu``'s line cells. A ``.vtu`` is read by meshio on rank 0 and distributed from there.
    Collective on ``comm``.

    Raises:
        FileNotFoundError: the file does not exist (message names it).
        ValueError: unknown suffix, unreadable file, no cells of dimension ``tdim``, no physical
            groups (gmsh), or a mesh of another dimension.
    """
    path = Path(path)
    error, triangles, xdmf_facet_tags = None, None, False
    if comm.rank == 0:
        error = _check_mesh_file(path, tdim)
        if error is None and path.suffix == ".vtu":
            try:
                triangles = read_triangles(path)
            except ValueError as exc:
                error = "invalid", str(exc)
        if error is None and path.suffix == ".xdmf":
            xdmf_facet_tags = _xdmf_has_grid(path, "facet_tags")
    error, xdmf_facet_tags = comm.bcast((error, xdmf_facet_tags), root=0)
    if error is not None:
        kind, message = error
        raise (FileNotFoundError if kind == "missing" else ValueError)(message)

    if path.suffix == ".msh":
        data = dolfinx.io.gmsh.read_from_msh(str(path), comm, rank=0, gdim=tdim)
        mesh, facet_tags = data.mesh, data.facet_tags
    elif path.suffix == ".vtu":
        mesh, facet_tags, _ = mesh_from_triangles(comm, triangles)
    else:
        with dolfinx.io.XDMFFile(comm, str(path), "r") as xdmf:
            mesh = xdmf.read_mesh()
            facet_tags = None
            if xdmf_facet_tags:
                mesh.topology.create_connectivity(mesh.topology.dim - 1, mesh.topology.dim)
                facet_tags = xdmf.read_meshtags(mesh, "facet_tags")
    if mesh.topology.dim != tdim:
        raise ValueError(f"mesh file {path} holds a {mesh.topology.dim}D mesh, expected {tdim}D")
    n_cells = comm.allreduce(mesh.topology.index_map(tdim).size_local, op=MPI.SUM)
    if n_cells == 0:
        raise ValueError(f"mesh file {path} holds no cells of dimension {tdim}")
    return Domain(mesh=mesh, facet_tags=facet_tags, source=str(path))


def mesh_from_triangles(comm: MPI.Comm, triangles: Triangles | None, *, root: int = 0):
    """Distribute the triangle mesh held by rank ``root`` (others pass None) over ``comm``.

    Returns ``(mesh, facet_tags, cell_tags)``, the tags None when ``triangles`` has none.
    Collective on ``comm``.
    """
    import basix.ufl
    import ufl

    from dolfinx.graph import adjacencylist
    from dolfinx.io.utils import distribute_entity_data

    mine = comm.rank == root
    has_tags = comm.bcast(
        (triangles.facet_tags is not None, triangles.cell_tags is not None) if mine else None, root
    )
    x = triangles.points if mine else np.empty((0, 2))
    cells = triangles.cells if mine else np.empty((0, 3), dtype=np.int64)
    element = ufl.Mesh(basix.ufl.element("Lagrange", "triangle", 1, shape=(2,)))
    mesh = dolfinx.mesh.create_mesh(comm, cells, element, x)
    tdim = mesh.topology.dim
    result = []
    for dim, present in ((tdim - 1, has_tags[0]), (tdim, has_tags[1])):
        if not present:
            result.append(None)
            continue
        if not mine:
            entities, values = np.empty((0, dim + 1), dtype=np.int64), np.empty(0, dtype=np.int32)
        elif dim < tdim:
            entities, values = triangles.facets, triangles.facet_tags
        else:
            entities, values = triangles.cells, triangles.cell_tags
        local_entities, local_values = distribute_entity_data(mesh, dim, entities, values)
        mesh.topology.create_connectivity(dim, tdim)
        tags = dolfinx.mesh.meshtags_from_entities(
            mesh, dim, adjacencylist(local_entities), local_values.astype(np.int32, copy=False)
        )
        tags.name = "facet_tags" if dim < tdim else "cell_tags"
        result.append(tags)
    return mesh, *result


def _check_mesh_file(path: Path, tdim: int) -> tuple[str, str] | None:
    """Return ``(kind, message)`` describing what is wrong with the file, or None. Local."""
    if not path.is_file():
        return "missing", f"mesh file {path} does not exist"
    if path.suffix == ".msh":
        return _check_msh(path, tdim)
    if path.suffix == ".xdmf":
        return _check_xdmf(path)
    if path.suffix == ".vtu":
        return (
            None
            if tdim == 2
            else ("invalid", f"mesh file {path}: a .vtu is read as triangles, expected {tdim}D")
        )
    return (
        "invalid",
        f"mesh file {path}: unknown format {path.suffix!r}, expected .msh, .xdmf or .vtu",
    )


def _check_msh(path: Path, tdim: int) -> tuple[str, str] | None:
    import gmsh

    gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        try:
            gmsh.merge(str(path))
        except Exception as exc:  # gmsh raises a bare Exception with its last error
            return "invalid", f"mesh file {path} could not be read by gmsh: {exc}"
        dims = {dim for dim in range(4) if len(gmsh.model.mesh.getElements(dim)[0])}
        top = max(dims, default=-1)
        if top < 0:
            return "invalid", f"mesh file {path} holds no cells"
        if top != tdim:
            return "invalid", f"mesh file {path} holds a {top}D mesh, expected {tdim}D"
        if not gmsh.model.getPhysicalGroups(tdim):
            return "invalid", (
                f"mesh file {path} has no physical group of dimension {tdim}: "
                "dolfinx reads only cells in physical groups (add 'Physical Surface(1) = {...};')"
            )
        return None
    finally:
        gmsh.finalize()


def _check_xdmf(path: Path) -> tuple[str, str] | None:
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return "invalid", f"mesh file {path} is not valid XDMF: {exc}"
    if root.find(".//Grid[@Name='mesh']") is None:
        return "invalid", (
            f"mesh file {path} has no Grid named 'mesh' (write it with XDMFFile.write_mesh, "
            "or convert it with pinn_lsr.fem.mesh.convert_mesh)"
        )
    for item in root.iter("DataItem"):
        if item.get("Format") == "HDF" and item.text:
            heavy = path.parent / item.text.strip().split(":")[0]
            if not heavy.is_file():
                return "invalid", f"mesh file {path} refers to {heavy}, which does not exist"
    return None


def _xdmf_has_grid(path: Path, name: str) -> bool:
    """Whether the (already checked) XDMF file has a Grid called ``name``. Local."""
    import xml.etree.ElementTree as ET

    return ET.parse(path).getroot().find(f".//Grid[@Name='{name}']") is not None


def convert_mesh(source: str | Path, target: str | Path) -> Path:
    """Convert ``source`` (anything meshio reads) to the XDMF ``target`` (and its ``.h5``). Local:
    call it on one rank (it writes through DOLFINx on ``MPI.COMM_SELF``).

    Raises:
        FileNotFoundError, ValueError: as :func:`~pinn_lsr.io.meshio_io.read_triangles`;
            ValueError if ``target`` does not end in ``.xdmf``.
    """
    target = Path(target)
    if target.suffix != ".xdmf":
        raise ValueError(f"convert_mesh writes XDMF: target must end in .xdmf, got {target}")
    triangles = read_triangles(source)
    mesh, facet_tags, cell_tags = mesh_from_triangles(MPI.COMM_SELF, triangles)
    target.parent.mkdir(parents=True, exist_ok=True)
    with dolfinx.io.XDMFFile(MPI.COMM_SELF, str(target), "w") as xdmf:
        xdmf.write_mesh(mesh)
        for tags in (facet_tags, cell_tags):
            if tags is not None:
                xdmf.write_meshtags(
                    tags, mesh.geometry, geometry_xpath="/Xdmf/Domain/Grid[@Name='mesh']/Geometry"
                )
    return target
