"""A "user's own" DOLFINx problem for the coupling tests (serial and under MPI): a 2 × 1 rectangle,
-div(κ_μ grad u) = 1, u = 0 on the left, u = y(1 - y) on the right, no flux elsewhere."""

from dataclasses import dataclass

import dolfinx_solver  # noqa: F401
import numpy as np
import torch
import ufl
from mpi4py import MPI

import dolfinx.fem
import dolfinx.fem.petsc
import dolfinx.mesh
from pinn_lsr.models import build_model
from pinn_lsr.models.parameters import set_precision


def kappa_values(x, mu):
    return np.exp(
        mu[0] * np.sin(0.5 * np.pi * x[0]) * np.sin(np.pi * x[1])
        + 0.5 * mu[1] * np.cos(np.pi * x[0])
    )


@dataclass
class UserProblem:
    mesh: dolfinx.mesh.Mesh
    V: dolfinx.fem.FunctionSpace
    kappa: dolfinx.fem.Function
    a: ufl.Form
    L: ufl.Form
    bcs: list
    problem: dolfinx.fem.petsc.LinearProblem

    def set_mu(self, mu) -> None:
        self.kappa.interpolate(lambda x: kappa_values(x, mu))

    def solve(self, mu) -> dolfinx.fem.Function:
        self.set_mu(mu)
        return self.problem.solve().copy()


def user_problem(comm: MPI.Comm, nx: int = 12, ny: int = 6) -> UserProblem:
    mesh = dolfinx.mesh.create_rectangle(
        comm, [[0.0, 0.0], [2.0, 1.0]], [nx, ny], dolfinx.mesh.CellType.triangle
    )
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    kappa = dolfinx.fem.Function(V)
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    a = kappa * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
    L = dolfinx.fem.Constant(mesh, 1.0) * v * ufl.dx
    fdim = mesh.topology.dim - 1

    def side(x0):
        facets = dolfinx.mesh.locate_entities_boundary(mesh, fdim, lambda x: np.isclose(x[0], x0))
        return dolfinx.fem.locate_dofs_topological(V, fdim, facets)

    g = dolfinx.fem.Function(V)
    g.interpolate(lambda x: x[1] * (1.0 - x[1]))
    bcs = [dolfinx.fem.dirichletbc(0.0, side(0.0), V), dolfinx.fem.dirichletbc(g, side(2.0))]
    problem = dolfinx.fem.petsc.LinearProblem(
        a,
        L,
        bcs=bcs,
        petsc_options_prefix="coupling_test_",
        petsc_options={
            "ksp_type": "preonly",
            "pc_type": "lu",
            "pc_factor_mat_solver_type": "mumps",
        },
    )
    return UserProblem(mesh, V, kappa, a, L, bcs, problem)


def kappa_on_grid(grid, mu) -> np.ndarray:
    return kappa_values(grid.nodes().T, mu).reshape(grid.size, grid.size)


def tiny_deeponet(size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return set_precision(
        build_model(
            "deeponet", grid_size=size, latent=8, width=16, depth=2, trunk_width=16, trunk_depth=2
        ),
        torch.float64,
    )


def user_forms_instances(comm: MPI.Comm, mu, *, size: int = 8, evaluate_at: str = "grid"):
    """The user problem at ``mu`` as a one-instance set built from its forms, with its FEM
    solution as the reference: ``(user, fem)``; the caller destroys ``fem``."""
    from pinn_lsr.fem.dofs import bounding_grid
    from pinn_lsr.physics.instances import FEMInstances

    user = user_problem(comm)
    reference = user.solve(mu)
    grid = bounding_grid(user.V, size)
    fem = FEMInstances.from_forms(
        user.a,
        user.L,
        user.bcs,
        [kappa_on_grid(grid, mu)],
        grid=grid,
        evaluate_at=evaluate_at,
        references=[reference],
    )
    return user, fem


def from_builtin(fem, **kwargs):
    """The built-in instances' A, b handed over as a user's PETSc pair (``FEMInstances.from_petsc``;
    ``kwargs``: ``to_dofs=`` or ``points=``)."""
    from pinn_lsr.physics.instances import FEMInstances

    return FEMInstances.from_petsc(
        [s.A for s in fem.systems],
        [s.b for s in fem.systems],
        fem.inputs,
        reference=list(fem.references),
        space=fem.pde.V,
        **kwargs,
    )
