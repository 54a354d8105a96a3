from pathlib import Path

import numpy as np
import pytest
import ufl
from mpi4py import MPI

import dolfinx.fem
import dolfinx.fem.petsc
import problems
from pinn_lsr.fem.linear_pde import LinearPDE
from pinn_lsr.fem.mesh import unit_square
from pinn_lsr.fem.transfer import Grid

NAMES = "burgers, cdr, darcy, elasticity, fit2d, nonlinear_diffusion, poisson, reaction_diffusion"


@pytest.mark.parametrize("name", sorted(problems.PROBLEMS))
def test_every_problem_satisfies_the_protocol_of_its_kind(name):
    problem = problems.PROBLEMS[name]()
    assert problem.name == name and problem.kind in problems.KINDS
    assert isinstance(problem, problems.PROTOCOLS[problem.kind])
    if problem.kind != "function":  # what the pipeline reads without a default
        assert isinstance(problem, problems.PDEProblem)
        assert isinstance(problem.components, int) and problem.components >= 1
        assert isinstance(problem.symmetric, bool) and isinstance(problem.input_name, str)


def test_a_class_without_the_attributes_does_not_satisfy_the_protocol():
    class Incomplete:
        name = "incomplete"
        kind = "linear"

        def forms(self, u, v, w, x):
            return None

    assert not isinstance(Incomplete(), problems.LinearProblem)


def test_registry_and_clear_errors():
    assert sorted(problems.PROBLEMS) == NAMES.split(", ")
    assert problems.create_problem("darcy", tau=4.0).tau == 4.0
    with pytest.raises(ValueError, match=f"unknown problem .heat.; choose one of: {NAMES}"):
        problems.create_problem("heat")
    with pytest.raises(ValueError, match="bad parameters for problem 'poisson'"):
        problems.create_problem("poisson", high=3.0)
    with pytest.raises(ValueError, match="bad parameters for problem 'cdr'"):
        problems.create_problem("cdr", velocity=(1.0, 0.0))
    with pytest.raises(ValueError, match="reaction must be >= 0"):
        problems.create_problem("cdr", reaction=-1.0)
    with pytest.raises(ValueError, match="scale must be positive"):
        problems.create_problem("reaction_diffusion", scale=0.0)


@pytest.mark.parametrize(
    "name", ["darcy", "poisson", "nonlinear_diffusion", "cdr", "reaction_diffusion"]
)
def test_samples_have_grid_shape(name):
    samples = problems.create_problem(name).sample_inputs(3, 8, seed=0)
    assert samples.shape == (3, 8, 8) and samples.dtype.kind == "f"


@pytest.mark.parametrize("name", ["cdr", "reaction_diffusion"])
def test_coefficient_samples_are_positive_varied_and_reproducible(name):
    problem = problems.create_problem(name)
    samples = problem.sample_inputs(4, 16, seed=7)
    assert samples.min() > 0 and np.all(np.isfinite(samples))
    assert np.all(
        samples.std(axis=(1, 2)) > 0.05 * samples.mean(axis=(1, 2))
    )  # a field, not a constant
    np.testing.assert_array_equal(problem.sample_inputs(2, 16, seed=7, first=2), samples[2:])
    assert not np.allclose(problem.sample_inputs(1, 16, seed=8)[0], samples[0])
    scale = (
        problem.kappa if name == "cdr" else problem.scale
    )  # geometric mean of the log-normal field
    assert 0.5 * scale < np.exp(np.log(problem.sample_inputs(50, 16, seed=0)).mean()) < 2 * scale


def exact(x):
    return ufl.sin(ufl.pi * x[0]) * ufl.sin(ufl.pi * x[1])


def grid_values(function, size):
    """An analytic function of (x, y) at the grid nodes, shape (size, size)."""
    nodes = Grid(size).nodes()
    return function(nodes[:, 0], nodes[:, 1]).reshape(size, size)


def convergence_rates(problem, source, input_values, input_space, sizes=(8, 16, 32)):
    """L2 errors of P1 against ``exact`` with the problem's bilinear form and the test's own source
    ``source(w, x)`` (the strong form applied to ``exact``), and their rates."""
    errors = []
    for n in sizes:

        def forms(u, v, w, x):
            return problem.forms(u, v, w, x)[0], source(w, x) * v * ufl.dx

        pde = LinearPDE(
            unit_square(MPI.COMM_WORLD, n), forms, grid_size=n + 1, input_space=input_space
        )
        pde.solve(input_values(n + 1))
        errors.append(pde.l2_error(exact))
        pde.destroy()
    return errors, np.log2(np.array(errors[:-1]) / np.array(errors[1:]))


def test_cdr_manufactured_solution_with_variable_diffusivity_converges_at_order_two():
    cdr = problems.create_problem("cdr")
    # κ = 1 + 0.5 sin(2πx) cos(πy) as a P1 field through the grid nodes (the mesh vertices)
    kappa = lambda x, y: 1 + 0.5 * np.sin(2 * np.pi * x) * np.cos(np.pi * y)  # noqa: E731

    def source(w, x):  # -div(κ ∇u) + β·∇u + c u for u = sin(πx) sin(πy), written out by hand
        u = exact(x)
        ux = ufl.pi * ufl.cos(ufl.pi * x[0]) * ufl.sin(ufl.pi * x[1])
        uy = ufl.pi * ufl.sin(ufl.pi * x[0]) * ufl.cos(ufl.pi * x[1])
        grad_w = ufl.grad(w)
        return (
            2 * ufl.pi**2 * w * u - grad_w[0] * ux - grad_w[1] * uy + 6.0 * ux + 3.0 * uy + 1.0 * u
        )

    errors, rates = convergence_rates(cdr, source, lambda s: grid_values(kappa, s), "vertex")
    assert np.all((rates > 1.8) & (rates < 2.3)), f"L2 errors {errors}, rates {rates}"
    assert errors[-1] < 2e-3


def test_reaction_diffusion_manufactured_solution_with_random_reaction_converges_at_order_two():
    rd = problems.create_problem("reaction_diffusion")

    def source(w, x):  # -Δu + k u for u = sin(πx) sin(πy), k the cellwise input w
        return (2 * ufl.pi**2 + w) * exact(x)

    errors, rates = convergence_rates(
        rd, source, lambda s: rd.sample_inputs(1, s, seed=3)[0], "cell"
    )
    assert np.all((rates > 1.8) & (rates < 2.3)), f"L2 errors {errors}, rates {rates}"


def dense(mat):
    return mat.convert("dense").getDenseArray().copy()


def test_cdr_operator_is_its_spd_weighting_plus_a_skew_convection():
    cdr = problems.create_problem("cdr")
    pde = LinearPDE(unit_square(MPI.COMM_SELF, 7), cdr.forms, grid_size=8)
    instance = pde.instance(cdr.sample_inputs(1, 8, seed=1)[0])
    A, S = dense(instance.A), dense(instance.weight)
    u, v = ufl.TrialFunction(pde.V), ufl.TestFunction(pde.V)
    # β·∇u v with β = (6, 3), Dirichlet rows and columns zero
    convection = dolfinx.fem.petsc.assemble_matrix(
        dolfinx.fem.form(ufl.dot(ufl.as_vector((6.0, 3.0)), ufl.grad(u)) * v * ufl.dx),
        bcs=pde.bcs,
        diag=0.0,
    )
    convection.assemble()
    C = dense(convection)
    assert np.abs(C).max() > 0.1
    np.testing.assert_allclose(A - S, C, atol=1e-12 * np.abs(A).max())
    np.testing.assert_allclose(
        C, -C.T, atol=1e-12 * np.abs(A).max()
    )  # skew: S is the symmetric part of A
    assert np.linalg.eigvalsh(S).min() > 0
    convection.destroy()
    instance.destroy()
    pde.destroy()


def test_cdr_without_convection_and_reaction_is_darcy_with_the_same_coefficient():
    kappa = problems.create_problem("cdr").sample_inputs(1, 12, seed=2)[0]
    still = problems.create_problem("cdr", velocity_x=0.0, velocity_y=0.0, reaction=0.0, source=2.0)
    moving = problems.create_problem("cdr", source=2.0)
    darcy = problems.create_problem("darcy", source=2.0)
    solutions = {}
    for name, problem in (("still", still), ("moving", moving), ("darcy", darcy)):
        pde = LinearPDE(unit_square(MPI.COMM_SELF, 11), problem.forms, grid_size=12)
        pde.solve(kappa)
        solutions[name] = pde.solution_on_grid()
        pde.destroy()
    np.testing.assert_allclose(solutions["still"], solutions["darcy"], rtol=1e-10, atol=1e-14)
    # the flow (+x, +y) carries the solution's peak downstream
    peak = lambda u: np.unravel_index(np.argmax(u), u.shape)  # noqa: E731
    assert peak(solutions["moving"])[0] > peak(solutions["still"])[0]
    assert peak(solutions["moving"])[1] >= peak(solutions["still"])[1]


def test_reaction_diffusion_operator_is_spd_and_reaction_lowers_the_solution():
    rd = problems.create_problem("reaction_diffusion")
    pde = LinearPDE(unit_square(MPI.COMM_SELF, 7), rd.forms, grid_size=8)
    k = rd.sample_inputs(1, 8, seed=1)[0]
    instance = pde.instance(k)
    A = dense(instance.A)
    assert instance.weight is None
    np.testing.assert_allclose(A, A.T, atol=1e-13 * np.abs(A).max())
    eigenvalues = np.linalg.eigvalsh(A)
    instance.destroy()
    stiffness = pde.instance(np.zeros((8, 8)))  # k = 0: the Laplacian
    assert (
        eigenvalues.min() > 0 and eigenvalues.max() > np.linalg.eigvalsh(dense(stiffness.A)).max()
    )
    stiffness.destroy()
    u = pde.solve(k).x.array.copy()
    u0 = pde.solve(np.zeros((8, 8))).x.array.copy()
    poisson = LinearPDE(
        unit_square(MPI.COMM_SELF, 7),
        problems.create_problem("darcy", source=rd.source).forms,
        grid_size=8,
    )
    np.testing.assert_allclose(
        u0, poisson.solve(np.ones((8, 8))).x.array, rtol=1e-10, atol=1e-14
    )  # -Δu = f
    assert np.all(u <= u0 + 1e-14) and u.max() < 0.8 * u0.max()  # k > 0 lowers u (f > 0)
    pde.destroy()
    poisson.destroy()


# --- elasticity: a vector-valued problem (components = 2) on the plate with holes ---------------

PLATE = Path(__file__).parents[1] / "meshes" / "plate_holes.msh"


def elasticity_pde(comm=MPI.COMM_SELF, size=12, **kwargs):
    from pinn_lsr.fem.mesh import read_mesh

    el = problems.create_problem("elasticity", **kwargs)
    return el, LinearPDE(
        read_mesh(PLATE, comm), el.forms, grid_size=size, dirichlet_tags=[2], components=2
    )


def test_elasticity_samples_are_positive_reproducible_and_clear_errors():
    el = problems.create_problem("elasticity")
    assert el.components == 2 and el.name == "elasticity"
    samples = el.sample_inputs(4, 16, seed=7)
    assert samples.shape == (4, 16, 16) and samples.min() > 0 and np.all(np.isfinite(samples))
    assert np.all(samples.std(axis=(1, 2)) > 0.05 * samples.mean(axis=(1, 2)))
    np.testing.assert_array_equal(el.sample_inputs(2, 16, seed=7, first=2), samples[2:])
    assert not np.allclose(el.sample_inputs(1, 16, seed=8)[0], samples[0])
    with pytest.raises(ValueError, match="poisson_ratio must be in"):
        problems.create_problem("elasticity", poisson_ratio=0.5)
    with pytest.raises(ValueError, match="youngs_modulus must be positive"):
        problems.create_problem("elasticity", youngs_modulus=0.0)


def test_elasticity_manufactured_solution_with_variable_modulus_converges_at_order_two():
    el = problems.create_problem("elasticity")
    modulus = lambda x, y: 1 + 0.5 * np.sin(2 * np.pi * x) * np.cos(np.pi * y)  # noqa: E731

    def exact(x):  # zero on the boundary of the unit square, both components non-trivial
        return ufl.as_vector(
            (
                ufl.sin(ufl.pi * x[0]) * ufl.sin(ufl.pi * x[1]),
                x[0] * x[1] * (1 - x[0]) * (1 - x[1]) * (1 + x[0]),
            )
        )

    errors = []
    for n in (8, 16, 32):

        def forms(
            u, v, w, x
        ):  # the problem's bilinear form, the source -div σ(u_exact) by UFL (w: P1 modulus)
            a = el.forms(u, v, w, x, ufl.ds)[0]
            return a, ufl.inner(-ufl.div(el.stress(exact(x), w)), v) * ufl.dx

        pde = LinearPDE(
            unit_square(MPI.COMM_WORLD, n),
            forms,
            grid_size=n + 1,
            input_space="vertex",
            components=2,
        )
        pde.solve(grid_values(modulus, n + 1))
        errors.append(pde.l2_error(exact))
        pde.destroy()
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((rates > 1.8) & (rates < 2.3)), f"L2 errors {errors}, rates {rates}"


def test_elasticity_operator_kills_rigid_motions_and_is_spd_with_the_clamp():
    el, pde = elasticity_pde()
    E = el.sample_inputs(1, 12, seed=1)[0]
    instance = pde.instance(E)
    A = dense(instance.A)
    np.testing.assert_allclose(A, A.T, atol=1e-12 * np.abs(A).max())
    np.linalg.cholesky(A)  # positive definite: the clamp removes the rigid motions
    free = dolfinx.fem.petsc.assemble_matrix(pde.a)  # no boundary conditions
    free.assemble()
    A_free = dense(free)
    xy = pde.V.tabulate_dof_coordinates()[:, :2]
    ones, zeros = np.ones(len(xy)), np.zeros(len(xy))
    for ux, uy in ((ones, zeros), (zeros, ones), (-xy[:, 1], xy[:, 0])):  # translations, rotation
        rigid = np.column_stack([ux, uy]).ravel()  # blocked layout: dof 2·node + component
        assert np.abs(A_free @ rigid).max() < 1e-10 * np.abs(A_free).max() * np.abs(rigid).max()
    assert (
        np.linalg.eigvalsh(A_free).min() < 1e-10 * np.abs(A_free).max()
    )  # singular without the clamp
    free.destroy()
    instance.destroy()
    pde.destroy()


def test_elasticity_clamp_holds_and_reaction_balances_the_traction():
    el, pde = elasticity_pde()
    u = pde.solve(el.sample_inputs(1, 12, seed=2)[0]).x.array.copy()
    facets = pde.domain.facet_tags.find(2)
    clamped = dolfinx.fem.locate_dofs_topological(pde.V, 1, facets)  # block (node) indices
    assert len(clamped) > 5
    np.testing.assert_array_equal(u.reshape(-1, 2)[clamped], 0.0)
    grid = pde.solution_on_grid()
    assert grid.shape == (2, 12, 12)
    np.testing.assert_allclose(
        grid[:, 0, :], 0.0, atol=1e-14
    )  # grid column x = 0: the clamped edge
    assert grid[0, -1, :].min() > 0  # pulled to the right (t_x = 1 > 0)
    # equilibrium: the clamp's reaction A u − b (no boundary conditions) balances the traction on
    # x = 2
    free = dolfinx.fem.petsc.assemble_matrix(pde.a)
    free.assemble()
    b = dolfinx.fem.petsc.assemble_vector(pde.L)
    reaction = (dense(free) @ u - b.getArray()).reshape(-1, 2)
    np.testing.assert_allclose(reaction.sum(axis=0), [-el.traction_x, -el.traction_y], rtol=1e-10)
    interior = np.setdiff1d(np.arange(len(reaction)), clamped)
    assert np.abs(reaction[interior]).max() < 1e-10
    for obj in (free, b):
        obj.destroy()
    pde.destroy()


def test_elasticity_needs_tagged_boundaries_that_exist():
    el = problems.create_problem("elasticity")
    with pytest.raises(ValueError, match="has no facet tags"):
        LinearPDE(unit_square(MPI.COMM_SELF, 4), el.forms, grid_size=5, components=2)
    with pytest.raises(ValueError, match=r"boundary tags \[7\]"):
        elasticity_pde(traction_tag=7)


def test_vector_grid_transfer_is_per_component_and_round_trips():
    el = problems.create_problem("elasticity")

    def forms(u, v, w, x):  # the problem's operator, a body force instead of the traction
        return el.forms(u, v, w, x, ufl.ds)[0], ufl.inner(ufl.as_vector((0.0, -1.0)), v) * ufl.dx

    pde = LinearPDE(unit_square(MPI.COMM_SELF, 5), forms, grid_size=6, components=2)
    P = pde.grid_to_owned_dofs()
    assert P.shape == (2 * 36, 2 * 36) and pde.n_dofs == pde.n_owned == 72
    nodes = Grid(6).nodes()
    field = np.stack([nodes[:, 0] + 2 * nodes[:, 1], 3 - nodes[:, 0] * nodes[:, 1]]).reshape(
        2, 6, 6
    )
    dofs = (P @ field.ravel()).reshape(-1, 2)  # blocked: (node, component)
    xy = pde.V.tabulate_dof_coordinates()[:, :2]
    np.testing.assert_allclose(
        dofs, np.column_stack([xy[:, 0] + 2 * xy[:, 1], 3 - xy[:, 0] * xy[:, 1]]), atol=1e-12
    )
    np.testing.assert_allclose(pde.field_on_grid(P @ field.ravel()), field, atol=1e-12)
    pde.destroy()
