"""Physics-informed LSR: refine a network against the discrete finite-element residual.

For instances k = 1..K (input fields a_k on the grid) the network's grid output is mapped to the
P1 degrees of freedom by ``P`` and the residual is ``r_k(θ) = A_k P u_θ(a_k) − b_k``, with
``A_k``, ``b_k`` assembled by DOLFINx (Dirichlet rows are identity rows, so the boundary values
are one block of the residual). Each rank holds the rows of the dofs it owns in DOLFINx's
partition; the network itself is evaluated on every rank (it is small next to the FEM rows).
Linearized at θ0 with ``δ = V c``: ``r_k ≈ r_k0 + A_k Φ_k c``, ``Φ_k = P J_k V`` a PETSc dense
matrix of owned rows and ``A_k Φ_k`` a PETSc ``MatMatMult``.

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

The reduced ``r × r`` system of ``energy``/``dual`` is solved by a PETSc KSP and the ``l2``
problem by KSPLSQR, both under the options prefix ``physics_`` (``-physics_ksp_type``,
``-physics_pc_type``, ``-physics_ksp_monitor``); iterations and the converged reason are
recorded, and a solve that does not converge raises :class:`~pinn_lsr.fem.solver.SolverError`.

Subspaces (``subspace``):

* ``krylov`` (default): the Lanczos basis of the Gauss–Newton matrix ``H = Jᵀ Pᵀ Aᵀ W A P J``
  (``W`` the norm's weighting) started at the gradient ``Jᵀ Pᵀ Aᵀ W r0``, fully reorthogonalised
  (:mod:`pinn_lsr.lsr.krylov`). In the energy norm the reduced solution is the ``r``-th
  conjugate-gradient iterate of the Gauss–Newton step: the best energy-norm correction within
  ``r`` products, adapted to this residual.
* ``randomized``: the LSR paper's recipe with the range basis orthonormal in the norm's inner
  product (residual-independent).
"""

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dolfinx_solver  # noqa: F401  (orders mpi4py before petsc4py)
import numpy as np
import scipy.sparse
import torch
from mpi4py import MPI
from petsc4py import PETSc

from pinn_lsr.fem.instance import LinearInstance
from pinn_lsr.fem.options import options_inserted
from pinn_lsr.fem.solver import reason_name, solve_checked
from pinn_lsr.lsr.jacobian import ModelJacobian
from pinn_lsr.lsr.krylov import lanczos
from pinn_lsr.lsr.subspace import random_matrix

log = logging.getLogger(__name__)

NORMS = ("energy", "dual", "l2")
SUBSPACES = ("krylov", "randomized")
PREFIX = "physics_"
#: the reduced Galerkin system: conjugate gradients, Jacobi-scaled, to round-off. CG's residual is
#: not monotone on ill-conditioned SPD systems, so PETSc's divergence test (residual grown 1e5×)
#: is switched off; the iteration cap still reports a solve that does not converge.
GALERKIN_OPTIONS = {
    "ksp_type": "cg",
    "pc_type": "jacobi",
    "ksp_rtol": 1e-12,
    "ksp_atol": 1e-30,
    "ksp_divtol": 1e30,
    "ksp_max_it": 10000,
}


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
        return self.fields(self.jacobian.jvp(T))

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

    def pullback(self, C: list[np.ndarray]) -> torch.Tensor:
        """``Σ_k J_kᵀ Pᵀ C_k`` over instances and ranks for dof cotangents C_k (n_owned, k) -> (m, k)."""
        grid = np.stack([self.to_dofs.T @ X for X in C])  # (K, n_grid, k)
        if self.local_outputs:
            local = np.ascontiguousarray(
                self.jacobian.vjp(torch.from_numpy(grid.reshape(-1, grid.shape[-1]))).double()
            )
            self.comm.Allreduce(MPI.IN_PLACE, local, op=MPI.SUM)
            return torch.from_numpy(local)
        self.comm.Allreduce(MPI.IN_PLACE, grid, op=MPI.SUM)
        return self.jacobian.vjp(torch.from_numpy(grid.reshape(-1, grid.shape[-1]))).double()

    def gradient(self) -> torch.Tensor:
        """``Jᵀ Pᵀ Aᵀ W r0`` (m,), the gradient of half the squared residual in the norm."""
        r0 = [r[:, None] for r in self.r0]
        if self.norm == "energy":
            return self.pullback(r0)[:, 0]
        weighted = (
            [inst.solve_weight(r) for inst, r in zip(self.instances, r0)]
            if self.norm == "dual"
            else r0
        )
        return self.pullback(
            [inst.apply(X, transpose=True) for inst, X in zip(self.instances, weighted)]
        )[:, 0]

    def gram(self, A: list[np.ndarray], B: list[np.ndarray]) -> np.ndarray:
        """``Σ_k A_kᵀ B_k`` over instances and ranks."""
        local = sum(a.T @ b for a, b in zip(A, B))
        self.comm.Allreduce(MPI.IN_PLACE, local, op=MPI.SUM)
        return local


@dataclass
class PhysicsSubspace:
    """``V`` (m, r) and its images ``Φ_k``, ``K_k = A_k Φ_k``, ``Y_k`` (owned rows, (n_owned, r))."""

    V: torch.Tensor
    Phi: list[np.ndarray]
    K: list[np.ndarray]
    Y: list[np.ndarray]
    seconds: dict = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return self.V.shape[1]


def krylov_subspace(residual: PhysicsResidual, rank: int, *, progress=None) -> PhysicsSubspace:
    """Lanczos basis of the Gauss–Newton matrix from the gradient (module docstring). Collective.

    Stops early, with a smaller rank and a warning, when the Krylov space becomes invariant.
    """
    start = time.perf_counter()
    g = residual.gradient()
    if float(torch.linalg.vector_norm(g)) == 0.0:
        raise ValueError(
            "the residual's gradient is zero: the model already solves the FEM problem in this norm"
        )
    columns = []  # (Φ, K, Y) of every basis vector, kept for the reduced problem

    def normal_product(q: torch.Tensor) -> torch.Tensor:
        Phi = residual.tangent_fields(q[:, None].to(residual.jacobian.dtype))
        K, Y = residual.images(Phi)
        columns.append((Phi, K, Y))
        return residual.pullback(residual.normal_cotangents(K, Y))[:, 0]

    basis = lanczos(g, normal_product, rank, progress=progress)
    if basis.Q.shape[1] < rank:
        log.warning(
            "Krylov space invariant after %d vectors (asked for %d)", basis.Q.shape[1], rank
        )

    def stack(i):
        return [np.hstack([c[i][k] for c in columns]) for k in range(len(residual.instances))]

    return PhysicsSubspace(
        basis.Q.to(residual.jacobian.dtype),
        stack(0),
        stack(1),
        stack(2),
        {"krylov": time.perf_counter() - start},
    )


def randomized_physics_subspace(
    residual: PhysicsResidual, rank: int, *, oversampling: int = 10, seed: int = 0
) -> PhysicsSubspace:
    """The LSR paper's randomized subspace, the range basis orthonormal in the norm's inner
    product: Gram ``Σ (A Φ_Ω)ᵀ Y_Ω = U Λ Uᵀ``, ``T = U Λ^{-1/2}``, ``Bᵀ = Jᵀ Pᵀ Aᵀ W (A Φ_Ω T)``,
    ``V = right singular vectors of B / singular values``. Collective."""
    start = time.perf_counter()
    jacobian = residual.jacobian
    k = min(rank + oversampling, jacobian.n_params)
    Omega = random_matrix(
        jacobian.n_params, k, distribution="gaussian", seed=seed, dtype=jacobian.dtype
    )
    Phi = residual.tangent_fields(Omega)
    K, Y = residual.images(Phi)
    gram = residual.gram(K, Y)
    lam, U = np.linalg.eigh(0.5 * (gram + gram.T))
    keep = lam > lam[-1] * 1e-12
    T = U[:, keep] / np.sqrt(lam[keep])
    Bt = residual.pullback(residual.normal_cotangents([X @ T for X in K], [X @ T for X in Y]))
    Q_B, R_B = torch.linalg.qr(Bt)
    _, S, Wt = torch.linalg.svd(R_B.T)
    r = min(rank, int(keep.sum()))
    V = (Q_B @ Wt[:r].T) / S[:r].clamp_min(S[0] * np.finfo(np.float64).eps)
    V = V.to(jacobian.dtype)
    Phi = residual.tangent_fields(V)
    K, Y = residual.images(Phi)
    return PhysicsSubspace(V, Phi, K, Y, {"randomized": time.perf_counter() - start})


@dataclass
class ReducedPhysicsProblem:
    """The reduced problem in ``c`` for one subspace, solvable for any leading rank ``r' ≤ r``."""

    residual: PhysicsResidual
    subspace: PhysicsSubspace
    options: Mapping | None = None
    iterations: dict = field(default_factory=dict)  # rank -> KSP iterations
    reasons: dict = field(default_factory=dict)  # rank -> converged reason

    def __post_init__(self):
        residual, sub = self.residual, self.subspace
        if residual.norm == "l2":
            from pinn_lsr.lsr.lsqr import LSQRSolution

            self._lsqr = LSQRSolution(
                np.vstack(sub.K),
                np.concatenate(residual.r0),
                residual.comm,
                prefix=PREFIX,
                options=self.options,
            )
        else:
            self.H = residual.gram(sub.K, sub.Y)
            self.H = 0.5 * (self.H + self.H.T)
            self.g = residual.gram(sub.Y, [r[:, None] for r in residual.r0])[:, 0]

    def coefficients(self, rank: int | None = None) -> np.ndarray:
        """``c`` (rank,) for the leading ``rank`` columns. Collective.

        Raises:
            SolverError: the KSP did not converge (prefix, reason and iterations in the message).
        """
        r = self.subspace.rank if rank is None else int(rank)
        if not 1 <= r <= self.subspace.rank:
            raise ValueError(f"rank must be in [1, {self.subspace.rank}], got {r}")
        if self.residual.norm == "l2":
            c = self._lsqr.coefficients(r)
            self.iterations[r] = self._lsqr.iterations[r]
            self.reasons[r] = "CONVERGED"
            return c
        return self._galerkin(r)

    def _galerkin(self, r: int) -> np.ndarray:
        """Solve ``H[:r, :r] c = −g[:r]`` with a KSP under ``physics_`` (redundantly on each rank)."""
        H = PETSc.Mat().createDense(
            (r, r), array=np.asfortranarray(self.H[:r, :r]), comm=MPI.COMM_SELF
        )
        H.assemble()
        ksp = PETSc.KSP().create(MPI.COMM_SELF)
        ksp.setOptionsPrefix(PREFIX)
        ksp.setOperators(H)
        with options_inserted(PREFIX, GALERKIN_OPTIONS if self.options is None else self.options):
            ksp.setFromOptions()
        b, x = H.createVecRight(), H.createVecRight()
        b.setArray(-self.g[:r])
        try:
            self.iterations[r] = solve_checked(ksp, b, x)
            self.reasons[r] = reason_name(ksp.getConvergedReason())
            return x.getArray().copy()
        finally:
            for obj in (ksp, H, b, x):
                obj.destroy()

    def fields(self, c: np.ndarray) -> list[np.ndarray]:
        """The refined (linearized) fields ``u0_k + Φ_k c``, owned dofs per instance."""
        return [u + Phi[:, : len(c)] @ c for u, Phi in zip(self.residual.u0, self.subspace.Phi)]


@dataclass
class PhysicsReport:
    """What one physics LSR did (identical on every rank)."""

    rank: int
    norm: str
    subspace: str
    n_instances: int
    n_rows: int  # FEM residual rows over all instances
    n_params: int
    ksp_iterations: int
    ksp_reason: str
    residual_l2_before: float  # ||A u − b||₂ over instances, network field
    residual_l2_after: float  # the same for the refined field
    seconds: dict = field(default_factory=dict)


@dataclass
class PhysicsRefinement:
    """The refined fields (owned dofs, per instance), the parameter correction and the report."""

    fields: list[np.ndarray]
    delta: torch.Tensor  # (m,) correction of the selected parameters (linear predictor: θ0 + δ)
    report: PhysicsReport
    problem: ReducedPhysicsProblem


def refine_physics(
    residual: PhysicsResidual,
    rank: int,
    *,
    subspace: str = "krylov",
    oversampling: int = 10,
    petsc_options: Mapping | None = None,
    seed: int = 0,
    progress=None,
) -> PhysicsRefinement:
    """One-shot physics LSR of rank ``rank`` on ``residual``'s instances. Collective.

    Raises:
        ValueError: bad rank or subspace name.
        SolverError: the reduced solve did not converge.
    """
    total = time.perf_counter()
    if subspace not in SUBSPACES:
        raise ValueError(f"unknown subspace {subspace!r}; choose one of {SUBSPACES}")
    n_rows = residual.n_dofs
    if not 1 <= rank <= min(residual.jacobian.n_params, n_rows):
        raise ValueError(
            f"rank must be between 1 and min(parameters, FEM rows) = "
            f"min({residual.jacobian.n_params}, {n_rows}), got {rank}"
        )
    if subspace == "krylov":
        sub = krylov_subspace(residual, rank, progress=progress)
    else:
        sub = randomized_physics_subspace(residual, rank, oversampling=oversampling, seed=seed)
    start = time.perf_counter()
    problem = ReducedPhysicsProblem(residual, sub, petsc_options)
    c = problem.coefficients()
    seconds = {**sub.seconds, "reduced_solve": time.perf_counter() - start}
    fields = problem.fields(c)

    def l2(rs):
        return float(np.sqrt(residual.comm.allreduce(sum(float(r @ r) for r in rs))))

    after = [inst.residual(u) for inst, u in zip(residual.instances, fields)]
    seconds["total"] = time.perf_counter() - total
    report = PhysicsReport(
        rank=sub.rank,
        norm=residual.norm,
        subspace=subspace,
        n_instances=len(residual.instances),
        n_rows=n_rows,
        n_params=residual.jacobian.n_params,
        ksp_iterations=problem.iterations[sub.rank],
        ksp_reason=problem.reasons[sub.rank],
        residual_l2_before=l2(residual.r0),
        residual_l2_after=l2(after),
        seconds=seconds,
    )
    delta = (sub.V.double() @ torch.from_numpy(c)).to(residual.jacobian.dtype)
    log.info(
        "physics LSR (%s norm, %s subspace, rank %d, %d instances): ||A u - b|| %.3e -> %.3e in %.2f s "
        "(%d KSP iterations)",
        report.norm,
        subspace,
        report.rank,
        report.n_instances,
        report.residual_l2_before,
        report.residual_l2_after,
        seconds["total"],
        report.ksp_iterations,
    )
    return PhysicsRefinement(fields, delta, report, problem)
