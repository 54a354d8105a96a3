"""One FEM instance set: K assembled systems, the network inputs that go with them, how the
network's output reaches the owned dofs, and what refinement and its reports need.

Three ways in, one type (:class:`FEMInstances`) for physics LSR, I-LSR and the gradient baseline:

* :meth:`FEMInstances.from_pde`: a built-in problem (a ``LinearPDE`` or ``NonlinearPDE``) and its
  input fields on the grid, optionally solved for reference solutions.
* :meth:`FEMInstances.from_petsc`: your assembled ``A`` (PETSc Mat, rows distributed as your code
  lays them out, local column size equal to the local row size), ``b`` (PETSc Vec, same layout)
  and optionally an SPD weighting ``S`` (for ``norm="dual"``). Several instances: lists.
* :meth:`FEMInstances.from_forms`: a bilinear form ``a``, a linear form ``L`` on your function
  space ``V`` and your ``dirichletbc`` list, assembled by
  :func:`~pinn_lsr.fem.assembly.assemble_system` (lifting, ``set_bc``, Dirichlet rows and columns
  replaced by identity), so the energy norm of an SPD form is available.

The network's output reaches the owned degrees of freedom in one of two ways:

* ``to_dofs``: a sparse ``P`` (owned rows × network outputs per input), for instance bilinear
  interpolation from the model's s × s grid (:func:`~pinn_lsr.fem.dofs.grid_to_owned_dofs`,
  built for you by ``from_pde`` and ``from_forms(..., grid=s)``);
* ``points`` (DeepONet only): the coordinates of the owned dofs in the model's coordinates
  (:func:`~pinn_lsr.fem.dofs.owned_dof_points`). The DeepONet's trunk runs at those points, so
  its output *is* the dof vector (``P`` the identity) and each rank evaluates only its own rows.

Every check of a user's input is collective: a bad input on one rank raises the same
``ValueError`` on all ranks (:mod:`pinn_lsr.physics.checks`).
"""

import time
from collections.abc import Callable, Sequence

import dolfinx_solver  # noqa: F401  (orders mpi4py before petsc4py)
import numpy as np
import scipy.sparse
import torch
from petsc4py import PETSc
from torch import nn

import dolfinx.fem
from pinn_lsr.fem.assembly import assemble_mass_matrix, assemble_system, compiled
from pinn_lsr.fem.dofs import (
    bounding_grid,
    grid_to_owned_dofs,
    n_owned_dofs,
    owned_dof_points,
    to_function,
)
from pinn_lsr.fem.grid_pde import GridPDE
from pinn_lsr.fem.instance import LinearInstance
from pinn_lsr.fem.norms import relative_error
from pinn_lsr.fem.transfer import Grid
from pinn_lsr.lsr.jacobian import ModelJacobian
from pinn_lsr.parallel.mpi import raise_collectively
from pinn_lsr.physics.checks import (
    check_points,
    check_references,
    check_space,
    check_systems,
    check_to_dofs,
)
from pinn_lsr.physics.residual import PhysicsResidual, dof_point_residual

EVALUATE_AT = ("grid", "dofs")


class FEMInstances:
    """K instances of a FEM system with their network inputs. Build it with :meth:`from_pde`,
    :meth:`from_petsc` or :meth:`from_forms` (the constructor itself checks nothing).

    Args:
        systems: the K systems (:class:`LinearInstance`: ``A``, ``b``, optional ``S``).
        inputs: the network inputs, one per system ((K, s, s) for the grid operators).
        pde: the built-in problem the systems come from, or None (user systems).
        to_dofs: ``P`` (n_owned, outputs per input); from ``pde`` when None.
        points: (n_owned, 2) dof coordinates in the model's coordinates (DeepONet; ``P = I``).
        references: owned dof values (n_owned,) of the FEM solutions, or None.
        space: ``V``, the function space of the dofs (``pde.V`` by default): for
            :meth:`to_function` and for relative errors in the L2 norm (mass matrix); without it
            errors are relative Euclidean norms of the dof vectors.
        grid: the model's grid (``pde.grid`` by default), for dof coordinates on demand.
        owns_systems: :meth:`destroy` frees the systems' PETSc objects (False for borrowed ones).

    Collective on the systems' communicator.
    """

    def __init__(
        self,
        systems: Sequence[LinearInstance],
        inputs,
        *,
        pde: GridPDE | None = None,
        to_dofs: scipy.sparse.csr_matrix | None = None,
        points: np.ndarray | None = None,
        references: list[np.ndarray] | None = None,
        space: dolfinx.fem.FunctionSpace | None = None,
        grid: Grid | None = None,
        owns_systems: bool = True,
    ):
        self.systems = list(systems)
        if not self.systems:
            raise ValueError("an instance set needs at least one system")
        self.inputs = inputs if torch.is_tensor(inputs) else np.asarray(inputs)
        self.pde = pde
        self.space = pde.V if space is None and pde is not None else space
        self.grid = pde.grid if grid is None and pde is not None else grid
        self.comm = pde.domain.mesh.comm if pde is not None else self.systems[0].A.comm.tompi4py()
        self._to_dofs, self.points = to_dofs, points
        self.references = references
        self.owns_systems = owns_systems
        self.solve_seconds: list[float] = []  # wall time of each FEM solve of from_pde
        self._mass = None

    # -- constructors

    @classmethod
    def from_pde(cls, pde: GridPDE, inputs: np.ndarray, *, solve: bool = True) -> "FEMInstances":
        """Assemble (and with ``solve``, solve) every instance of a built-in problem for its input
        fields (K, s, s); the wall time of each FEM solve is kept in ``solve_seconds``.
        Collective."""
        systems, references, seconds = [], [], []
        for field in inputs:
            systems.append(pde.instance(field))
            if solve:
                start = time.perf_counter()
                references.append(pde.solve(field).x.array[: pde.n_owned].copy())
                seconds.append(time.perf_counter() - start)
        instances = cls(
            systems, np.asarray(inputs), pde=pde, references=references if solve else None
        )
        instances.solve_seconds = seconds
        return instances

    @classmethod
    def from_petsc(
        cls, A, b, inputs, *, to_dofs=None, points=None, weight=None, reference=None, space=None
    ) -> "FEMInstances":
        """From your assembled ``A`` (Mat), ``b`` (Vec) and optional SPD weighting ``weight``
        (Mat), or lists of them for several instances, with ``to_dofs`` or ``points`` (module
        docstring), ``reference`` solutions (owned dof values, Vecs or Functions; a list for
        several instances) and the space ``V`` (for L2 errors and :meth:`to_function`). The PETSc
        objects stay yours. Collective."""
        many = isinstance(A, (list, tuple))
        As, bs = (list(A), list(b)) if many else ([A], [b])
        weights = list(weight) if isinstance(weight, (list, tuple)) else [weight] * len(As)
        if not (len(As) == len(bs) == len(weights)):
            raise ValueError(
                f"got {len(As)} matrices, {len(bs)} right-hand sides and {len(weights)} weightings"
            )
        systems = [LinearInstance(Ak, bk, Sk) for Ak, bk, Sk in zip(As, bs, weights)]
        instances = cls(systems, inputs, space=space, owns_systems=False)
        instances._check(to_dofs, points, reference)
        return instances

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
    ) -> "FEMInstances":
        """Assemble your forms once per network input. Collective.

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
        a, L = compiled(a), compiled(L)
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
        weight = None if weight is None else compiled(weight)
        systems = []
        for k in range(K):
            if update is not None:
                update(k)
            systems.append(assemble_system(a, L, bcs, weight=weight))
        instances = cls(systems, inputs, space=V, grid=grid if isinstance(grid, Grid) else None)
        try:
            instances._check(to_dofs, points, references)
        except ValueError:
            instances.destroy()
            raise
        return instances

    def _check(self, to_dofs, points, references) -> None:
        """Validate a user's systems, map and references and keep them. Collective."""
        n = check_systems(self.systems, len(self.inputs), self.comm)
        if self.space is not None:
            check_space(n_owned_dofs(self.space), n, self.comm)
        if (to_dofs is None) == (points is None):
            raise ValueError(
                "give exactly one of to_dofs (a map from the network's outputs to the owned dofs) "
                "and points (the owned dofs' coordinates, for a DeepONet)"
            )
        if to_dofs is not None:
            self._to_dofs = check_to_dofs(to_dofs, n, self.comm)
        else:
            self.points = check_points(points, n, self.comm)
        if references is not None:
            self.references = check_references(references, len(self.systems), n, self.comm)

    # -- the set

    def __len__(self) -> int:
        return len(self.systems)

    @property
    def n_owned(self) -> int:
        """This rank's owned dof values per instance (the local rows of ``A``)."""
        return self.pde.n_owned if self.pde is not None else self.systems[0].A.getLocalSize()[0]

    @property
    def to_dofs(self) -> scipy.sparse.csr_matrix | None:
        """``P`` on the owned dofs, (n_owned, outputs per input); None for a set evaluated at
        the dof coordinates."""
        if self._to_dofs is None and self.pde is not None and self.points is None:
            self._to_dofs = self.pde.grid_to_owned_dofs()
        return self._to_dofs

    @property
    def evaluate_at(self) -> str:
        """How the network reaches the dofs by default: ``dofs`` (points given) or ``grid``."""
        return "dofs" if self.points is not None else "grid"

    def subset(self, index: list[int]) -> "FEMInstances":
        """The instances ``index``, sharing the PETSc objects (its :meth:`destroy` frees only
        what it made itself)."""
        refs = None if self.references is None else [self.references[k] for k in index]
        return FEMInstances(
            [self.systems[k] for k in index],
            self.inputs[index],
            pde=self.pde,
            to_dofs=self._to_dofs,
            points=self.points,
            references=refs,
            space=self.space,
            grid=self.grid,
            owns_systems=False,
        )

    def model_inputs(self, model: nn.Module) -> torch.Tensor:
        """The inputs as a tensor of the model's dtype, (K, ...). Local."""
        return torch.as_tensor(self.inputs).to(next(model.parameters()).dtype)

    # -- the network on the dofs

    def _where(self, evaluate_at: str | None) -> str:
        where = self.evaluate_at if evaluate_at is None else evaluate_at
        if where not in EVALUATE_AT:
            raise ValueError(f"evaluate_at must be one of {EVALUATE_AT}, got {where!r}")
        if where == "grid" and self.to_dofs is None:
            raise ValueError("evaluate_at='grid' needs a to_dofs map; these instances have points")
        return where

    def dof_points(self) -> np.ndarray:
        """The owned dofs' coordinates in the model's coordinates, (n_owned, 2). Collective."""
        if self.points is not None:
            return self.points
        if self.space is None or self.grid is None:
            raise ValueError(
                "evaluating at the dof coordinates needs points=..., or the space and the grid"
            )
        return owned_dof_points(self.space, self.grid)

    def residual(
        self,
        model: nn.Module,
        *,
        norm: str = "energy",
        chunk_tangents: int = 64,
        evaluate_at: str | None = None,
    ) -> PhysicsResidual:
        """The linearizable FEM residual ``A_k P u_θ(a_k) − b_k`` of ``model``'s predictions, for
        :func:`~pinn_lsr.physics.refine.refine_physics`. Collective.

        ``evaluate_at`` (default :attr:`evaluate_at`): ``grid`` (through ``P``) or ``dofs``
        (DeepONet only: the trunk runs at the owned dof coordinates, ``P`` the identity).
        """
        where = self._where(evaluate_at)
        inputs = self.model_inputs(model)
        if where == "dofs":
            return dof_point_residual(
                model,
                inputs,
                self.dof_points(),
                self.systems,
                norm=norm,
                comm=self.comm,
                chunk_tangents=chunk_tangents,
            )
        jacobian = ModelJacobian(
            model, inputs, chunk_samples=len(self), chunk_tangents=chunk_tangents
        )
        raise_collectively(
            self.comm,
            None
            if jacobian.n_outputs == self.to_dofs.shape[1]
            else f"the model has {jacobian.n_outputs} outputs per input but to_dofs takes "
            f"{self.to_dofs.shape[1]} (its columns)",
        )
        return PhysicsResidual(jacobian, self.systems, self.to_dofs, norm=norm, comm=self.comm)

    def network_fields(
        self, model: nn.Module, *, evaluate_at: str | None = None
    ) -> list[np.ndarray]:
        """The model's predictions as owned dof values (n_owned,) float64, per instance. Local."""
        inputs = self.model_inputs(model)
        with torch.no_grad():
            if self._where(evaluate_at) == "dofs":
                points = torch.as_tensor(self.dof_points(), dtype=inputs.dtype)
                return list(model(inputs, points).double().numpy())
            out = model(inputs).double().numpy().reshape(len(self), -1)
        return [self.to_dofs @ row for row in out]

    def dof_predictions(self, model: nn.Module, *, evaluate_at: str | None = None) -> torch.Tensor:
        """The model's predictions at the owned dofs as a differentiable tensor (K, n_owned) of
        the model's dtype: ``P u_θ(a_k)`` or the DeepONet at the dof points. Local."""
        inputs = self.model_inputs(model)
        if self._where(evaluate_at) == "dofs":
            return model(inputs, torch.as_tensor(self.dof_points(), dtype=inputs.dtype))
        P = self.to_dofs.tocoo()
        P = torch.sparse_coo_tensor(
            np.vstack([P.row, P.col]).astype(np.int64),
            P.data,
            P.shape,
            dtype=inputs.dtype,
            check_invariants=True,
        )
        return torch.sparse.mm(P, model(inputs).reshape(len(self), -1).T).T

    # -- measures

    def residual_norm(self, fields: Sequence[np.ndarray]) -> float:
        """``sqrt(Σ_k ||A_k u_k − b_k||²)`` over instances and ranks. Collective."""
        local = sum(float(np.sum(s.residual(u) ** 2)) for s, u in zip(self.systems, fields))
        return float(np.sqrt(self.comm.allreduce(local)))

    def errors(self, fields: Sequence[np.ndarray]) -> list[float]:
        """Relative errors of owned dof fields against the references: L2 (mass matrix) when the
        space is known, else the Euclidean norm of the dof vectors. Collective."""
        if self.references is None:
            raise ValueError(
                "no reference solutions: from_pde(..., solve=True), or references=... / "
                "reference=..."
            )
        if self.space is None:

            def norm(u):
                return float(np.sqrt(self.comm.allreduce(float(u @ u))))

            return [norm(u - ref) / norm(ref) for u, ref in zip(fields, self.references)]
        mass = self.mass_matrix()
        return [relative_error(mass, u, ref) for u, ref in zip(fields, self.references)]

    def mass_matrix(self) -> PETSc.Mat:
        """The mass matrix of the space (no boundary conditions), assembled once. Collective."""
        if self.pde is not None:
            return self.pde.mass_matrix()
        if self.space is None:
            raise ValueError("no function space was given (space=V)")
        if self._mass is None:
            self._mass = assemble_mass_matrix(self.space)
        return self._mass

    def on_grid(self, fields: Sequence[np.ndarray]) -> np.ndarray:
        """Owned dof fields -> grid values (K, s, s), identical on all ranks (instances of a
        built-in problem only). Collective."""
        if self.pde is None:
            raise ValueError("grid values need the instances of a built-in problem (from_pde)")
        return np.stack([self.pde.field_on_grid(u) for u in fields])

    def to_function(self, values: np.ndarray, *, name: str = "u") -> dolfinx.fem.Function:
        """Owned dof values -> a Function on the space with ghosts updated. Collective."""
        if self.space is None:
            raise ValueError("no function space was given (space=V); use to_function(values, V)")
        return to_function(values, self.space, name=name)

    def destroy(self) -> None:
        """Free the PETSc objects this set made (the systems too when it owns them). Collective."""
        for system in self.systems:
            if self.owns_systems:
                system.destroy()
            else:
                system.release_weight_solver()
        if self._mass is not None:
            self._mass.destroy()
            self._mass = None
