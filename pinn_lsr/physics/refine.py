"""Physics-informed LSR: refine a network against the discrete finite-element residual.

The residual, its linearization and its norms are :class:`~pinn_lsr.physics.residual.
PhysicsResidual`'s (module :mod:`pinn_lsr.physics.residual`). Here: the subspace ``δ = V c``,
the reduced problem in ``c`` and :func:`refine_physics`, which returns the refined (linearized)
fields ``u0_k + Φ_k c`` on the owned dofs.

The reduced ``r × r`` system of ``energy``/``dual`` is solved by a PETSc KSP and the ``l2``
problem by KSPLSQR, both under the options prefix ``physics_`` (``-physics_ksp_type``,
``-physics_pc_type``, ``-physics_ksp_monitor``); iterations and the converged reason are
recorded, and a solve that does not converge raises :class:`~pinn_lsr.fem.solver.SolverError`.

Subspaces (``subspace``, one of :data:`PHYSICS_SUBSPACES`):

* ``krylov`` (default): the Lanczos basis of the Gauss–Newton matrix ``H = Jᵀ Pᵀ Aᵀ W A P J``
  (``W`` the norm's weighting) started at the gradient ``Jᵀ Pᵀ Aᵀ W r0``, fully reorthogonalised
  (:mod:`pinn_lsr.lsr.krylov`). In the energy norm the reduced solution is the ``r``-th
  conjugate-gradient iterate of the Gauss–Newton step: the best energy-norm correction within
  ``r`` products, adapted to this residual. With ``block_size`` b > 1 the basis is block
  Lanczos's (:func:`~pinn_lsr.lsr.krylov.block_lanczos`) started from the gradient's pieces on
  ``b`` strips of the domain (:meth:`~pinn_lsr.physics.residual.PhysicsResidual.gradient_strips`):
  ``r / b`` products with blocks of b columns, each far cheaper per column than a single-vector
  product, in a space that holds ``K_{r/b}`` of the whole gradient and what the strips add.
* ``randomized``: the LSR paper's recipe with the range basis orthonormal in the norm's inner
  product (residual-independent).
"""

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import dolfinx_solver  # noqa: F401  (orders mpi4py before petsc4py)
import numpy as np
import torch
from mpi4py import MPI
from petsc4py import PETSc

from pinn_lsr.lsr.denormals import flush_denormals
from pinn_lsr.fem.options import options_inserted
from pinn_lsr.fem.solver import reason_name, solve_checked
from pinn_lsr.lsr.krylov import block_lanczos, factored_block_lanczos
from pinn_lsr.lsr.lsqr import LSQRSolution
from pinn_lsr.lsr.subspace import random_matrix
from pinn_lsr.physics.residual import PhysicsResidual

log = logging.getLogger(__name__)

PHYSICS_SUBSPACES = ("krylov", "randomized")
#: the Krylov recurrence's diagonal rescaling (:func:`diagonal_scaling`)
PRECONDITIONERS = ("none", "diagonal")
#: ``diagonal``: an entry's curvature estimate is at least this fraction of its tensor's mean
ENTRY_FLOOR = 1e-2
#: the diagonal estimate is at least this fraction of its largest entry
SCALE_FLOOR = 1e-8
PREFIX = "physics_"
#: the reduced Galerkin system (r × r, dense): a direct LU solve. Conjugate gradients (Jacobi, to
#: round-off; the default before the output-space basis) did not converge on bases that reach
#: their rounding floor (the Darcy DeepONet's at rank ~70-128, the FNO's past ~500): their Galerkin
#: matrix is singular to working precision, which the shift below makes safe for the factorisation.
GALERKIN_OPTIONS = {"ksp_type": "preonly", "pc_type": "lu"}
#: the reduced Galerkin matrix is shifted by this fraction of its largest diagonal entry. A basis
#: past its rounding floor has directions of curvature ~0 (numerically dependent images: the
#: Darcy DeepONet's at rank 384, b = 8), which an unshifted LU turns into huge coefficients (there
#: 0.455 against 3.0e-2 shifted); on the FNO's well-conditioned bases the shift changes nothing
#: measurable (rank 640: 2.456e-4 against 2.455e-4)
GALERKIN_SHIFT = 1e-15


class TimeLimit:
    """A Krylov basis's ``stop``: after each block, True when one more block as long as the
    longest so far would end past ``seconds`` from now (blocks grow with the rank, and one that
    needs the parameter-space repair takes about twice as long; the clock of rank 0 decides for
    every rank, so the bases stay identical). ``reached`` records that it said so. Collective on
    ``comm`` per call."""

    def __init__(self, comm: MPI.Comm, seconds: float):
        self.comm, self.reached, self.longest = comm, False, 0.0
        self.last = time.perf_counter()
        self.limit = self.last + seconds

    def __call__(self) -> bool:
        now = time.perf_counter()
        self.longest, self.last = max(self.longest, now - self.last), now
        self.reached = bool(self.comm.bcast(now + self.longest > self.limit, root=0))
        return self.reached


@dataclass
class PhysicsSubspace:
    """``V`` (m, r) and its images ``Φ_k``, ``K_k = A_k Φ_k``, ``Y_k`` (owned rows,
    (n_owned, r))."""

    V: torch.Tensor
    Phi: list[np.ndarray]
    K: list[np.ndarray]
    Y: list[np.ndarray]
    seconds: dict = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return self.V.shape[1]


def _images(residual: PhysicsResidual, T: torch.Tensor) -> tuple:
    """``(Φ, K, Y)`` of parameter tangents T (m, k) (:meth:`PhysicsResidual.images`). Collective."""
    Phi = residual.tangent_fields(T.to(residual.jacobian.dtype))
    return (Phi, *residual.images(Phi))


def _images_of_outputs(residual: PhysicsResidual, T: np.ndarray) -> tuple:
    """``(Φ, K, Y)`` of output vectors T (K · n_grid, k), e.g. ``J V``. Collective."""
    Phi = residual.fields(torch.from_numpy(T))
    return (Phi, *residual.images(Phi))


def _gauss_newton_product(residual: PhysicsResidual, images: tuple) -> torch.Tensor:
    """``H T`` (m, k) float64 from T's ``images``: the pullback of ``Aᵀ W A P J T``. Collective."""
    return residual.pullback(residual.normal_cotangents(*images[1:]))


def _scaled(X: torch.Tensor, scaling: torch.Tensor | None) -> torch.Tensor:
    """``S X`` for X (m, k), S = diag(scaling): θ̃-space columns -> θ-space (and θ-gradients ->
    θ̃-gradients); X itself without a scaling."""
    return X if scaling is None else X * scaling[:, None].to(X.dtype)


def _parameter_product(residual: PhysicsResidual, columns: list, scaling):
    """``Q -> S H S Q`` for θ̃-columns Q (block Lanczos in parameter space), appending the images
    of ``S Q`` to ``columns``. Collective."""

    def product(Q: torch.Tensor) -> torch.Tensor:
        columns.append(_images(residual, _scaled(Q, scaling)))
        return _scaled(_gauss_newton_product(residual, columns[-1]), scaling)

    return product


def _subspace(residual: PhysicsResidual, V: torch.Tensor, columns: list) -> PhysicsSubspace:
    """The subspace of θ-columns V with the images ``columns`` of its blocks, in order."""
    n = len(residual.instances)
    Phi, K, Y = ([np.hstack([c[i][k] for c in columns]) for k in range(n)] for i in range(3))
    return PhysicsSubspace(V, Phi, K, Y)


def diagonal_scaling(
    residual: PhysicsResidual, precondition: str, *, probes: int = 64, seed: int = 0
) -> torch.Tensor | None:
    """``D^{-1/2}`` (m,) float64 for a positive estimate D of the Gauss–Newton matrix's diagonal
    ``diag(H)``, ``H = Jᵀ N J`` with ``N = Pᵀ Aᵀ W A P`` the norm's operator on the model's
    outputs (None for ``none``). Collective.

    A two-sided estimator in output space: for ``probes`` Rademacher vectors w on the model's
    outputs (K · n_grid rows, the same on every rank for one ``seed``, so D does not depend on
    the partition), ``E[(Jᵀ N w) ⊙ (Jᵀ w)] = diag(Jᵀ N J)``: one block of ``probes`` forward
    images through the FEM operator and two reverse products, no Jacobian–vector product.
    (Hutchinson's estimator in parameter space, ``z ⊙ H z``, is far noisier here: its variance is
    a row's off-diagonal mass, which dominates for a Gauss–Newton matrix of rank ≤ n ≪ m; on
    Darcy its bases were no better than unscaled ones, bench/physics_precondition.py, where 64
    output-space probes matched the exact diagonal.) An entry is floored at :data:`ENTRY_FLOOR`
    times its parameter tensor's mean estimate (noise-negative entries would otherwise scale a
    direction up without bound) and at :data:`SCALE_FLOOR` times the largest entry.

    Raises:
        ValueError: an unknown ``precondition``, ``probes`` < 1, or a model whose outputs are
            this rank's own dofs (``local_outputs``: the probes would depend on the partition).
    """
    if precondition not in PRECONDITIONERS:
        raise ValueError(f"unknown precondition {precondition!r}; choose one of {PRECONDITIONERS}")
    if precondition == "none":
        return None
    if isinstance(probes, bool) or not isinstance(probes, (int, np.integer)) or probes < 1:
        raise ValueError(f"probes must be an integer >= 1, got {probes!r}")
    if residual.local_outputs:
        raise ValueError(
            "precondition='diagonal' needs grid outputs (the same on every rank); this model is "
            "evaluated at the owned dofs (local_outputs): use precondition='none'"
        )
    rows = len(residual.instances) * residual.to_dofs.shape[1]
    generator = torch.Generator().manual_seed(seed)
    W = torch.randint(0, 2, (rows, int(probes)), generator=generator).double() * 2 - 1
    Phi = residual.fields(W)
    left = _gauss_newton_product(residual, (Phi, *residual.images(Phi)))
    right = residual.pullback_outputs(W)
    estimate = (left * right).mean(dim=1)
    D = torch.empty_like(estimate)
    for piece in residual.jacobian.tensor_slices:
        D[piece] = estimate[piece].clamp_min(ENTRY_FLOOR * float(estimate[piece].mean()))
    largest = float(D.max())
    if not largest > 0.0:
        raise ValueError(
            "the Gauss–Newton diagonal estimate is not positive: the residual sees no parameter"
        )
    return D.clamp_min(SCALE_FLOOR * largest).rsqrt()


def krylov_physics_subspace(
    residual: PhysicsResidual,
    rank: int,
    *,
    block_size: int = 1,
    progress=None,
    recycle: torch.Tensor | None = None,
    scaling: torch.Tensor | None = None,
    stop=None,
) -> PhysicsSubspace:
    """(Block) Lanczos basis of the Gauss–Newton matrix from the gradient (module docstring).
    Collective.

    Built in the model's output space (:func:`~pinn_lsr.lsr.krylov.factored_block_lanczos`: the
    Gram–Schmidt runs on the K · n_grid output rows, not on the m parameters), except with
    ``recycle``, whose deflation needs the parameter-space basis
    (:func:`~pinn_lsr.lsr.krylov.block_lanczos`). The two give the same space in exact
    arithmetic.

    ``recycle``: a previous basis (m, p), kept whole (orthonormalised here); the ``rank`` new
    directions are the deflated operator's Krylov basis orthogonal to it
    (:func:`~pinn_lsr.lsr.krylov.block_lanczos` with ``deflate``), so the subspace is
    span[recycle, new], of rank p + (up to) ``rank`` less the directions that are numerically
    dependent at the new weights (:func:`_normalized`, which also makes the reduced system the
    identity). When the gradient lies in span(recycle) (the residual has not changed since it was
    built) there is nothing new and the subspace is the recycled one.

    ``scaling``: ``s = D^{-1/2}`` (m,) (:func:`diagonal_scaling`): the recurrence then runs on
    the rescaled matrix ``S H S`` (S = diag(s)) from the rescaled gradient ``S g``, the variables
    ``θ̃`` of ``θ = S θ̃``, and the subspace's columns are ``S q_i`` in θ: the reduced problem is
    still the exact Galerkin / least-squares problem on those columns.

    ``stop``: called after every block (e.g. a :class:`TimeLimit`); True ends the basis there,
    with the rank reached.

    Stops early, with a smaller rank and a warning, when the Krylov space becomes invariant.
    """
    start = time.perf_counter()
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    if recycle is None:
        sub = _factored_krylov_subspace(residual, rank, block_size, progress, scaling, stop)
    else:
        sub = _recycled_krylov_subspace(
            residual, rank, block_size, progress, recycle, scaling, stop
        )
    sub.seconds["krylov"] = time.perf_counter() - start
    return sub


def _factored_krylov_subspace(
    residual, rank, block_size, progress, scaling, stop
) -> PhysicsSubspace:
    """The Krylov basis built in the model's output space
    (:func:`~pinn_lsr.lsr.krylov.factored_block_lanczos` with ``G = J S`` in the variables θ̃ and
    ``N = Pᵀ Aᵀ W A P``): per block one reverse and one forward product through the network, the
    FEM products, and a Gram–Schmidt over the K · n_grid output rows. Collective."""
    start = residual.gradient_cotangents(min(block_size, rank))
    if residual.output_inner(start, start).trace() == 0.0:
        raise ValueError(
            "the residual's gradient is zero: the model already solves the FEM problem in this norm"
        )
    dtype = residual.jacobian.dtype
    columns = []  # (Φ, K, Y) of every basis block, kept for the reduced problem

    def pull(W: np.ndarray) -> torch.Tensor:  # (J S)ᵀ W, in θ̃
        return _scaled(residual.pullback_outputs(W), scaling).to(dtype)

    def push(Q: torch.Tensor) -> np.ndarray:  # J S Q for θ̃-columns Q
        return residual.tangent_outputs(_scaled(Q.double(), scaling).to(dtype)).double().numpy()

    def normal(T: np.ndarray) -> np.ndarray:
        columns.append(_images_of_outputs(residual, T))
        return residual.output_cotangents(residual.normal_cotangents(*columns[-1][1:]))

    basis = factored_block_lanczos(
        start, pull, push, normal, rank, inner=residual.output_inner, progress=progress, stop=stop
    )
    V, done = basis.V.to(dtype), basis.V.shape[1]
    if basis.repaired and done < rank and not basis.interrupted:
        # the output-space recurrence reached its rounding floor before the space became
        # invariant (the Darcy DeepONet's at ~70): go on in parameter space, block Lanczos from
        # the Gauss–Newton products of the last block (its images are columns[-1]), deflated by
        # the basis so far
        head = _scaled(_gauss_newton_product(residual, columns[-1]), scaling)
        more = block_lanczos(
            head,
            _parameter_product(residual, columns, scaling),
            rank - done,
            dtype=dtype,
            deflate=V,
            progress=None if progress is None else lambda k, _: progress(done + k, rank),
            stop=stop,
        )
        log.info("Krylov basis: %d more directions in parameter space", more.shape[1])
        V = torch.hstack([V, more.to(dtype)])
    elif basis.interrupted:
        log.info("Krylov basis: %s (asked for %d)", basis.stopped, rank)
    elif basis.stopped:
        log.warning("Krylov basis: %s (asked for %d)", basis.stopped, rank)
    log.info(
        "Krylov basis of rank %d, %d blocks re-orthogonalised in parameter space",
        V.shape[1],
        basis.repaired,
    )
    return _subspace(residual, _scaled(V, scaling), columns)


def _recycled_krylov_subspace(
    residual, rank, block_size, progress, recycle, scaling, stop
) -> PhysicsSubspace:
    """The recycled basis: the old directions' images at the new weights and block Lanczos in
    parameter space deflated by them (:func:`krylov_physics_subspace`). Collective."""
    G = _scaled(residual.gradient_strips(min(block_size, rank)), scaling)
    if float(torch.linalg.matrix_norm(G)) == 0.0:
        raise ValueError(
            "the residual's gradient is zero: the model already solves the FEM problem in this norm"
        )
    dtype = residual.jacobian.dtype
    columns = []  # (Φ, K, Y) of every basis block, kept for the reduced problem
    if scaling is not None:
        recycle = recycle.double() / scaling[:, None]
    recycle = torch.linalg.qr(recycle.double())[0].to(dtype)
    columns.append(_images(residual, _scaled(recycle, scaling)))  # the old directions, new weights
    product = _parameter_product(residual, columns, scaling)
    Q = block_lanczos(G, product, rank, dtype=dtype, progress=progress, deflate=recycle, stop=stop)
    Q = _scaled(Q.to(dtype), scaling)
    recycle = _scaled(recycle, scaling)
    sub = _subspace(residual, Q, columns)
    log.info("Krylov recycling: %d old directions, %d new", recycle.shape[1], Q.shape[1])
    return _normalized(residual, torch.hstack([recycle, Q]), sub)


#: a recycled subspace drops the directions whose Gauss–Newton curvature is below this fraction of
#: the largest (numerically dependent at the new weights: float32 images resolve ~1e-7)
RECYCLE_DROP_BELOW = 1e-10


def _normalized(
    residual: PhysicsResidual, V: torch.Tensor, sub: PhysicsSubspace
) -> PhysicsSubspace:
    """The subspace of ``V`` (m, p) with ``sub``'s images re-expressed in a basis orthonormal in
    the norm's inner product: Gram ``U Λ Uᵀ``, ``T = U Λ^{-1/2}`` over the eigenvalues above
    :data:`RECYCLE_DROP_BELOW` of the largest. The old directions at the new weights are far from
    H-orthogonal to the new ones (the Gram matrix measured cond 5e6 on a 64-dof test case), and
    CG on the reduced system did not converge on the FNO in float32; in this basis it is the
    identity. Collective."""
    gram = residual.gram(sub.K, sub.Y)
    lam, U = np.linalg.eigh(0.5 * (gram + gram.T))
    keep = lam > lam[-1] * RECYCLE_DROP_BELOW
    T = U[:, keep] / np.sqrt(lam[keep])
    return PhysicsSubspace(
        (V.double() @ torch.from_numpy(T)).to(V.dtype),
        [X @ T for X in sub.Phi],
        [X @ T for X in sub.K],
        [X @ T for X in sub.Y],
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
        """Solve ``(H[:r, :r] + μ I) c = −g[:r]`` (μ: :data:`GALERKIN_SHIFT` times the largest
        diagonal entry) with a KSP under ``physics_`` (redundantly on each rank)."""
        shifted = self.H[:r, :r] + GALERKIN_SHIFT * max(np.diag(self.H)[:r].max(), 0.0) * np.eye(r)
        H = PETSc.Mat().createDense((r, r), array=np.asfortranarray(shifted), comm=MPI.COMM_SELF)
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
    block_size: int = 1,
    oversampling: int = 10,
    petsc_options: Mapping | None = None,
    seed: int = 0,
    progress=None,
    recycle: torch.Tensor | None = None,
    precondition: str = "none",
    probes: int = 64,
    seconds: float | None = None,
) -> PhysicsRefinement:
    """One-shot physics LSR of rank ``rank`` on ``residual``'s instances. Collective.

    ``seconds`` (krylov only): a time limit for the subspace, counted from this call: the basis
    ends before a block that would pass it (:class:`TimeLimit`), so ``rank`` is then the most
    directions and the report says how many were built. The reduced solve comes after it (a
    dense r × r factorisation: milliseconds at r ≲ 1000).

    ``recycle`` (krylov only): a previous subspace's ``V`` to keep beside ``rank`` new directions
    (:func:`krylov_physics_subspace`). ``precondition`` (krylov only; one of
    :data:`PRECONDITIONERS`): the Krylov recurrence on the Gauss–Newton matrix rescaled by a
    diagonal estimate from ``probes`` products (:func:`diagonal_scaling`, seeded by ``seed``).

    Raises:
        ValueError: bad rank or subspace name.
        SolverError: the reduced solve did not converge.

    Note:
        Calls :func:`pinn_lsr.lsr.denormals.flush_denormals` (process-wide).
    """
    total = time.perf_counter()
    flush_denormals()
    if subspace not in PHYSICS_SUBSPACES:
        raise ValueError(f"unknown subspace {subspace!r}; choose one of {PHYSICS_SUBSPACES}")
    if recycle is not None and subspace != "krylov":
        raise ValueError(f"recycling a basis needs subspace='krylov', got {subspace!r}")
    if precondition not in PRECONDITIONERS:
        raise ValueError(f"unknown precondition {precondition!r}; choose one of {PRECONDITIONERS}")
    if precondition != "none" and subspace != "krylov":
        raise ValueError(f"precondition={precondition!r} needs subspace='krylov', got {subspace!r}")
    if seconds is not None and not (subspace == "krylov" and seconds > 0):
        raise ValueError(
            f"a time limit needs subspace='krylov' and seconds > 0, got {subspace!r}, {seconds!r}"
        )
    limit = None if seconds is None else TimeLimit(residual.comm, seconds)
    n_rows = residual.n_dofs
    recycled = 0 if recycle is None else recycle.shape[1]
    if not 1 <= rank <= min(residual.jacobian.n_params, n_rows) - recycled:
        raise ValueError(
            f"rank must be between 1 and min(parameters, FEM rows) = "
            f"min({residual.jacobian.n_params}, {n_rows})"
            + (f" less the {recycled} recycled directions" if recycled else "")
            + f", got {rank}"
        )
    if subspace == "krylov":
        start = time.perf_counter()
        scaling = diagonal_scaling(residual, precondition, probes=probes, seed=seed)
        estimated = time.perf_counter() - start
        sub = krylov_physics_subspace(
            residual,
            rank,
            block_size=block_size,
            progress=progress,
            recycle=recycle,
            scaling=scaling,
            stop=limit,
        )
        if scaling is not None:
            sub.seconds["precondition"] = estimated
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
    # in V's dtype: a float64 copy of the m × r basis would cost more than the rest of the solve
    delta = sub.V @ torch.from_numpy(c).to(sub.V.dtype)
    log.info(
        "physics LSR (%s norm, %s subspace, rank %d, %d instances): ||A u - b|| %.3e -> %.3e "
        "in %.2f s (%d KSP iterations)",
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
