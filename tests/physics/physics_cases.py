"""Small FEM cases shared by the physics-LSR tests (serial and under MPI)."""

import numpy as np
import torch
from mpi4py import MPI
from torch import nn

import problems
from pinn_lsr.fem.linear_pde import LinearPDE
from pinn_lsr.fem.mesh import unit_square
from pinn_lsr.fem.nonlinear_pde import NonlinearPDE
from pinn_lsr.physics.instances import FEMInstances
from pinn_lsr.models import build_model
from pinn_lsr.models.parameters import set_precision


class FieldModel(nn.Module):
    """u_θ(a) = θ + 0.1 * tanh(W a): every grid field is reachable (J contains the identity)."""

    def __init__(self, n_grid: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.field = nn.Parameter(0.01 * torch.randn(n_grid, generator=g, dtype=torch.float64))
        self.mix = nn.Parameter(
            0.01 * torch.randn(n_grid, n_grid, generator=g, dtype=torch.float64)
        )

    def forward(self, a):
        return self.field + 0.1 * torch.tanh(a.reshape(len(a), -1) @ self.mix.T)


def darcy_instances(comm: MPI.Comm, size: int = 6, n: int = 2, seed: int = 0) -> FEMInstances:
    return problem_instances("darcy", comm, size=size, n=n, seed=seed)


def problem_instances(
    name: str, comm: MPI.Comm, size: int = 6, n: int = 2, seed: int = 0
) -> FEMInstances:
    """``n`` instances of a built-in linear or nonlinear problem on a ``size``² grid."""
    problem = problems.create_problem(name)
    domain = unit_square(comm, size - 1)
    if problem.kind == "nonlinear":
        pde = NonlinearPDE(domain, problem.residual, problem.weight, grid_size=size)
    else:
        pde = LinearPDE(domain, problem.forms, grid_size=size)
    return FEMInstances.from_pde(pde, problem.sample_inputs(n, size, seed=seed))


def tiny_fno(size: int) -> nn.Module:
    torch.manual_seed(0)
    return set_precision(
        build_model("fno", grid_size=size, modes=4, width=8, layers=2), torch.float64
    )


def dense(mat) -> np.ndarray:
    """A serial PETSc matrix as a numpy array."""
    return mat.convert("dense").getDenseArray().copy()
