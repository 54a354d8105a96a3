"""Assembly of linear systems and mass matrices from DOLFINx forms into PETSc.

One convention for every linear system pinn_lsr builds (the built-in problems' ``LinearPDE`` and
a user's forms alike): ``A`` with Dirichlet rows and columns replaced by identity rows, ``b`` with
the lifting of the Dirichlet data, ghosts accumulated and boundary rows set to the data. An SPD
form keeps an SPD ``A``, so the energy norm of physics LSR applies.
"""

from collections.abc import Sequence

import dolfinx_solver  # noqa: F401  (orders mpi4py before petsc4py)
import ufl
from petsc4py import PETSc

import dolfinx.fem
import dolfinx.fem.petsc
from pinn_lsr.fem.instance import LinearInstance


def compiled(form) -> dolfinx.fem.Form:
    """A compiled form from a UFL form (a compiled one is returned as is). Collective."""
    return form if isinstance(form, dolfinx.fem.Form) else dolfinx.fem.form(form)


def assemble_system(
    a,
    L,
    bcs: Sequence[dolfinx.fem.DirichletBC] = (),
    *,
    weight=None,
    out: tuple[PETSc.Mat, PETSc.Vec] | None = None,
) -> LinearInstance:
    """``A``, ``b`` (and the SPD weighting ``S`` of the bilinear form ``weight``) of UFL or
    compiled forms, with the boundary conditions applied as the module docstring says.

    Collective on the forms' mesh communicator.

    Args:
        a, L: bilinear and linear form (UFL or compiled) on one function space.
        bcs: Dirichlet conditions.
        weight: an SPD bilinear form, assembled with the same ``bcs`` as ``S`` (``norm="dual"``).
        out: ``(A, b)`` created for ``a`` and ``L`` (``dolfinx.fem.petsc.create_matrix`` /
            ``create_vector``) to assemble into in place; otherwise new objects are created.
    Returns:
        A :class:`LinearInstance` whose PETSc objects the caller owns (``destroy()``); with
        ``out``, ``A`` and ``b`` are the given objects.
    """
    a, L = compiled(a), compiled(L)
    bcs = list(bcs)
    if out is None:
        A = dolfinx.fem.petsc.assemble_matrix(a, bcs=bcs)
        b = dolfinx.fem.petsc.create_vector(L.function_spaces[0])
    else:
        A, b = out
        A.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(A, a, bcs=bcs)
    A.assemble()
    with b.localForm() as b_local:
        b_local.set(0.0)
    dolfinx.fem.petsc.assemble_vector(b, L)
    dolfinx.fem.petsc.apply_lifting(b, [a], bcs=[bcs])
    b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
    dolfinx.fem.petsc.set_bc(b, bcs)
    S = None
    if weight is not None:
        S = dolfinx.fem.petsc.assemble_matrix(compiled(weight), bcs=bcs)
        S.assemble()
    return LinearInstance(A, b, S)


def assemble_mass_matrix(V: dolfinx.fem.FunctionSpace) -> PETSc.Mat:
    """The mass matrix ``M`` of ``V`` (no boundary conditions), MPIAIJ with ``V``'s owned dofs
    as local rows: ``uᵀ M u`` is the squared L2 norm of the field with dof values ``u``. The caller
    owns it (``destroy()``). Collective on ``V.mesh.comm``."""
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    M = dolfinx.fem.petsc.assemble_matrix(dolfinx.fem.form(ufl.inner(u, v) * ufl.dx))
    M.assemble()
    return M
