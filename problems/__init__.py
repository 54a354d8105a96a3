"""The PDE problems pinn_lsr knows, by name: ``problem=NAME`` on the command line.

Each PDE module defines a frozen dataclass with

* ``sample_inputs(n_samples, size, *, seed, first=0) -> (n_samples, size, size)``: the input
  field (coefficient or source) on the grid, sample ``k`` depending only on ``(seed, k)``;
* ``forms(u, v, w, x) -> (a, L)``: the weak form in UFL for trial ``u``, test ``v``, input
  field ``w`` and spatial coordinate ``x``, with ``u = 0`` on the boundary. A problem whose ``a``
  is not symmetric sets ``symmetric = False`` and returns ``(a, L, s)``, ``s`` an SPD bilinear form
  (the norm of physics LSR, ``physics.norm=dual``; ``cdr``). Forms with boundary terms take a fifth
  argument ``ds``, the exterior-facet measure of the mesh's facet tags (``elasticity``).

A vector-valued problem sets ``components = c`` (``elasticity``: 2): its solutions on the grid are
(c, s, s) and its finite-element space is vector P1; the input field stays (s, s).

Problems with ``kind = "nonlinear"`` define ``residual(u, v, w, x)`` (the weak residual at the
field u) and ``weight(u, du, v, w, x)`` (an SPD bilinear form: the norm of physics LSR) instead of
``forms``. Problems with ``kind = "function"`` (``fit2d``) are function-fitting tasks without a mesh.
"""

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
}


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
