"""A nonlinear PDE ``F(u; v, w) = 0`` with one grid-given input field: residual form from the
problem, Jacobian by ``ufl.derivative``, Newton's method by PETSc SNES through DOLFINx."""

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import ufl
from petsc4py import PETSc

import dolfinx.fem
import dolfinx.fem.petsc
import dolfinx.la.petsc
from pinn_lsr.fem.grid_pde import GridPDE
from pinn_lsr.fem.instance import NonlinearInstance
from pinn_lsr.fem.mesh import Domain
from pinn_lsr.fem.options import flatten_options
from pinn_lsr.fem.solver import SolverError

#: residual(u, v, w, x) -> F: the weak residual for the field u (a Function), test v, input w.
ResidualCallable = Callable[
    [dolfinx.fem.Function, ufl.Argument, dolfinx.fem.Function, ufl.SpatialCoordinate], ufl.Form
]
#: weight(u, du, v, w, x) -> an SPD bilinear form in (du, v) at the field u (the norm of physics
#: LSR).
WeightCallable = Callable[..., ufl.Form]

NEWTON_OPTIONS = {
    "snes_type": "newtonls",
    "snes_linesearch_type": "bt",
    "snes_rtol": 1e-12,
    "snes_atol": 1e-13,
    "snes_max_it": 50,
    "ksp_type": "preonly",
    "pc_type": "lu",
    "pc_factor_mat_solver_type": "mumps",
}


def newton_problem(
    F: ufl.Form,
    u: dolfinx.fem.Function,
    *,
    bcs: Sequence,
    prefix: str,
    petsc_options: Mapping | None,
) -> dolfinx.fem.petsc.NonlinearProblem:
    """Newton's method for ``F(u; v) = 0`` by SNES: :data:`NEWTON_OPTIONS` updated by
    ``petsc_options`` (nested or flat) under ``prefix``, removed from PETSc's database once the
    SNES has read them (later solvers of the prefix do not inherit them). Collective."""
    options = {**NEWTON_OPTIONS, **flatten_options(petsc_options)}
    problem = dolfinx.fem.petsc.NonlinearProblem(
        F, u, bcs=list(bcs), petsc_options_prefix=prefix, petsc_options=options
    )
    database = PETSc.Options()
    for key in options:
        database.delValue(f"{prefix}{key}")
    return problem


def solve_newton(
    problem: dolfinx.fem.petsc.NonlinearProblem, u: dolfinx.fem.Function, prefix: str
) -> None:
    """Run ``problem``'s Newton iteration from the current values of ``u``; on return ``u`` holds
    the solution with its ghosts up to date. Collective.

    Raises:
        SolverError: SNES did not converge (the message names the prefix and the reason).
    """
    problem.solve()
    reason = problem.solver.getConvergedReason()
    if reason <= 0:
        raise SolverError(
            f"SNES with prefix {prefix!r} did not converge (reason {reason}) after "
            f"{problem.solver.getIterationNumber()} Newton iterations; try -{prefix}snes_monitor"
        )
    u.x.scatter_forward()


class NonlinearPDE(GridPDE):
    """``F(u; w) = 0`` in P1 with ``u = 0`` on the boundary, solved by Newton (SNES, MUMPS LU,
    backtracking line search) from ``u = 0``; options under ``prefix`` (``-fem_snes_monitor``).

    ``F``, its Jacobian ``J`` and the weighting ``S`` are compiled once, at the field
    :attr:`state` (set by :meth:`set_state`), for :class:`~pinn_lsr.fem.instance.NonlinearInstance`.
    """

    def __init__(
        self,
        domain: Domain,
        residual: ResidualCallable,
        weight: WeightCallable,
        *,
        grid_size: int,
        input_space: str = "cell",
        petsc_options: Mapping | None = None,
        prefix: str = "fem_",
        dirichlet_tags: Sequence[int] | None = None,
    ):
        super().__init__(
            domain, grid_size=grid_size, input_space=input_space, dirichlet_tags=dirichlet_tags
        )
        x = ufl.SpatialCoordinate(domain.mesh)
        v, du = ufl.TestFunction(self.V), ufl.TrialFunction(self.V)
        self.state = dolfinx.fem.Function(self.V, name="state")
        F = residual(self.state, v, self.input, x)
        self.F = dolfinx.fem.form(F)
        self.J = dolfinx.fem.form(ufl.derivative(F, self.state, du))
        self.S = dolfinx.fem.form(weight(self.state, du, v, self.input, x))
        self.prefix = prefix
        dofs, n_owned = self.bcs[0].dof_indices()
        self._owned_boundary_dofs = dofs[:n_owned].astype(PETSc.IntType)
        self._newton = newton_problem(
            residual(self.solution, v, self.input, x),
            self.solution,
            bcs=self.bcs,
            prefix=prefix,
            petsc_options=petsc_options,
        )

    @property
    def solver_description(self) -> dict:
        return describe_snes(self._newton.solver)

    def set_state(self, u: np.ndarray) -> None:
        """Set the field ``F``, ``J`` and ``S`` are evaluated at from its owned dof values.
        Collective."""
        self.state.x.array[: self.n_owned] = u
        self.state.x.scatter_forward()

    def assemble_residual(self, F: PETSc.Vec) -> np.ndarray:
        """``F(state)`` into ``F`` and return its local array (owned values first). Collective.

        Interior rows hold the weak residual of the field as it is (boundary values included);
        Dirichlet rows hold ``state − 0``. :meth:`assemble_jacobian` is its exact derivative.
        """
        with F.localForm() as local:
            local.set(0.0)
        dolfinx.fem.petsc.assemble_vector(F, self.F)
        F.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        dolfinx.fem.petsc.set_bc(F, self.bcs, x0=self.state.x.petsc_vec, alpha=-1.0)
        return F.getArray(readonly=True)

    def assemble_jacobian(self, A: PETSc.Mat) -> None:
        """``∂F/∂u`` at :attr:`state` into ``A``: the Jacobian form's rows, with the Dirichlet rows
        replaced by identity rows. Collective."""
        A.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(A, self.J)
        A.assemble()
        A.zeroRowsLocal(self._owned_boundary_dofs, diag=1.0)

    def assemble_weight(self, S: PETSc.Mat) -> None:
        """The SPD weighting at :attr:`state` into ``S``, Dirichlet rows and columns eliminated
        symmetrically (identity block). Collective."""
        S.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(S, self.S, bcs=self.bcs)
        S.assemble()

    def instance(self, grid_values: np.ndarray) -> NonlinearInstance:
        """The residual of one input field, for physics refinement. Collective."""
        return NonlinearInstance(self, grid_values)

    def solve(self, grid_values: np.ndarray | None = None) -> dolfinx.fem.Function:
        """Newton's method from ``u = 0`` for the given input field (or the current one); returns
        ``self.solution`` with ghosts up to date. Collective.

        Raises:
            SolverError: SNES did not converge (the message names the prefix and the reason).
        """
        if grid_values is not None:
            self.set_input(grid_values)
        self.solution.x.array[:] = 0.0
        solve_newton(self._newton, self.solution, self.prefix)
        return self.solution


def describe_snes(snes) -> dict:
    """The types of a SNES, its KSP and its PC, for reports."""
    return {
        "snes_type": snes.getType(),
        "ksp_type": snes.getKSP().getType(),
        "pc_type": snes.getKSP().getPC().getType(),
    }
