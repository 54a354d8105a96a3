import numpy as np
import pytest
import torch
from mpi4py import MPI

import problems
from pinn_lsr.fem.linear_pde import LinearPDE
from pinn_lsr.fem.mesh import unit_square

S = 8


@pytest.fixture(scope="session")
def darcy_tensors():
    """24 Darcy samples on an 8 × 8 grid (FEM reference), float64: (inputs (24, 8, 8), targets (24, 64))."""
    darcy = problems.create_problem("darcy")
    pde = LinearPDE(unit_square(MPI.COMM_SELF, S - 1), darcy.forms, grid_size=S)
    a = darcy.sample_inputs(24, S, seed=0)
    u = []
    for field in a:
        pde.solve(field)
        u.append(pde.solution_on_grid().ravel())
    return torch.as_tensor(a), torch.as_tensor(np.array(u))
