"""Couple pinn_lsr with your own DOLFINx code: refine a DeepONet against *your* FEM residual.

The "user code" below owns the mesh (a 2 × 1 rectangle), the forms (-div(κ_μ grad u) = f with a
parametrised coefficient κ_μ), the boundary conditions (u = 0 on the left, u = y(1 - y) on the
right, no flux elsewhere) and the solver. A small DeepONet is trained for a few seconds on a few
FEM solutions (or loaded with ``--checkpoint``), evaluated at the degrees of freedom of a new
coefficient, refined by physics LSR in the energy norm of the user's system, and the refined
field is written as a DOLFINx Function to XDMF.

    .venv/bin/python examples/couple_dolfinx.py [--out DIR] [--checkpoint model.pt] [--rank 64]
    .venv/bin/mpirun -n 2 .venv/bin/python examples/couple_dolfinx.py
"""

import argparse
from pathlib import Path

import dolfinx_solver  # noqa: F401  (before dolfinx / petsc4py)
import numpy as np
import torch
import ufl
from mpi4py import MPI

import dolfinx.fem
import dolfinx.fem.petsc
import dolfinx.io
import dolfinx.mesh
from pinn_lsr.fem.dofs import bounding_grid
from pinn_lsr.fem.transfer import GridEvaluator
from pinn_lsr.physics.instances import FEMInstances
from pinn_lsr.physics.refine import refine_physics
from pinn_lsr.models import build_model
from pinn_lsr.models.deeponet import DeepONet
from pinn_lsr.models.parameters import set_precision
from pinn_lsr.train.checkpoint import load_model
from pinn_lsr.train.loop import broadcast_parameters

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="outputs/couple_dolfinx", help="folder for refined.xdmf")
parser.add_argument(
    "--checkpoint",
    default=None,
    help="a trained pinn_lsr model checkpoint (DeepONet or FNO, one input field; skips training)",
)
parser.add_argument("--rank", type=int, default=32, help="LSR rank")
args = parser.parse_args()
comm = MPI.COMM_WORLD
torch.set_num_threads(
    1
)  # a small network: one thread per rank is fastest on a shared 2-core machine

# ---- the user's own DOLFINx problem ----------------------------------------------------------
mesh = dolfinx.mesh.create_rectangle(
    comm, [[0.0, 0.0], [2.0, 1.0]], [32, 16], dolfinx.mesh.CellType.triangle
)
V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))


def kappa_values(x, mu):
    """κ_μ(x) at points x (2, n): a smooth positive coefficient."""
    return np.exp(
        mu[0] * np.sin(0.5 * np.pi * x[0]) * np.sin(np.pi * x[1])
        + 0.5 * mu[1] * np.cos(np.pi * x[0])
    )


kappa = dolfinx.fem.Function(V, name="kappa")
u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
a = kappa * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
L = dolfinx.fem.Constant(mesh, 1.0) * v * ufl.dx
fdim = mesh.topology.dim - 1


def side_dofs(x0):
    facets = dolfinx.mesh.locate_entities_boundary(mesh, fdim, lambda x: np.isclose(x[0], x0))
    return dolfinx.fem.locate_dofs_topological(V, fdim, facets)


left, right = side_dofs(0.0), side_dofs(2.0)
g = dolfinx.fem.Function(V)
g.interpolate(lambda x: x[1] * (1.0 - x[1]))
bcs = [dolfinx.fem.dirichletbc(0.0, left, V), dolfinx.fem.dirichletbc(g, right)]


def set_coefficient(mu):
    kappa.interpolate(lambda x: kappa_values(x, mu))


problem = dolfinx.fem.petsc.LinearProblem(
    a,
    L,
    bcs=bcs,
    petsc_options_prefix="user_",
    petsc_options={
        "ksp_type": "preonly",
        "pc_type": "lu",
        "pc_factor_mat_solver_type": "mumps",
        "ksp_error_if_not_converged": True,
    },
)


def fem_solve(mu) -> dolfinx.fem.Function:
    """The user's own FEM solve (DOLFINx's LinearProblem with MUMPS); a new Function."""
    set_coefficient(mu)
    return problem.solve().copy()


# ---- a small operator network: coefficient on a 16 × 16 grid -> solution at any point --------
rng = np.random.default_rng(0)
train_mu, test_mu = rng.uniform(-1.0, 1.0, (24, 2)), np.array([0.7, -0.6])
if args.checkpoint:
    model = load_model(args.checkpoint, dtype=torch.float64)
    grid = bounding_grid(V, model.grid_size)
else:
    grid = bounding_grid(V, 16)
nodes = grid.nodes().T  # (2, s*s): the grid on the mesh's bounding box
s = grid.size


def kappa_on_grid(mu):
    return kappa_values(nodes, mu).reshape(s, s)


if not args.checkpoint:
    evaluate = GridEvaluator(V, grid)  # FEM solutions at the grid nodes, identical on every rank
    targets = torch.as_tensor(np.stack([evaluate(fem_solve(mu)).ravel() for mu in train_mu]))
    inputs = torch.as_tensor(np.stack([kappa_on_grid(mu) for mu in train_mu]))
    torch.manual_seed(0)
    model = set_precision(
        build_model(
            "deeponet", grid_size=s, latent=32, width=64, depth=2, trunk_width=64, trunk_depth=2
        ),
        torch.float64,
    )
    model.input_normalizer.fit(inputs)
    model.output_normalizer.fit(targets)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for step in range(300):
        optimizer.zero_grad()
        loss = (model(inputs) - targets).pow(2).mean()
        loss.backward()
        optimizer.step()
    broadcast_parameters(model, comm)

# ---- coupling: pinn_lsr refines the network against the user's own forms and bcs -------------
reference = fem_solve(
    test_mu
)  # the user's FEM solution for the new coefficient (sets κ to test_mu)
evaluate_at = (
    "dofs" if isinstance(model, DeepONet) else "grid"
)  # a DeepONet runs at the dofs, an FNO interpolates
coupled = FEMInstances.from_forms(
    a, L, bcs, [kappa_on_grid(test_mu)], grid=grid, evaluate_at=evaluate_at, references=[reference]
)
network = coupled.network_fields(model)
result = refine_physics(coupled.residual(model, norm="energy"), args.rank)
before, after = coupled.errors(network)[0], coupled.errors(result.fields)[0]

refined = coupled.to_function(result.fields[0], name="u_refined")  # a DOLFINx Function on V
out = Path(args.out)
if comm.rank == 0:
    out.mkdir(parents=True, exist_ok=True)
comm.Barrier()
with dolfinx.io.XDMFFile(comm, str(out / "refined.xdmf"), "w") as xdmf:
    xdmf.write_mesh(mesh)
    xdmf.write_function(refined)
    reference.name = "u_fem"
    xdmf.write_function(reference)
coupled.destroy()
if comm.rank == 0:
    print(
        f"{V.dofmap.index_map.size_global} dofs on {comm.size} rank(s); "
        f"{type(model).__name__} evaluated at the "
        f"{'dof coordinates' if evaluate_at == 'dofs' else 'grid, interpolated to the dofs'}, "
        f"physics LSR rank {result.report.rank} "
        f"(energy norm, {result.report.seconds['total']:.1f} s)"
    )
    print(
        f"relative L2 error against the FEM solution: network {before:.3e} -> refined {after:.3e} "
        f"({before / after:.1f}x); ||A u - b||: {result.report.residual_l2_before:.2e} -> "
        f"{result.report.residual_l2_after:.2e}; written {out / 'refined.xdmf'}"
    )
