"""Coupling with an existing FEM code: physics LSR against a residual you assembled yourself.

:class:`CoupledProblem` is the :class:`~pinn_lsr.lsr.instances.FEMInstances` of a system that
does not come from ``problems/``. Its :meth:`~CoupledProblem.residual` is a
:class:`~pinn_lsr.lsr.physics.PhysicsResidual` that
:func:`~pinn_lsr.lsr.physics.refine_physics` refines against, exactly as for the built-in PDEs.
Two ways in:

* :meth:`CoupledProblem.from_petsc`: ``A`` (PETSc Mat, rows distributed as your code lays them
  out, local column size equal to the local row size), ``b`` (PETSc Vec, same layout) and
  optionally an SPD weighting ``S`` (for ``norm="dual"``). Several instances: lists.
* :meth:`CoupledProblem.from_forms`: a bilinear form ``a``, a linear form ``L`` on your function
  space ``V`` and your ``dirichletbc`` list. ``A``, ``b`` are assembled with the convention of
  :meth:`~pinn_lsr.fem.linear_pde.LinearPDE.assemble` (lifting, ``set_bc``, Dirichlet rows and
  columns replaced by identity), so the energy norm of an SPD form is available.

The network's output reaches the owned degrees of freedom in one of two ways:

* ``to_dofs``: a sparse ``P`` (owned rows × network outputs per input), for instance bilinear
  interpolation from the model's s × s grid (:func:`grid_to_owned_dofs`, built for you by
  ``from_forms(..., grid=s)``);
* ``points`` (DeepONet only): the coordinates of the owned dofs in the model's coordinates
  (the grid's box mapped to the unit square, :func:`owned_dof_points`). The DeepONet's trunk runs
  at those points, so its output *is* the dof vector (``P`` the identity) and each rank
  evaluates only its own rows.

:func:`to_function` turns refined owned dof values into a ``dolfinx.fem.Function`` on ``V``
(ghosts updated) to keep computing with, or to write to XDMF.

Every check is collective: a bad input on one rank raises the same ``ValueError`` on all ranks.
"""

from collections.abc import Callable, Sequence

import dolfinx_solver  # noqa: F401  (orders mpi4py before petsc4py)
import numpy as np
import scipy.sparse
import torch
import ufl
from mpi4py import MPI
from petsc4py import PETSc
from torch import nn

import dolfinx.fem
import dolfinx.fem.petsc
from pinn_lsr.fem.instance import LinearInstance
from pinn_lsr.fem.norms import matrix_norm
from pinn_lsr.fem.transfer import Grid, grid_to_dofs_local
from pinn_lsr.lsr.jacobian import ModelJacobian
from pinn_lsr.lsr.physics import PhysicsResidual
from pinn_lsr.models.deeponet import DeepONet

EVALUATE_AT = ("grid", "dofs")


def raise_collectively(
    comm: MPI.Comm, message: str | None, error: type[Exception] = ValueError
) -> None:
    """Raise ``error`` on every rank if any rank has a ``message`` (its own, else the first). Collective."""
    messages = comm.allgather(message)
    if any(messages):
        first = next(r for r, m in enumerate(messages) if m)
        raise error(message if message else f"on rank {first}: {messages[first]}")


# -- maps between the network and the dofs -------------------------------------------------------------


def n_owned_dofs(V: dolfinx.fem.FunctionSpace) -> int:
    """This rank's owned dof values of ``V`` (block size included)."""
    return V.dofmap.index_map.size_local * V.dofmap.index_map_bs


def bounding_grid(V: dolfinx.fem.FunctionSpace, size: int) -> Grid:
    """An s × s :class:`Grid` on the bounding box of ``V``'s mesh (as the built-in PDEs use). Collective."""
    x = V.mesh.geometry.x[:, :2]
    lower, upper = np.empty(2), np.empty(2)
    V.mesh.comm.Allreduce(x.min(axis=0) if len(x) else np.full(2, np.inf), lower, op=MPI.MIN)
    V.mesh.comm.Allreduce(x.max(axis=0) if len(x) else np.full(2, -np.inf), upper, op=MPI.MAX)
    return Grid(int(size), tuple(lower), tuple(upper))


def _scalar_space(V: dolfinx.fem.FunctionSpace, what: str) -> None:
    message = None
    if V.dofmap.index_map_bs != 1:
        message = (
            f"{what} needs a scalar function space (block size {V.dofmap.index_map_bs} here); "
            "pass your own to_dofs map for vector-valued spaces"
        )
    raise_collectively(V.mesh.comm, message)


def grid_to_owned_dofs(V: dolfinx.fem.FunctionSpace, grid: Grid) -> scipy.sparse.csr_matrix:
    """``P``: bilinear interpolation from ``grid`` to ``V``'s owned dof coordinates, (n_owned, s*s)
    (:func:`~pinn_lsr.fem.transfer.grid_to_dofs_local`; any Lagrange degree). Local."""
    return grid_to_dofs_local(V, grid)[: n_owned_dofs(V)].tocsr()


def model_coordinates(coordinates: np.ndarray, grid: Grid) -> np.ndarray:
    """Physical coordinates (n, ≥2) -> the model's coordinates (n, 2): ``grid``'s box mapped to the
    unit square, where a DeepONet's default points (the grid nodes) live."""
    lower, upper = np.asarray(grid.lower), np.asarray(grid.upper)
    return (np.asarray(coordinates, dtype=np.float64)[:, :2] - lower) / (upper - lower)


def owned_dof_points(V: dolfinx.fem.FunctionSpace, grid: Grid) -> np.ndarray:
    """The owned dofs' coordinates in the model's coordinates, (n_owned, 2). Collective (check)."""
    _scalar_space(V, "evaluating a DeepONet at the dof coordinates")
    return model_coordinates(V.tabulate_dof_coordinates()[: n_owned_dofs(V)], grid)


def dof_point_residual(
    model: nn.Module,
    inputs: torch.Tensor,
    points: np.ndarray,
    systems: Sequence[LinearInstance],
    *,
    norm: str,
    comm: MPI.Comm,
    chunk_tangents: int = 64,
) -> PhysicsResidual:
    """The physics residual of a DeepONet evaluated at this rank's dof ``points`` (``P`` the identity). Collective."""
    raise_collectively(
        comm,
        None
        if isinstance(model, DeepONet)
        else f"evaluating at the dof coordinates needs a DeepONet (its trunk takes points); got a "
        f"{type(model).__name__}: use the grid-to-dof map (evaluate_at='grid' / to_dofs) instead",
    )
    channels = getattr(model, "out_channels", 1)
    raise_collectively(
        comm,
        None
        if channels == 1
        else f"evaluating at the dof coordinates needs a scalar DeepONet (out_channels=1), got "
        f"out_channels={channels}: pass a to_dofs map that interleaves the channels as your dofs do",
    )
    dtype = next(model.parameters()).dtype
    pts = torch.as_tensor(np.asarray(points), dtype=dtype)
    jacobian = ModelJacobian(
        model,
        inputs,
        forward=lambda m, a: m(a, pts),
        chunk_samples=len(inputs),
        chunk_tangents=chunk_tangents,
    )
    identity = scipy.sparse.identity(len(pts), format="csr")
    return PhysicsResidual(jacobian, systems, identity, norm=norm, comm=comm, local_outputs=True)


# -- systems ---------------------------------------------------------------------------------------------


def assemble_system(
    a, L, bcs: Sequence[dolfinx.fem.DirichletBC] = (), *, weight=None
) -> LinearInstance:
    """``A``, ``b`` (and the SPD weighting ``S`` from the bilinear form ``weight``) of UFL or compiled
    forms, boundary conditions applied as :meth:`LinearPDE.assemble` does. The caller owns the
    PETSc objects (``destroy()``). Collective."""
    a, L = _compiled(a), _compiled(L)
    bcs = list(bcs)
    A = dolfinx.fem.petsc.assemble_matrix(a, bcs=bcs)
    A.assemble()
    b = dolfinx.fem.petsc.create_vector(L.function_spaces[0])
    with b.localForm() as b_local:
        b_local.set(0.0)
    dolfinx.fem.petsc.assemble_vector(b, L)
    dolfinx.fem.petsc.apply_lifting(b, [a], bcs=[bcs])
    b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
    dolfinx.fem.petsc.set_bc(b, bcs)
    S = None
    if weight is not None:
        S = dolfinx.fem.petsc.assemble_matrix(_compiled(weight), bcs=bcs)
        S.assemble()
    return LinearInstance(A, b, S)


def _compiled(form):
    return form if isinstance(form, dolfinx.fem.Form) else dolfinx.fem.form(form)


def _finite(obj) -> bool:
    """All entries of a PETSc Mat or Vec finite (a NaN or inf propagates into the norm). Collective."""
    value = obj.norm(PETSc.NormType.FROBENIUS) if isinstance(obj, PETSc.Mat) else obj.norm()
    return bool(np.isfinite(value))


def _check_system(system: LinearInstance, k: int, n_rows: int | None, comm: MPI.Comm) -> int:
    """Layout and finiteness of instance ``k``; returns its local rows. Collective."""
    rows, cols = system.A.getLocalSize()
    message = None
    if rows != cols:
        message = (
            f"instance {k}: A has {rows} local rows but {cols} local columns; pinn_lsr multiplies A with "
            "owned dof values, so the column layout must be the row layout"
        )
    elif system.b.getLocalSize() != rows:
        message = f"instance {k}: b has {system.b.getLocalSize()} local entries but A has {rows} local rows"
    elif system.weight is not None and system.weight.getLocalSize() != (rows, rows):
        message = f"instance {k}: the weighting S has local size {system.weight.getLocalSize()}, A {(rows, cols)}"
    elif n_rows is not None and rows != n_rows:
        message = f"instance {k}: A has {rows} local rows, instance 0 has {n_rows}"
    raise_collectively(comm, message)
    for name, obj in (("A", system.A), ("b", system.b), ("S", system.weight)):
        if obj is not None and not _finite(obj):
            raise ValueError(f"instance {k}: {name} contains NaN or infinite values")
    return rows


def _owned_array(value, n_rows: int) -> np.ndarray:
    """Owned dof values from an array, a PETSc Vec or a dolfinx Function."""
    if isinstance(value, dolfinx.fem.Function):
        return value.x.array[:n_rows].copy()
    if isinstance(value, PETSc.Vec):
        return value.getArray(readonly=True)[:n_rows].copy()
    return np.asarray(value, dtype=np.float64)


# -- the coupled problem ---------------------------------------------------------------------------------


class CoupledProblem:
    """K instances of a user-supplied FEM system, with the network inputs that go with them.

    Args:
        systems: the K systems (:class:`LinearInstance`: ``A``, ``b``, optional ``S``).
        inputs: the network inputs, one per system (for the grid operators: (K, s, s)).
        to_dofs: ``P`` (n_owned, outputs per input), sparse or dense; or
        points: (n_owned, 2) dof coordinates in the model's coordinates (DeepONet; ``P = I``).
        references: owned dof values (arrays, PETSc Vecs or Functions) to measure errors against.
        space: ``V``, the function space of the dofs: for :meth:`to_function` and for relative
            errors in the L2 norm (mass matrix); without it errors are relative Euclidean norms.
        owns_systems: destroy the systems' PETSc objects in :meth:`destroy` (True when pinn_lsr
            assembled them, False for the user's own A, b).

    Collective on the systems' communicator.
    """

    def __init__(
        self,
        systems: Sequence[LinearInstance],
        inputs,
        *,
        to_dofs=None,
        points=None,
        references=None,
        space: dolfinx.fem.FunctionSpace | None = None,
        owns_systems: bool = False,
    ):
        self.systems = list(systems)
        if not self.systems:
            raise ValueError("a coupled problem needs at least one system")
        self.comm = self.systems[0].A.comm.tompi4py()
        self.inputs = torch.as_tensor(np.asarray(inputs) if not torch.is_tensor(inputs) else inputs)
        self.space, self.owns_systems = space, owns_systems
        self._mass = None
        raise_collectively(
            self.comm,
            None
            if len(self.inputs) == len(self.systems)
            else f"{len(self.inputs)} network inputs but {len(self.systems)} FEM systems "
            "(inputs is a batch, one per system: (K, ...))",
        )
        n = None
        for k, system in enumerate(self.systems):
            n = _check_system(system, k, n, self.comm)
        self.n_owned = n
        if space is not None:
            owned = n_owned_dofs(space)
            raise_collectively(
                self.comm,
                None
                if owned == n
                else f"the space V owns {owned} dof values on this rank but A has {n} local rows",
            )
        if (to_dofs is None) == (points is None):
            raise ValueError(
                "give exactly one of to_dofs (a map from the network's outputs to the owned dofs) "
                "and points (the owned dofs' coordinates, for a DeepONet)"
            )
        self.to_dofs = self.points = None
        if to_dofs is not None:
            P = scipy.sparse.csr_matrix(to_dofs)
            message = None
            if P.shape[0] != n:
                message = f"to_dofs has {P.shape[0]} rows but A has {n} local rows (owned dofs) on this rank"
            elif not np.isfinite(P.data).all():
                message = "to_dofs contains NaN or infinite values"
            raise_collectively(self.comm, message)
            columns = self.comm.allgather(P.shape[1])
            raise_collectively(
                self.comm,
                None
                if len(set(columns)) == 1
                else f"to_dofs must have the same number of columns (network outputs) on every rank, "
                f"got {columns}",
            )
            self.to_dofs = P
        else:
            pts = np.asarray(points, dtype=np.float64)
            message = None
            if pts.ndim != 2 or pts.shape != (n, 2):
                message = f"points must have shape (owned dofs, 2) = ({n}, 2), got {pts.shape}"
            elif not np.isfinite(pts).all():
                message = "points contain NaN or infinite values"
            raise_collectively(self.comm, message)
            self.points = pts
        self.references = None
        if references is not None:
            refs = [
                _owned_array(r, n)
                for r in (references if isinstance(references, (list, tuple)) else [references])
            ]
            raise_collectively(
                self.comm,
                None
                if len(refs) == len(self.systems) and all(r.shape == (n,) for r in refs)
                else f"references must be {len(self.systems)} arrays of the {n} owned dof values",
            )
            self.references = refs

    # -- constructors

    @classmethod
    def from_petsc(
        cls,
        A,
        b,
        inputs,
        *,
        to_dofs=None,
        points=None,
        weight=None,
        reference=None,
        space: dolfinx.fem.FunctionSpace | None = None,
    ) -> "CoupledProblem":
        """From your assembled ``A`` (Mat), ``b`` (Vec) and optional SPD weighting ``weight`` (Mat), or
        lists of them for several instances. The PETSc objects stay yours. Collective."""
        many = isinstance(A, (list, tuple))
        As, bs = (list(A), list(b)) if many else ([A], [b])
        weights = list(weight) if isinstance(weight, (list, tuple)) else [weight] * len(As)
        if not (len(As) == len(bs) == len(weights)):
            raise ValueError(
                f"got {len(As)} matrices, {len(bs)} right-hand sides and {len(weights)} weightings"
            )
        systems = [LinearInstance(Ak, bk, Sk) for Ak, bk, Sk in zip(As, bs, weights)]
        references = (
            reference if reference is None or isinstance(reference, (list, tuple)) else [reference]
        )
        return cls(
            systems,
            inputs,
            to_dofs=to_dofs,
            points=points,
            references=references,
            space=space,
            owns_systems=False,
        )

    @classmethod
    def from_forms(
        cls,
        a,
        L,
        bcs: Sequence[dolfinx.fem.DirichletBC],
        inputs,
        *,
        update: Callable[[int], None] | None = None,
        weight=None,
        grid: Grid | int | None = None,
        evaluate_at: str = "grid",
        to_dofs=None,
        references=None,
        space: dolfinx.fem.FunctionSpace | None = None,
    ) -> "CoupledProblem":
        """Assemble your forms (:func:`assemble_system`) once per network input and couple them.

        Args:
            a, L: bilinear and linear form (UFL or compiled) on your space ``V``.
            bcs: your Dirichlet conditions.
            inputs: the network inputs (K, ...), e.g. your coefficient sampled on the model's grid.
            update: called with ``k`` before instance k is assembled, to set the coefficients your
                forms depend on to those of ``inputs[k]`` (needed when K > 1).
            weight: an SPD bilinear form, assembled as ``S`` for ``norm="dual"``.
            grid: the model's grid (a :class:`Grid`, or its size s for the mesh's bounding box).
            evaluate_at: ``grid`` (``P`` = bilinear interpolation from the grid to the dofs) or
                ``dofs`` (a DeepONet evaluated at the dof coordinates).
            to_dofs: your own ``P`` instead (then ``grid`` is not needed).
            references: owned dof values of your FEM solutions, for :meth:`errors`.
            space: ``V``; found from ``a`` when ``a`` is a UFL form (needed for compiled forms).
        """
        if evaluate_at not in EVALUATE_AT:
            raise ValueError(f"evaluate_at must be one of {EVALUATE_AT}, got {evaluate_at!r}")
        V = space
        if V is None:
            if isinstance(a, dolfinx.fem.Form):
                raise ValueError(
                    "a is a compiled form: pass its function space too (space=V), or the UFL form"
                )
            V = a.arguments()[0].ufl_function_space()
        a, L = _compiled(a), _compiled(L)
        K = len(inputs)
        if K > 1 and update is None:
            raise ValueError(
                f"{K} inputs but no update(k) to set the forms' coefficients between instances"
            )
        points = None
        if to_dofs is None:
            if grid is None:
                raise ValueError(
                    "give the model's grid (a Grid or its size) or your own to_dofs map"
                )
            grid = grid if isinstance(grid, Grid) else bounding_grid(V, grid)
            if evaluate_at == "dofs":
                points = owned_dof_points(V, grid)
            else:
                to_dofs = grid_to_owned_dofs(V, grid)
        weight = None if weight is None else _compiled(weight)
        systems = []
        for k in range(K):
            if update is not None:
                update(k)
            systems.append(assemble_system(a, L, bcs, weight=weight))
        try:
            return cls(
                systems,
                inputs,
                to_dofs=to_dofs,
                points=points,
                references=references,
                space=V,
                owns_systems=True,
            )
        except ValueError:
            for system in systems:
                system.destroy()
            raise

    # -- what refinement and reports need

    def __len__(self) -> int:
        return len(self.systems)

    def model_inputs(self, model: nn.Module) -> torch.Tensor:
        return self.inputs.to(next(model.parameters()).dtype)

    def residual(
        self, model: nn.Module, *, norm: str = "energy", chunk_tangents: int = 64
    ) -> PhysicsResidual:
        """The linearizable residual ``A_k P u_θ(a_k) − b_k`` for :func:`refine_physics`. Collective."""
        inputs = self.model_inputs(model)
        if self.points is not None:
            return dof_point_residual(
                model,
                inputs,
                self.points,
                self.systems,
                norm=norm,
                comm=self.comm,
                chunk_tangents=chunk_tangents,
            )
        jacobian = ModelJacobian(
            model, inputs, chunk_samples=len(inputs), chunk_tangents=chunk_tangents
        )
        raise_collectively(
            self.comm,
            None
            if jacobian.n_outputs == self.to_dofs.shape[1]
            else f"the model has {jacobian.n_outputs} outputs per input but to_dofs takes "
            f"{self.to_dofs.shape[1]} (its columns)",
        )
        return PhysicsResidual(jacobian, self.systems, self.to_dofs, norm=norm, comm=self.comm)

    def network_fields(self, model: nn.Module) -> list[np.ndarray]:
        """The model's predictions as owned dof values, per instance. Local."""
        inputs = self.model_inputs(model)
        with torch.no_grad():
            if self.points is not None:
                return list(
                    model(inputs, torch.as_tensor(self.points, dtype=inputs.dtype)).double().numpy()
                )
            out = model(inputs).double().numpy().reshape(len(self), -1)
        return [self.to_dofs @ row for row in out]

    def residual_norm(self, fields: Sequence[np.ndarray]) -> float:
        """``sqrt(Σ_k ||A_k u_k − b_k||²)`` over instances and ranks. Collective."""
        local = sum(float(np.sum(s.residual(u) ** 2)) for s, u in zip(self.systems, fields))
        return float(np.sqrt(self.comm.allreduce(local)))

    def errors(self, fields: Sequence[np.ndarray]) -> list[float]:
        """Relative errors against the references: L2 (mass matrix of ``space``) if the space is known,
        else the Euclidean norm of the dof vectors. Collective."""
        if self.references is None:
            raise ValueError("no reference solutions were given (references=... / reference=...)")
        if self.space is None:

            def norm(u):
                return float(np.sqrt(self.comm.allreduce(float(u @ u))))
        else:
            mass = self.mass_matrix()

            def norm(u):
                return matrix_norm(mass, u)

        return [norm(u - ref) / norm(ref) for u, ref in zip(fields, self.references)]

    def mass_matrix(self) -> PETSc.Mat:
        """The mass matrix of ``space`` (no boundary conditions), assembled once. Collective."""
        if self.space is None:
            raise ValueError("no function space was given (space=V)")
        if self._mass is None:
            u, v = ufl.TrialFunction(self.space), ufl.TestFunction(self.space)
            self._mass = dolfinx.fem.petsc.assemble_matrix(
                dolfinx.fem.form(ufl.inner(u, v) * ufl.dx)
            )
            self._mass.assemble()
        return self._mass

    def to_function(self, values: np.ndarray, *, name: str = "u") -> dolfinx.fem.Function:
        """Owned dof values -> a Function on ``space`` with ghosts updated. Collective."""
        if self.space is None:
            raise ValueError("no function space was given (space=V); use to_function(values, V)")
        return to_function(values, self.space, name=name)

    def destroy(self) -> None:
        """Free the PETSc objects pinn_lsr created (and the systems if it assembled them). Collective."""
        for system in self.systems:
            if self.owns_systems:
                system.destroy()
            elif system._weight_ksp is not None:
                system._weight_ksp.destroy()
                system._weight_ksp = None
        if self._mass is not None:
            self._mass.destroy()
            self._mass = None


def to_function(
    values: np.ndarray, V: dolfinx.fem.FunctionSpace, *, name: str = "u"
) -> dolfinx.fem.Function:
    """A ``dolfinx.fem.Function`` on ``V`` with the owned dof ``values`` (e.g. a refined field from
    ``refine_physics(...).fields[k]``), ghost values updated. Collective."""
    values = np.asarray(values, dtype=np.float64)
    n = n_owned_dofs(V)
    raise_collectively(
        V.mesh.comm,
        None
        if values.shape == (n,)
        else f"values must hold the {n} owned dof values of V on this rank, got shape {values.shape}",
    )
    u = dolfinx.fem.Function(V, name=name)
    u.x.array[:n] = values
    u.x.scatter_forward()
    return u
