"""Conversion through meshio: any mesh meshio reads (gmsh ``.msh``, ``.vtu``, meshio's XDMF, ...)
to the XDMF layout :func:`pinn_lsr.fem.mesh.read_mesh` reads (:func:`pinn_lsr.fem.mesh.convert_mesh`
writes it from what :func:`read_triangles` returns).

The XDMF written by :func:`convert_mesh` is DOLFINx's own: a Grid ``mesh`` (linear triangles,
2D points), plus the MeshTags Grids ``facet_tags`` (boundary lines) and ``cell_tags``
(triangles) when the source carries ``gmsh:physical`` cell data; ``read_mesh`` picks up
``facet_tags`` when present. One file and its ``.h5``: nothing to keep in step beside it.
"""

from dataclasses import dataclass
from pathlib import Path

import meshio
import numpy as np

TAG_KEY = "gmsh:physical"  # the cell data read as physical tags (what meshio names gmsh's)


@dataclass(frozen=True)
class Triangles:
    """A 2D triangle mesh as plain arrays, vertices numbered 0..n-1 and all used by a triangle.

    Attributes:
        points: (n, 2) float64 coordinates.
        cells: (m, 3) int64 vertex indices of the triangles.
        cell_tags: (m,) int32 physical tags of the triangles, or None.
        facets: (k, 2) int64 vertex indices of the tagged boundary lines, or None.
        facet_tags: (k,) int32 their physical tags, or None.
    """

    points: np.ndarray
    cells: np.ndarray
    cell_tags: np.ndarray | None = None
    facets: np.ndarray | None = None
    facet_tags: np.ndarray | None = None


def read_triangles(path: str | Path) -> Triangles:
    """Read ``path`` with meshio and keep its linear triangles, lines and ``gmsh:physical`` tags.
    Local.

    Points are made 2D by dropping z (which must be 0); points no triangle uses are dropped.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: meshio cannot read it, it has no (linear) triangles, or it is not planar.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file {path} does not exist")
    try:
        mesh = meshio.read(path)
    except (
        Exception,
        SystemExit,
    ) as exc:  # ReadError, KeyError, XML errors, ...; sys.exit(1) when no reader fits
        reason = (
            "no reader accepts it"
            if isinstance(exc, SystemExit)
            else f"{type(exc).__name__}: {exc}"
        )
        raise ValueError(f"mesh file {path} could not be read by meshio: {reason}") from None
    types = sorted({block.type for block in mesh.cells})
    blocks = {"triangle": [], "line": []}
    for index, block in enumerate(mesh.cells):
        if block.type in blocks:
            tags = mesh.cell_data.get(TAG_KEY, [None] * len(mesh.cells))[index]
            blocks[block.type].append((np.asarray(block.data, dtype=np.int64), tags))
    if not blocks["triangle"] or not sum(len(cells) for cells, _ in blocks["triangle"]):
        raise ValueError(
            f"mesh file {path} holds no linear triangles (cell types: {types or 'none'})"
        )
    points = np.asarray(mesh.points, dtype=np.float64)
    if points.shape[1] == 3:
        if np.abs(points[:, 2]).max(initial=0.0) > 1e-12 * max(1.0, np.abs(points[:, :2]).max()):
            raise ValueError(f"mesh file {path} is not planar: its points have nonzero z")
        points = points[:, :2]
    cells, cell_tags = _stack(blocks["triangle"])
    used, cells = np.unique(cells, return_inverse=True)
    cells = cells.reshape(-1, 3)
    renumber = np.full(len(points), -1, dtype=np.int64)
    renumber[used] = np.arange(len(used))
    facets, facet_tags = _stack(blocks["line"]) if blocks["line"] else (None, None)
    if facets is not None and facet_tags is not None:
        facets = renumber[facets]
        keep = (facets >= 0).all(axis=1)
        facets, facet_tags = facets[keep], facet_tags[keep]
    else:
        facets = facet_tags = None
    return Triangles(np.ascontiguousarray(points[used]), cells, cell_tags, facets, facet_tags)


def _stack(
    blocks: list[tuple[np.ndarray, np.ndarray | None]],
) -> tuple[np.ndarray, np.ndarray | None]:
    """Concatenate cell blocks; their tags too if every block has some."""
    cells = np.concatenate([cells for cells, _ in blocks])
    if any(tags is None for _, tags in blocks):
        return cells, None
    return cells, np.concatenate([np.asarray(tags) for _, tags in blocks]).astype(np.int32)
