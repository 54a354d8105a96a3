import numpy as np
import torch
from mpi4py import MPI

import dolfinx.fem
from pinn_lsr.fem.mesh import unit_square
from pinn_lsr.models import build_model


def test_grid_points_and_fem_dof_coordinates_agree_where_they_coincide():
    s = 9
    torch.manual_seed(0)
    model = build_model(
        "deeponet", grid_size=s, latent=8, width=16, depth=2, trunk_width=16, trunk_depth=2
    ).double()
    a = torch.rand(2, s, s, dtype=torch.float64)
    on_grid = model(a)  # (2, s*s), grid nodes in C order
    V = dolfinx.fem.functionspace(unit_square(MPI.COMM_SELF, s - 1).mesh, ("Lagrange", 1))
    dofs = V.tabulate_dof_coordinates()[:, :2]
    on_dofs = model(a, torch.as_tensor(dofs))
    grid_index = np.rint(dofs * (s - 1)).astype(int)
    k = torch.as_tensor(grid_index[:, 0] * s + grid_index[:, 1])
    torch.testing.assert_close(on_dofs, on_grid[:, k], rtol=1e-12, atol=1e-12)
