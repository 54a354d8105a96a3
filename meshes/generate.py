"""Regenerate every ``meshes/*.msh`` from its ``.geo`` source with the gmsh Python package.

Usage: ``.venv/bin/python meshes/generate.py [name.geo ...]`` (default: all .geo files here).
"""

import sys
from pathlib import Path

import gmsh


def generate(geo: Path, dim: int = 2) -> Path:
    """Mesh ``geo`` in ``dim`` dimensions and write ``geo`` with suffix ``.msh`` (format 4.1)."""
    msh = geo.with_suffix(".msh")
    gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.option.setNumber("Mesh.MshFileVersion", 4.1)
        gmsh.open(str(geo))
        gmsh.model.mesh.generate(dim)
        gmsh.write(str(msh))
    finally:
        gmsh.finalize()
    return msh


if __name__ == "__main__":
    here = Path(__file__).parent
    sources = [Path(p) for p in sys.argv[1:]] or sorted(here.glob("*.geo"))
    for source in sources:
        print(f"{source} -> {generate(source)}")
