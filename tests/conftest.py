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


@pytest.fixture(scope="session")
def darcy_samples():
    """``make(n, size, seed) -> (a (n, size, size), u (n, size*size))``: Darcy FEM data, float64
    tensors."""
    import numpy as np
    import torch
    from mpi4py import MPI

    import problems
    from pinn_lsr.fem.linear_pde import LinearPDE
    from pinn_lsr.fem.mesh import unit_square

    def make(n: int, size: int, seed: int):
        darcy = problems.create_problem("darcy")
        pde = LinearPDE(unit_square(MPI.COMM_SELF, size - 1), darcy.forms, grid_size=size)
        a = darcy.sample_inputs(n, size, seed=seed)
        u = []
        for field in a:
            pde.solve(field)
            u.append(pde.solution_on_grid().ravel())
        pde.destroy()
        return torch.as_tensor(a), torch.as_tensor(np.array(u))

    return make
