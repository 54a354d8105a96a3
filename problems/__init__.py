"""The problems pinn_lsr knows, by name: ``problem=NAME`` on the command line.

Every problem is a frozen dataclass of its parameters that satisfies one of the protocols below,
chosen by its ``kind``; the pipeline reads these attributes directly, with no defaults:

* :class:`LinearProblem` (``kind = "linear"``): ``forms(u, v, w, x) -> (a, L)``, the weak form in
  UFL for trial ``u``, test ``v``, input field ``w`` and spatial coordinate ``x``, with ``u = 0``
  on the Dirichlet boundary. A problem whose ``a`` is not symmetric (``symmetric = False``)
  returns ``(a, L, s)``, ``s`` an SPD bilinear form (the norm of physics LSR,
  ``physics.norm=dual``; ``cdr``). Forms with boundary terms take a fifth argument ``ds``, the
  exterior-facet measure of the mesh's facet tags (``elasticity``).
* :class:`NonlinearProblem` (``kind = "nonlinear"``): ``residual(u, v, w, x)`` (the weak residual
  at the field u) and ``weight(u, du, v, w, x)`` (an SPD bilinear form: the norm of physics LSR).
* :class:`EvolutionProblem` (``kind = "evolution"``, ``burgers``): ``u_t + R(u) = 0`` on the
  periodic unit interval, ``spatial_residual(u, v, d)`` the weak form of ``R`` (``d`` the
  derivative along the interval) with its time stepping (``final_time``, ``time_steps``,
  ``theta``) and mesh (``refinement`` cells per grid interval). Its grid is 1D: inputs and
  solutions are (n_samples, size), the initial condition and the solution at ``final_time``.
  No physics LSR.
* :class:`FunctionProblem` (``kind = "function"``, ``fit2d``): a function-fitting task without a
  mesh: ``training_data`` and ``test_data``.

PDE problems also give ``sample_inputs(n_samples, size, *, seed, first=0) -> (n_samples, size,
size)`` (evolution problems: (n_samples, size); the input field on the grid, sample ``k``
depending only on ``(seed, k)``),
``input_name``, ``components`` (values per grid node of the solution: 1, or c for a vector
problem whose solutions on the grid are (c, s, s) in a vector P1 space; ``elasticity``: 2) and
``symmetric`` (whether the operator, or the Jacobian of a nonlinear residual, is symmetric:
the energy norm needs it, and symmetric-only PETSc solvers are refused without it).
"""

from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from problems.burgers import Burgers
from problems.convection_diffusion_reaction import ConvectionDiffusionReaction
from problems.darcy import Darcy
from problems.elasticity import Elasticity
from problems.fit2d import Fit2D
from problems.nonlinear_diffusion import NonlinearDiffusion
from problems.poisson import Poisson
from problems.reaction_diffusion import ReactionDiffusion

PROBLEMS = {
    "darcy": Darcy,
    "poisson": Poisson,
    "cdr": ConvectionDiffusionReaction,
    "reaction_diffusion": ReactionDiffusion,
    "nonlinear_diffusion": NonlinearDiffusion,
    "fit2d": Fit2D,
    "elasticity": Elasticity,
    "burgers": Burgers,
}


KINDS = ("linear", "nonlinear", "evolution", "function")


@runtime_checkable
class Problem(Protocol):
    """What every problem provides."""

    name: ClassVar[str]  # its key: problem=NAME
    kind: ClassVar[str]  # one of KINDS


@runtime_checkable
class PDEProblem(Problem, Protocol):
    """A PDE on a mesh whose input field is sampled on an s × s grid (evolution: s nodes)."""

    input_name: ClassVar[str]  # the input field's name in images and XDMF files
    components: ClassVar[int]  # solution values per grid node (1: scalar)
    symmetric: ClassVar[bool]  # the operator (Jacobian) is symmetric

    def sample_inputs(self, n_samples: int, size: int, *, seed: int, first: int = 0) -> np.ndarray:
        """Input fields (n_samples, size, size), sample k a function of (seed, first + k)."""


@runtime_checkable
class LinearProblem(PDEProblem, Protocol):
    """``a(u, v) = L(v)`` (and an SPD ``s`` when ``a`` is not symmetric)."""

    def forms(self, u, v, w, x, *ds) -> tuple:
        """``(a, L)`` or ``(a, L, s)`` in UFL."""


@runtime_checkable
class NonlinearProblem(PDEProblem, Protocol):
    """``F(u; v) = 0``, solved by Newton's method."""

    def residual(self, u, v, w, x):
        """The weak residual at ``u``."""

    def weight(self, u, du, v, w, x):
        """An SPD bilinear form in ``(du, v)`` at ``u``: the norm of physics LSR."""


@runtime_checkable
class EvolutionProblem(PDEProblem, Protocol):
    """``u_t + R(u) = 0`` on the periodic unit interval, from ``u0`` to ``u(final_time)``."""

    final_time: float  # T
    time_steps: int  # implicit steps of T / time_steps
    theta: float  # θ-method, in [0.5, 1]
    refinement: int  # mesh cells per grid interval

    def spatial_residual(self, u, v, d):
        """``R(u; v)`` in UFL (with ``dx``), ``d`` the derivative along the interval."""


@runtime_checkable
class FunctionProblem(Problem, Protocol):
    """Function fitting: points (n, 2) to values (n, 1)."""

    def training_data(self, n_points: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Random points and their values."""

    def test_data(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The size × size grid points and their values."""


#: the protocol each kind of problem satisfies
PROTOCOLS: dict[str, type] = {
    "linear": LinearProblem,
    "nonlinear": NonlinearProblem,
    "evolution": EvolutionProblem,
    "function": FunctionProblem,
}


def grid_shape(problem: PDEProblem, size: int) -> tuple[int, ...]:
    """The shape of one input field on the grid of ``size`` nodes per side: (size, size), or
    (size,) for an evolution problem on the periodic interval."""
    return (size,) if problem.kind == "evolution" else (size, size)


def create_problem(name: str, **parameters):
    """Instantiate the problem ``name`` with its parameters.

    Raises:
        ValueError: unknown name (the message lists the known ones) or unknown parameter.
    """
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; choose one of: {', '.join(sorted(PROBLEMS))}")
    try:
        return PROBLEMS[name](**parameters)
    except TypeError as exc:
        raise ValueError(f"bad parameters for problem {name!r}: {exc}") from exc
