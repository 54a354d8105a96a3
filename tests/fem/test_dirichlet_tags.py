"""Dirichlet conditions on chosen facet tags (``dirichlet_tags``), natural conditions elsewhere."""

import numpy as np
import pytest
from mpi4py import MPI

import dolfinx.fem
import problems
from pinn_lsr.fem.linear_pde import LinearPDE
from pinn_lsr.fem.mesh import read_mesh, unit_square
from pinn_lsr.fem.nonlinear_pde import NonlinearPDE


def boundary_values(pde, domain, tag):
    """|u| at the dofs of the facets tagged ``tag`` (dofs shared with other tags included)."""
    dofs = dolfinx.fem.locate_dofs_topological(pde.V, 1, domain.facet_tags.find(tag))
    return np.abs(pde.solution.x.array[dofs])


def only_tag(pde, domain, tag, other):
    """|u| at the dofs on ``tag`` facets that lie on no ``other`` facet."""
    on_other = set(
        dolfinx.fem.locate_dofs_topological(pde.V, 1, domain.facet_tags.find(other)).tolist()
    )
    dofs = [
        d
        for d in dolfinx.fem.locate_dofs_topological(pde.V, 1, domain.facet_tags.find(tag))
        if d not in on_other
    ]
    return np.abs(pde.solution.x.array[dofs])


@pytest.mark.parametrize("name", ["darcy", "poisson"])
def test_zero_only_on_the_chosen_tags(lshape_msh, name):
    domain = read_mesh(lshape_msh, MPI.COMM_WORLD)
    problem = problems.create_problem(name)
    field = problem.sample_inputs(1, 16, seed=3)[0]
    pde = LinearPDE(domain, problem.forms, grid_size=16, dirichlet_tags=[2])
    pde.solve(field)
    assert boundary_values(pde, domain, 2).max() == 0.0
    assert (
        only_tag(pde, domain, 3, other=2).min() > 1e-4
    )  # zero flux there: u free on the re-entrant sides
    pde.destroy()
    pde = LinearPDE(domain, problem.forms, grid_size=16)  # None: the whole boundary
    pde.solve(field)
    assert (
        boundary_values(pde, domain, 2).max() == 0.0
        and boundary_values(pde, domain, 3).max() == 0.0
    )
    pde.destroy()


def test_nonlinear_pde_passes_the_tags(lshape_msh):
    domain = read_mesh(lshape_msh, MPI.COMM_WORLD)
    problem = problems.create_problem("nonlinear_diffusion")
    pde = NonlinearPDE(domain, problem.residual, problem.weight, grid_size=12, dirichlet_tags=[3])
    pde.solve(problem.sample_inputs(1, 12, seed=1)[0])
    assert (
        boundary_values(pde, domain, 3).max() == 0.0
        and only_tag(pde, domain, 2, other=3).max() > 1e-4
    )


def test_unknown_tag_lists_the_available_ones(lshape_msh):
    domain = read_mesh(lshape_msh, MPI.COMM_WORLD)
    darcy = problems.create_problem("darcy")
    with pytest.raises(
        ValueError, match=r"dirichlet_tags \[7\] not found .*its facet tags are \[2, 3\]"
    ):
        LinearPDE(domain, darcy.forms, grid_size=8, dirichlet_tags=[2, 7])
    with pytest.raises(ValueError, match="empty"):
        LinearPDE(domain, darcy.forms, grid_size=8, dirichlet_tags=[])


def test_tags_on_a_mesh_without_facet_tags():
    darcy = problems.create_problem("darcy")
    with pytest.raises(ValueError, match=r"unit_square\(4\) has no facet tags"):
        LinearPDE(unit_square(MPI.COMM_WORLD, 4), darcy.forms, grid_size=5, dirichlet_tags=[1])
