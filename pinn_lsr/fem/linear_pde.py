"""A linear PDE with one grid-given input field, assembled by DOLFINx into PETSc and solved.

The forms are compiled once; each new input (a coefficient or a source on the s × s grid)
only updates the input Function's values and re-assembles ``A`` and ``b`` in place.
"""

import inspect
from collections.abc import Callable, Mapping, Sequence

import dolfinx_solver  # noqa: F401  (orders mpi4py before petsc4py)
import numpy as np
import ufl
from petsc4py import PETSc

import dolfinx.fem
import dolfinx.fem.petsc
from pinn_lsr.fem.assembly import assemble_system
from pinn_lsr.fem.grid_pde import INPUT_SPACES, GridPDE
from pinn_lsr.fem.instance import LinearInstance
from pinn_lsr.fem.mesh import Domain
from pinn_lsr.fem.solver import create_ksp, solve_checked

__all__ = ["INPUT_SPACES", "FormsCallable", "LinearPDE"]

#: forms(u, v, w, x) -> (a, L) or (a, L, s): trial u, test v, input field w, spatial coordinate x
#: (UFL). A problem whose ``a`` is not symmetric adds ``s``, an SPD bilinear form (for instance the
#: symmetric part of ``a``): the weighting of ``physics.norm=dual``, as ``weight`` is for
#: nonlinear problems. A problem with boundary terms (a traction, a flux) takes a fifth argument
#: ``ds``: the exterior-facet measure of the mesh's facet tags, ``ds(tag)`` integrating over the
#: facets of one tag.
FormsCallable = Callable[
    [ufl.Argument, ufl.Argument, dolfinx.fem.Function, ufl.SpatialCoordinate], tuple
]


class LinearPDE(GridPDE):
    """``A(w) u = b(w)`` from P1 finite elements with ``u = 0`` on the boundary (``dirichlet_tags``)
    (see :class:`~pinn_lsr.fem.grid_pde.GridPDE` for the input field).

    ``A`` need not be symmetric: the default solver is MUMPS LU (``fem.petsc_options``). When the
    forms give an SPD weighting ``s``, every :meth:`instance` carries it assembled (``S``, Dirichlet
    rows and columns eliminated as in ``A``), for the dual norm of physics LSR.

    Collective on ``domain.mesh.comm`` for construction, :meth:`assemble` and :meth:`solve`.
    """

    def __init__(
        self,
        domain: Domain,
        forms: FormsCallable,
        *,
        grid_size: int,
        input_space: str = "cell",
        petsc_options: Mapping | None = None,
        prefix: str = "fem_",
        dirichlet_tags: Sequence[int] | None = None,
        components: int = 1,
    ):
        super().__init__(
            domain,
            grid_size=grid_size,
            input_space=input_space,
            dirichlet_tags=dirichlet_tags,
            components=components,
        )
        u, v = ufl.TrialFunction(self.V), ufl.TestFunction(self.V)
        a, L, *weight = forms(
            u,
            v,
            self.input,
            ufl.SpatialCoordinate(domain.mesh),
            **boundary_arguments(forms, domain),
        )
        if len(weight) > 1:
            raise ValueError(
                f"forms must return (a, L) or (a, L, weight), got {2 + len(weight)} forms"
            )
        check_boundary_tags([a, L, *weight], domain)
        self.a = dolfinx.fem.form(a)
        self.L = dolfinx.fem.form(L)
        self.s = dolfinx.fem.form(weight[0]) if weight else None
        self.A = dolfinx.fem.petsc.create_matrix(self.a)
        self.b = dolfinx.fem.petsc.create_vector(self.V)
        self.ksp = create_ksp(domain.mesh.comm, prefix=prefix, options=petsc_options)
        self.ksp.setOperators(self.A)

    @property
    def solver_description(self) -> dict:
        return {"ksp_type": self.ksp.getType(), "pc_type": self.ksp.getPC().getType()}

    def instance(self, grid_values: np.ndarray) -> LinearInstance:
        """The assembled system of one input field (with the weighting ``S`` when the forms give
        one), as PETSc objects the caller owns. Collective."""
        self.set_input(grid_values)
        return assemble_system(self.a, self.L, self.bcs, weight=self.s)

    def assemble(self) -> tuple[PETSc.Mat, PETSc.Vec]:
        """Assemble ``A`` and ``b`` for the current input, boundary conditions applied.

        Collective. Returns the PETSc objects owned by this instance (overwritten on the next
        call); ``b`` has its ghosts accumulated and boundary rows set.
        """
        assemble_system(self.a, self.L, self.bcs, out=(self.A, self.b))
        return self.A, self.b

    def solve(self, grid_values: np.ndarray | None = None) -> dolfinx.fem.Function:
        """Solve for the given input field (or the current one); return ``self.solution``.

        Collective. Ghost values of the returned Function are up to date.

        Raises:
            SolverError: the KSP did not converge.
        """
        if grid_values is not None:
            self.set_input(grid_values)
        self.assemble()
        solve_checked(self.ksp, self.b, self.solution.x.petsc_vec)
        self.solution.x.scatter_forward()
        return self.solution

    def destroy(self) -> None:
        """Free the PETSc objects (collective); the instance is unusable afterwards."""
        super().destroy()
        for obj in (self.ksp, self.A, self.b):
            obj.destroy()


def boundary_arguments(forms: Callable, domain: Domain) -> dict:
    """``{"ds": measure}`` when ``forms`` takes a ``ds`` argument (the exterior-facet measure of
    ``domain.facet_tags``), else ``{}``. Local, but raises alike on every rank.

    Raises:
        ValueError: ``forms`` integrates over tagged boundaries but the mesh has no facet tags.
    """
    if "ds" not in inspect.signature(forms).parameters:
        return {}
    if domain.facet_tags is None:
        raise ValueError(
            "the problem's forms integrate over tagged boundary facets (ds), but mesh "
            f"{domain.source} has no facet tags: use a gmsh mesh with physical curves (mesh.file)"
        )
    return {"ds": ufl.Measure("ds", domain=domain.mesh, subdomain_data=domain.facet_tags)}


def check_boundary_tags(forms: Sequence, domain: Domain) -> None:
    """Raise ValueError (on every rank alike) when a form integrates over ``ds(tag)`` with a tag
    no facet of the mesh carries: the term would silently vanish. Collective."""
    used = sorted(
        {
            integral.subdomain_id()
            for form in forms
            for integral in form.integrals_by_type("exterior_facet")
            if isinstance(integral.subdomain_id(), int)
        }
    )  # UFL splits ds((3, 4)) into one integral per tag
    if not used:
        return
    local = (
        set() if domain.facet_tags is None else set(np.unique(domain.facet_tags.values).tolist())
    )
    present = set().union(*domain.mesh.comm.allgather(local))
    missing = [tag for tag in used if tag not in present]
    if missing:
        raise ValueError(
            f"the problem's forms integrate over boundary tags {missing}, which mesh "
            f"{domain.source} does not have (its facet tags: {sorted(present)})"
        )
