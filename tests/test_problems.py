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

NAMES = "cdr, darcy, fit2d, nonlinear_diffusion, poisson, reaction_diffusion"


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


@pytest.mark.parametrize("name", ["darcy", "poisson", "nonlinear_diffusion", "cdr", "reaction_diffusion"])
def test_samples_have_grid_shape(name):
    samples = problems.create_problem(name).sample_inputs(3, 8, seed=0)
    assert samples.shape == (3, 8, 8) and samples.dtype.kind == "f"


@pytest.mark.parametrize("name", ["cdr", "reaction_diffusion"])
def test_coefficient_samples_are_positive_varied_and_reproducible(name):
    problem = problems.create_problem(name)
    samples = problem.sample_inputs(4, 16, seed=7)
    assert samples.min() > 0 and np.all(np.isfinite(samples))
    assert np.all(samples.std(axis=(1, 2)) > 0.05 * samples.mean(axis=(1, 2)))  # a field, not a constant
    np.testing.assert_array_equal(problem.sample_inputs(2, 16, seed=7, first=2), samples[2:])
    assert not np.allclose(problem.sample_inputs(1, 16, seed=8)[0], samples[0])
    scale = problem.kappa if name == "cdr" else problem.scale  # geometric mean of the log-normal field
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

        pde = LinearPDE(unit_square(MPI.COMM_WORLD, n), forms, grid_size=n + 1, input_space=input_space)
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
        return (2 * ufl.pi**2 * w * u - grad_w[0] * ux - grad_w[1] * uy + 6.0 * ux + 3.0 * uy + 1.0 * u)

    errors, rates = convergence_rates(cdr, source, lambda s: grid_values(kappa, s), "vertex")
    assert np.all((rates > 1.8) & (rates < 2.3)), f"L2 errors {errors}, rates {rates}"
    assert errors[-1] < 2e-3


def test_reaction_diffusion_manufactured_solution_with_random_reaction_converges_at_order_two():
    rd = problems.create_problem("reaction_diffusion")

    def source(w, x):  # -Δu + k u for u = sin(πx) sin(πy), k the cellwise input w
        return (2 * ufl.pi**2 + w) * exact(x)

    errors, rates = convergence_rates(rd, source, lambda s: rd.sample_inputs(1, s, seed=3)[0], "cell")
    assert np.all((rates > 1.8) & (rates < 2.3)), f"L2 errors {errors}, rates {rates}"


def dense(mat):
    return mat.convert("dense").getDenseArray().copy()


def test_cdr_operator_is_its_spd_weighting_plus_a_skew_convection():
    cdr = problems.create_problem("cdr")
    pde = LinearPDE(unit_square(MPI.COMM_SELF, 7), cdr.forms, grid_size=8)
    instance = pde.instance(cdr.sample_inputs(1, 8, seed=1)[0])
    A, S = dense(instance.A), dense(instance.weight)
    u, v = ufl.TrialFunction(pde.V), ufl.TestFunction(pde.V)
    convection = dolfinx.fem.petsc.assemble_matrix(  # β·∇u v with β = (6, 3), Dirichlet rows and columns zero
        dolfinx.fem.form(ufl.dot(ufl.as_vector((6.0, 3.0)), ufl.grad(u)) * v * ufl.dx), bcs=pde.bcs, diag=0.0)
    convection.assemble()
    C = dense(convection)
    assert np.abs(C).max() > 0.1
    np.testing.assert_allclose(A - S, C, atol=1e-12 * np.abs(A).max())
    np.testing.assert_allclose(C, -C.T, atol=1e-12 * np.abs(A).max())  # skew: S is the symmetric part of A
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
    assert eigenvalues.min() > 0 and eigenvalues.max() > np.linalg.eigvalsh(dense(stiffness.A)).max()
    stiffness.destroy()
    u = pde.solve(k).x.array.copy()
    u0 = pde.solve(np.zeros((8, 8))).x.array.copy()
    poisson = LinearPDE(unit_square(MPI.COMM_SELF, 7), problems.create_problem("darcy", source=rd.source).forms,
                        grid_size=8)
    np.testing.assert_allclose(u0, poisson.solve(np.ones((8, 8))).x.array, rtol=1e-10, atol=1e-14)  # -Δu = f
    assert np.all(u <= u0 + 1e-14) and u.max() < 0.8 * u0.max()  # k > 0 lowers u (f > 0)
    pde.destroy()
    poisson.destroy()
