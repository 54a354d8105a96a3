"""A time-dependent PDE ``u_t + R(u) = 0`` on the periodic unit interval: P1 in space on the closed
chain of :func:`~pinn_lsr.fem.mesh.periodic_interval`, the θ-method in time, every step solved by
Newton's method (PETSc SNES through DOLFINx).

The operator it samples maps the initial condition on an s-point periodic grid to the solution at
the final time on the same grid (Burgers: :mod:`problems.burgers`).
"""

from collections.abc import Callable, Mapping

import dolfinx_solver  # noqa: F401  (orders mpi4py before petsc4py)
import numpy as np
import ufl
from mpi4py import MPI

import dolfinx.fem
from pinn_lsr.fem.mesh import Domain, arc_length, arc_length_derivative
from pinn_lsr.fem.nonlinear_pde import describe_snes, newton_problem, solve_newton

#: spatial_residual(u, v, d) -> R(u; v): the weak form (with ``ufl.dx``) of the spatial operator
#: at the field ``u`` for the test function ``v``; ``d`` is the derivative along the interval.
SpatialResidual = Callable[[ufl.core.expr.Expr, ufl.Argument, Callable], ufl.Form]


def trigonometric_interpolation(size: int, points: np.ndarray) -> np.ndarray:
    """Weights of the trigonometric interpolant of values at ``x_k = k / size`` evaluated at
    ``points`` (n,) in [0, 1): shape (n, size). Local.

    The real interpolant with the modes ``|m| < size / 2`` (and the cosine Nyquist mode for even
    ``size``): exact for fields band-limited below the Nyquist frequency, the identity at the grid
    nodes.
    """
    offset = 2 * np.pi * (np.asarray(points)[:, None] - np.arange(size)[None, :] / size)
    weights = np.ones_like(offset)
    for m in range(1, (size + 1) // 2):
        weights += 2 * np.cos(m * offset)
    if size % 2 == 0:
        weights += np.cos(size / 2 * offset)
    return weights / size


class PeriodicEvolution:
    """``u_t + R(u) = 0`` on the periodic unit interval, ``u(0) = u0`` given on a grid.

    * Grid: ``s`` nodes ``x_k = k / s``, ``k = 0 .. s-1`` (x = 1 is x = 0).
    * Space: P1 on ``domain`` (:func:`~pinn_lsr.fem.mesh.periodic_interval` with
      ``n = s · refinement`` cells); grid node ``k`` is vertex ``k · refinement``. ``u0`` is the
      trigonometric interpolant of its grid values at the vertices (exact for band-limited
      fields).
    * Time: ``n_steps`` steps of ``Δt = final_time / n_steps`` by the θ-method,
      ``∫ (u − u_prev) / Δt v + θ R(u; v) + (1 − θ) R(u_prev; v) = 0`` (θ = 1/2: Crank–Nicolson,
      second order, started by four backward-Euler half steps: :meth:`schedule`; θ = 1: backward
      Euler), each by Newton (SNES, MUMPS LU, options under ``prefix``) from the previous step's
      field.

    Collective on ``domain.mesh.comm`` for construction and every solve.
    """

    def __init__(
        self,
        domain: Domain,
        spatial_residual: SpatialResidual,
        *,
        grid_size: int,
        final_time: float,
        n_steps: int,
        theta: float = 0.5,
        petsc_options: Mapping | None = None,
        prefix: str = "fem_",
    ):
        mesh = domain.mesh
        if mesh.topology.dim != 1 or not domain.source.startswith("periodic_interval"):
            raise ValueError(
                f"PeriodicEvolution needs a periodic_interval mesh, got {domain.source}"
            )
        n_cells = mesh.topology.index_map(1).size_global
        if grid_size < 3 or n_cells % grid_size:
            raise ValueError(
                f"grid_size={grid_size} must be >= 3 and divide the mesh's {n_cells} cells"
            )
        if (
            not final_time > 0
            or isinstance(n_steps, bool)
            or not isinstance(n_steps, int)
            or n_steps < 1
        ):
            raise ValueError(
                f"need final_time > 0 and an integer n_steps >= 1, got {final_time}, {n_steps}"
            )
        if not 0.5 <= theta <= 1:
            raise ValueError(f"theta must be in [0.5, 1] (unconditionally stable), got {theta}")
        self.domain = domain
        self.grid_size = grid_size
        self.final_time, self.n_steps, self.theta = float(final_time), int(n_steps), float(theta)
        self.prefix = prefix
        self.V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
        self.input = dolfinx.fem.Function(self.V, name="input")  # u0
        self.solution = dolfinx.fem.Function(self.V, name="u")
        self._previous = dolfinx.fem.Function(self.V)
        v, d = ufl.TestFunction(self.V), arc_length_derivative(mesh)
        u, u_prev = self.solution, self._previous
        self._dt = dolfinx.fem.Constant(mesh, 0.0)  # set per step by solve()
        self._theta = dolfinx.fem.Constant(mesh, 0.0)
        F = (
            (u - u_prev) / self._dt * v * ufl.dx
            + self._theta * spatial_residual(u, v, d)
            + (1 - self._theta) * spatial_residual(u_prev, v, d)
        )
        self._newton = newton_problem(F, u, bcs=[], prefix=prefix, petsc_options=petsc_options)
        position = arc_length(self.V.tabulate_dof_coordinates())  # local dofs, ghosts included
        self._grid_to_dofs = trigonometric_interpolation(grid_size, position)
        vertex = np.rint(position * n_cells).astype(np.int64) % n_cells
        owned = vertex[: self.n_owned]
        refinement = n_cells // grid_size
        self._owned_grid_dofs = np.flatnonzero(owned % refinement == 0)
        self._owned_grid_nodes = owned[self._owned_grid_dofs] // refinement

    @property
    def n_dofs(self) -> int:
        """Global number of degrees of freedom (mesh vertices)."""
        return self.V.dofmap.index_map.size_global

    @property
    def n_owned(self) -> int:
        """Degrees of freedom owned by this rank."""
        return self.V.dofmap.index_map.size_local

    @property
    def solver_description(self) -> dict:
        return {
            **describe_snes(self._newton.solver),
            "time_steps": self.n_steps,
            "theta": self.theta,
        }

    def grid_to_local_dofs(self) -> np.ndarray:
        """The map from grid values (s,) to this rank's dof values (owned and ghost) of their
        trigonometric interpolant, shape (n_local, s). Local."""
        return self._grid_to_dofs

    def set_input(self, grid_values: np.ndarray) -> None:
        """Set ``u0`` from its grid values, shape (s,), finite. Local."""
        grid_values = np.asarray(grid_values, dtype=np.float64)
        if grid_values.shape != (self.grid_size,):
            raise ValueError(
                f"initial condition must have shape ({self.grid_size},), got {grid_values.shape}"
            )
        if not np.all(np.isfinite(grid_values)):
            raise ValueError("initial condition contains NaN or infinite values")
        self.input.x.array[:] = self._grid_to_dofs @ grid_values

    def solve(self, grid_values: np.ndarray | None = None) -> dolfinx.fem.Function:
        """March from ``u0`` (the given grid values, or the current input) to the final time;
        returns ``self.solution`` with ghosts up to date. Collective.

        Raises:
            SolverError: a Newton step did not converge (the message names the prefix).
        """
        if grid_values is not None:
            self.set_input(grid_values)
        self.solution.x.array[:] = self.input.x.array
        for dt, theta in self.schedule():
            self._dt.value, self._theta.value = dt, theta
            self._previous.x.array[:] = self.solution.x.array
            solve_newton(self._newton, self.solution, self.prefix)
        return self.solution

    def schedule(self) -> list[tuple[float, float]]:
        """The ``(Δt, θ)`` of every step: ``n_steps`` of ``final_time / n_steps`` at ``theta``,
        except that for ``theta < 1`` the first two are four backward-Euler half steps
        (Rannacher's start: Crank–Nicolson alone leaves the stiff modes of a rough ``u0``
        undamped, flipping sign every step, and they feed the nonlinearity)."""
        dt = self.final_time / self.n_steps
        if self.theta == 1 or self.n_steps < 2:
            return [(dt, self.theta)] * self.n_steps
        return [(dt / 2, 1.0)] * 4 + [(dt, self.theta)] * (self.n_steps - 2)

    def solution_on_grid(self) -> np.ndarray:
        """The current solution at the grid nodes, shape (s,), identical on all ranks.
        Collective."""
        comm: MPI.Comm = self.domain.mesh.comm
        nodes = np.concatenate(comm.allgather(self._owned_grid_nodes))
        values = np.concatenate(comm.allgather(self.solution.x.array[self._owned_grid_dofs]))
        grid = np.empty(self.grid_size)
        grid[nodes] = values
        return grid

    def destroy(self) -> None:
        """Free the SNES and its PETSc objects (collective); the instance is unusable afterwards."""
        del self._newton
