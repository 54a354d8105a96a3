"""The physics residual: a model's predictions on K FEM instances, linearized, and its norms.

For instances k = 1..K (network inputs a_k) the network's output is mapped to the owned degrees
of freedom by ``P`` and the residual is ``r_k(θ) = A_k P u_θ(a_k) − b_k``, with ``A_k``, ``b_k``
assembled by DOLFINx (Dirichlet rows are identity rows, so the boundary values are one block of
the residual). Each rank holds the rows of the dofs it owns in DOLFINx's partition; the network
itself is evaluated on every rank (it is small next to the FEM rows). Linearized at θ0 with
``δ = V c``: ``r_k ≈ r_k0 + A_k Φ_k c``, ``Φ_k = P J_k V`` (owned rows) and ``A_k Φ_k`` a PETSc
``MatMatMult``. A DeepONet can instead run at the owned dof coordinates
(:func:`dof_point_residual`): its outputs are then this rank's rows and ``P`` the identity.

For nonlinear residuals ``F_k(u)`` the instances linearize at the network's field first:
``A_k = ∂F_k/∂u`` there, so the refinement is one Gauss–Newton step in the subspace.

The norm the residual is minimised in decides the result (``norm``):

* ``energy`` (SPD operators; the default): ``min_c Σ_k ||A_k^{-1/2} (A_k Φ_k c + r_k0)||²``.
  Its normal equations are the Galerkin equations ``(Σ Φ_kᵀ A_k Φ_k) c = −Σ Φ_kᵀ r_k0``: the
  best approximation of the linearized field in the energy norm, with no solve with ``A``.
* ``dual``: the same with an SPD weighting ``S_k`` given by the instance (the symmetric part of
  a non-symmetric operator, or a Laplacian), as in minimal-residual FEM:
  ``Y_k = S_k⁻¹ A_k Φ_k`` by ``r`` solves, then ``(Σ (A_k Φ_k)ᵀ Y_k) c = −Σ Y_kᵀ r_k0``.
* ``l2``: ``min_c Σ_k ||A_k Φ_k c + r_k0||₂``, by KSPLSQR right-preconditioned with the R of a
  row sketch. Warning: the ℓ2 norm of the algebraic residual weights high-frequency error; on
  Darcy it made the error against the FEM solution worse where the energy norm improved it.
"""

from collections.abc import Sequence

import dolfinx_solver  # noqa: F401  (orders mpi4py before petsc4py)
import numpy as np
import scipy.sparse
import torch
from mpi4py import MPI
from torch import nn

from pinn_lsr.fem.instance import LinearInstance
from pinn_lsr.lsr.jacobian import ModelJacobian
from pinn_lsr.models.deeponet import DeepONet
from pinn_lsr.parallel.mpi import raise_collectively

NORMS = ("energy", "dual", "l2")


class PhysicsResidual:
    """The FEM residuals of a model's predictions on K instances, and its Jacobian products.

    Args:
        jacobian: products with ``J = ∂u/∂θ`` on the K inputs (every rank: all K instances, the
            outputs being the ``n_grid`` grid values of each).
        instances: the K FEM instances, in the order of the inputs.
        to_dofs: ``P`` restricted to the owned dofs, (n_owned, n_grid).
        norm: ``energy``, ``dual`` or ``l2`` (module docstring).
        local_outputs: the model's outputs are this rank's own (a DeepONet evaluated at the owned
            dof coordinates, ``P`` the identity) rather than the same grid values on every rank;
            pullbacks then sum ``Jᵀ Pᵀ C`` over ranks in parameter space.
        row_positions: with ``local_outputs``, a position in [0, 1] of each local output row
            that does not depend on the partition (e.g. a dof's x coordinate scaled to the
            domain), for :meth:`gradient_strips`; default: the row's place among the
            ``n_grid`` grid values.
    """

    def __init__(
        self,
        jacobian: ModelJacobian,
        instances: Sequence[LinearInstance],
        to_dofs: scipy.sparse.csr_matrix,
        *,
        norm: str = "energy",
        comm: MPI.Comm = MPI.COMM_WORLD,
        local_outputs: bool = False,
        row_positions: np.ndarray | None = None,
    ):
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")
        if len(jacobian.inputs) != len(instances):
            raise ValueError(f"{len(jacobian.inputs)} inputs but {len(instances)} FEM instances")
        if jacobian.n_outputs != to_dofs.shape[1]:
            raise ValueError(
                f"the model has {jacobian.n_outputs} outputs per input but the grid-to-dof map "
                f"takes {to_dofs.shape[1]} grid values"
            )
        self.jacobian, self.instances, self.to_dofs = jacobian, list(instances), to_dofs
        self.norm, self.comm, self.local_outputs = norm, comm, local_outputs
        n_grid = to_dofs.shape[1]
        if row_positions is None:
            row_positions = np.tile(np.arange(n_grid) / n_grid, len(self.instances))
        self.row_positions = np.asarray(row_positions, dtype=np.float64)
        self.u0 = [u[:, 0] for u in self.fields(jacobian.outputs()[:, None])]
        for inst, u in zip(self.instances, self.u0):
            inst.linearize(u)
        self.r0 = [inst.residual(u) for inst, u in zip(self.instances, self.u0)]
        if not comm.allreduce(all(bool(np.isfinite(r).all()) for r in self.r0), op=MPI.LAND):
            raise ValueError(
                "the FEM residual at θ0 contains NaN or infinite values (model outputs or inputs)"
            )

    @property
    def n_dofs(self) -> int:
        """Residual rows over all ranks and instances."""
        return self.comm.allreduce(sum(len(r) for r in self.r0))

    def fields(self, grid_rows: torch.Tensor) -> list[np.ndarray]:
        """Grid values (K * n_grid, k) -> owned dof values per instance, each (n_owned, k)."""
        n_grid = self.to_dofs.shape[1]
        block = grid_rows.double().numpy().reshape(len(self.instances), n_grid, -1)
        return [self.to_dofs @ block[k] for k in range(len(self.instances))]

    def tangent_fields(self, T: torch.Tensor) -> list[np.ndarray]:
        """``Φ_k = P J_k T`` for parameter tangents T (m, k), per instance (n_owned, k)."""
        return self.fields(self.tangent_outputs(T))

    def tangent_outputs(self, T: torch.Tensor) -> torch.Tensor:
        """``J T`` (K · n_grid, k) in the Jacobian's dtype for parameter tangents T (m, k): the
        model's output rows (this rank's with ``local_outputs``). Collective."""
        return self._split_by_columns(self.jacobian.jvp, T)

    def _split_by_columns(self, product, X: torch.Tensor) -> torch.Tensor:
        """``product(X)`` for X (rows, k) whose result is the same on every rank, each rank
        computing a contiguous share of the columns, gathered (in the product's dtype).
        Collective. (Computed whole on every rank with ``local_outputs``, whose rows differ by
        rank, and for fewer columns than ranks.)"""
        size = self.comm.size
        if size == 1 or self.local_outputs or X.shape[1] < size:
            return product(X)
        bounds = np.linspace(0, X.shape[1], size + 1).round().astype(int)
        mine = product(X[:, bounds[self.comm.rank] : bounds[self.comm.rank + 1]])
        rows = mine.shape[0]
        gathered = np.empty((X.shape[1], rows), dtype=mine.numpy().dtype)
        counts = [rows * int(b - a) for a, b in zip(bounds[:-1], bounds[1:])]
        self.comm.Allgatherv(
            np.ascontiguousarray(mine.numpy().T), [gathered, counts, bounds[:-1] * rows, None]
        )
        return torch.from_numpy(gathered.T)

    def images(self, Phi: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``(K_k = A_k Φ_k, Y_k)`` with ``Y_k`` the norm's weighting of the image:
        ``Φ_k`` (energy: ``A⁻¹ K = Φ``), ``S_k⁻¹ K_k`` (dual) or ``K_k`` (l2). Collective."""
        K = [inst.apply(X) for inst, X in zip(self.instances, Phi)]
        if self.norm == "energy":
            return K, Phi
        if self.norm == "dual":
            return K, [inst.solve_weight(X) for inst, X in zip(self.instances, K)]
        return K, K

    def normal_cotangents(self, K: list[np.ndarray], Y: list[np.ndarray]) -> list[np.ndarray]:
        """``Aᵀ W (A Φ)`` per instance: ``K`` (energy, A symmetric), ``Aᵀ Y`` (dual, l2)."""
        if self.norm == "energy":
            return K
        return [inst.apply(X, transpose=True) for inst, X in zip(self.instances, Y)]

    def output_cotangents(self, C: list[np.ndarray], strips: int = 1) -> np.ndarray:
        """``Pᵀ C_k`` stacked over instances (summed over ranks unless :attr:`local_outputs`):
        dof cotangents C_k (n_owned, k) as cotangents of the model's outputs (K · n_grid, k), the
        same on every rank (this rank's rows with ``local_outputs``); with ``strips > 1`` (and C
        one column) cut into ``strips`` columns by :attr:`row_positions`. Collective."""
        grid = np.stack([self.to_dofs.T @ X for X in C]).reshape(-1, C[0].shape[1])
        if not self.local_outputs:  # the same grid cotangent on every rank
            self.comm.Allreduce(MPI.IN_PLACE, grid, op=MPI.SUM)
        if strips > 1:
            strip = np.minimum((self.row_positions * strips).astype(int), strips - 1)
            grid = grid[:, 0][:, None] * (strip[:, None] == np.arange(strips))
        return grid

    def pullback(self, C: list[np.ndarray], strips: int = 1) -> torch.Tensor:
        """``Σ_k J_kᵀ Pᵀ C_k`` over instances and ranks for dof cotangents C_k (n_owned, k)
        -> (m, k) float64; ``strips`` as in :meth:`output_cotangents`. Collective."""
        return self.pullback_outputs(self.output_cotangents(C, strips))

    def pullback_outputs(self, W: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``Jᵀ W`` (m, k) float64 for cotangents W (K · n_grid, k) of the model's outputs, the
        same on every rank (this rank's rows with ``local_outputs``: the products are then summed
        over ranks). Collective."""
        result = self._split_by_columns(self.jacobian.vjp, torch.as_tensor(W))
        result = np.ascontiguousarray(result.double())
        if self.local_outputs:
            self.comm.Allreduce(MPI.IN_PLACE, result, op=MPI.SUM)
        return torch.from_numpy(result)

    def output_inner(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """``Xᵀ Y`` over the whole output space for output vectors X (rows, a), Y (rows, b): the
        local product, summed over ranks with :attr:`local_outputs`. Collective then."""
        local = np.ascontiguousarray(X.T @ Y)
        if self.local_outputs:
            self.comm.Allreduce(MPI.IN_PLACE, local, op=MPI.SUM)
        return local

    def gradient(self) -> torch.Tensor:
        """``Jᵀ Pᵀ Aᵀ W r0`` (m,), the gradient of half the squared residual in the norm.
        Collective."""
        return self.gradient_strips(1)[:, 0]

    def gradient_strips(self, strips: int) -> torch.Tensor:
        """The gradient's pieces from ``strips`` bands of the output space (by
        :attr:`row_positions`: strips of grid rows, or of the domain), (m, strips); they sum to
        :meth:`gradient`. A block Krylov start that holds the gradient. Collective."""
        return self.pullback_outputs(self.gradient_cotangents(strips))

    def gradient_cotangents(self, strips: int = 1) -> np.ndarray:
        """The output cotangents (K · n_grid, strips) that :meth:`gradient_strips` pulls back:
        ``Pᵀ Aᵀ W r0`` cut into ``strips`` bands. Collective."""
        r0 = [r[:, None] for r in self.r0]
        if self.norm == "energy":
            return self.output_cotangents(r0, strips)
        weighted = (
            [inst.solve_weight(r) for inst, r in zip(self.instances, r0)]
            if self.norm == "dual"
            else r0
        )
        return self.output_cotangents(
            [inst.apply(X, transpose=True) for inst, X in zip(self.instances, weighted)], strips
        )

    def gram(self, A: list[np.ndarray], B: list[np.ndarray]) -> np.ndarray:
        """``Σ_k A_kᵀ B_k`` over instances and ranks."""
        local = sum(a.T @ b for a, b in zip(A, B))
        self.comm.Allreduce(MPI.IN_PLACE, local, op=MPI.SUM)
        return local


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
    """The physics residual of a DeepONet evaluated at this rank's dof ``points`` (n_owned, 2)
    (``P`` the identity). Collective.

    Raises:
        ValueError: the model is not a DeepONet, or has several output channels (on every rank).
    """
    raise_collectively(
        comm,
        None
        if isinstance(model, DeepONet)
        else "evaluating at the dof coordinates needs a DeepONet (its trunk takes points); got a "
        f"{type(model).__name__}: use the grid-to-dof map (evaluate_at='grid' / to_dofs) instead",
    )
    channels = getattr(model, "out_channels", 1)
    raise_collectively(
        comm,
        None
        if channels == 1
        else "evaluating at the dof coordinates needs a scalar DeepONet (out_channels=1), got "
        f"out_channels={channels}: pass a to_dofs map that interleaves the channels as your "
        "dofs do",
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
    x = np.asarray(points)[:, 0]
    low, high = (
        comm.allreduce(x.min(initial=np.inf), op=MPI.MIN),
        comm.allreduce(x.max(initial=-np.inf), op=MPI.MAX),
    )
    positions = np.tile((x - low) / max(high - low, np.finfo(float).tiny), len(inputs))
    return PhysicsResidual(
        jacobian,
        systems,
        identity,
        norm=norm,
        comm=comm,
        local_outputs=True,
        row_positions=positions,
    )
