"""Shared fixtures. Tests mirror the package layout; tests/mpi runs under ``mpirun -n 2``."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import pytest

MESHES = Path(__file__).parents[1] / "meshes"


@pytest.fixture
def lshape_msh() -> Path:
    """The L-shaped gmsh mesh shipped in meshes/ (physical groups: domain 1, curves 2 and 3)."""
    return MESHES / "lshape.msh"
