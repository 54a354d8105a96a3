"""Distributed FEM (2 ranks) against each rank's serial solve of the same problem."""

import numpy as np
import pytest
from mpi4py import MPI

import dolfinx.fem
import problems
from pinn_lsr.fem.linear_pde import LinearPDE
from pinn_lsr.fem.mesh import read_mesh, unit_square
from pinn_lsr.fem.transfer import Grid, grid_to_dofs_local


def solve_both_ways(build_domain, forms, field, **kwargs):
    grids = []
    for comm in (MPI.COMM_SELF, MPI.COMM_WORLD):
        pde = LinearPDE(build_domain(comm), forms, grid_size=field.shape[0], **kwargs)
        pde.solve(field)
        grids.append(pde.solution_on_grid())
        pde.destroy()
    return grids


@pytest.mark.parametrize("input_space", ["cell", "vertex"])
def test_darcy_two_ranks_equal_serial(comm, input_space):
    darcy = problems.create_problem("darcy")
    a = darcy.sample_inputs(1, 24, seed=5)[0]
    serial, parallel = solve_both_ways(
        lambda c: unit_square(c, 23), darcy.forms, a, input_space=input_space
    )
    assert np.abs(serial - parallel).max() < 1e-10
    assert (
        comm.allreduce(np.abs(parallel - comm.bcast(parallel)).max(), op=MPI.MAX) == 0.0
    )  # same on all ranks


def test_lshape_two_ranks_equal_serial(comm, lshape_msh):
    darcy = problems.create_problem("darcy")
    a = darcy.sample_inputs(1, 20, seed=2)[0]
    serial, parallel = solve_both_ways(lambda c: read_mesh(lshape_msh, c), darcy.forms, a)
    assert np.abs(serial - parallel).max() < 1e-10 and np.abs(parallel).max() > 1e-3


def test_manufactured_error_independent_of_partition(comm):
    poisson = problems.create_problem("poisson")
    errors = []
    for c in (MPI.COMM_SELF, comm):
        pde = LinearPDE(unit_square(c, 16), poisson.manufactured_forms, grid_size=17)
        pde.solve(np.zeros((17, 17)))
        errors.append(pde.l2_error(poisson.exact_solution))
    assert abs(errors[0] - errors[1]) < 1e-12


def test_distributed_transfer_rows(comm):
    """Each rank's owned rows of P: exact on bilinear data, and with the vertices on the grid
    nodes the owned rows of all ranks together pick every grid node once (P Pᵀ = I)."""
    V = dolfinx.fem.functionspace(unit_square(comm, 5).mesh, ("Lagrange", 1))
    grid = Grid(6)
    n_owned = V.dofmap.index_map.size_local
    P = grid_to_dofs_local(V, grid)[:n_owned].tocsr()
    nodes = grid.nodes()
    x = V.tabulate_dof_coordinates()[:n_owned]
    assert np.abs(P @ (nodes[:, 0] * nodes[:, 1]) - x[:, 0] * x[:, 1]).max() < 1e-13
    P.data[np.abs(P.data) < 1e-14] = (
        0.0  # weights of the neighbouring nodes: exactly 0 up to round-off
    )
    P.eliminate_zeros()
    assert np.all(np.diff(P.indptr) == 1) and np.allclose(P.data, 1.0)
    picked = np.concatenate(comm.allgather(P.indices))
    assert np.array_equal(np.sort(picked), np.arange(36))
