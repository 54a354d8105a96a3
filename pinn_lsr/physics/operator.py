"""Operator-level physics LSR: one parameter correction δ from the FEM residuals of K unlabeled
inputs (no solutions used), for predictions on inputs the refinement never saw.

:func:`refine_operator` refines jointly on the K training instances (``PhysicsResidual`` sums
over them: one subspace, one reduced problem), and returns an :class:`OperatorRefinement` whose
predictor is the linearized network ``q(θ0, a) + J(a) δ`` (:class:`~pinn_lsr.lsr.refined.
RefinedModel`); its committed weights ``θ0 + δ`` are a plain network. One Krylov basis of rank r
holds every leading rank r' ≤ r (:meth:`ReducedPhysicsProblem.coefficients`), so the rank can be
chosen afterwards at the cost of an r' × r' solve per candidate: with ``select`` (held-out
unlabeled instances), the candidate of smallest :func:`physics_loss` on them, which needs no
solution either (in the energy norm, ``E(u) − E(u*) = ½ ||u − u*||²_A``: the rank of the
smallest energy is the rank of the smallest energy-norm error).
"""

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from mpi4py import MPI
from torch import nn

from pinn_lsr.lsr.jacobian import select_parameters
from pinn_lsr.lsr.refined import RefinedModel
from pinn_lsr.physics.finetune import fem_loss
from pinn_lsr.physics.instances import FEMInstances
from pinn_lsr.physics.refine import ReducedPhysicsProblem, refine_physics

log = logging.getLogger(__name__)


def physics_loss(fem: FEMInstances, fields: Sequence[np.ndarray], norm: str) -> float:
    """The solution-free loss of owned dof fields summed over instances and ranks: the energy
    ``Σ ½ uᵀAu − bᵀu`` (``energy``), ``Σ ½ rᵀ S⁻¹ r`` (``dual``) or ``Σ ½ ||r||²`` (``l2``), with
    ``r = F_k(u_k)``. Collective."""
    if norm != "dual":
        return fem_loss(fem, fields, norm)
    local = 0.0
    for system, u in zip(fem.systems, fields):
        r = system.residual(u)[:, None]
        local += 0.5 * float(r[:, 0] @ system.solve_weight(r)[:, 0])
    return float(fem.comm.allreduce(local, op=MPI.SUM))


def scan_ranks(rank: int) -> list[int]:
    """Candidate ranks for a selection: 8, 16, 32, ... below ``rank``, and ``rank``."""
    return [int(r) for r in 2 ** np.arange(3, int(np.log2(max(rank, 1))) + 1) if r < rank] + [rank]


@dataclass
class OperatorReport:
    """What one operator-level physics LSR did (identical on every rank)."""

    rank: int  # the basis's rank
    chosen_rank: int  # the predictor's leading rank (selected on held-out inputs, or ``rank``)
    norm: str
    subspace: str
    n_train: int  # K, the unlabeled training instances
    n_select: int  # held-out unlabeled instances the rank was chosen on (0: none)
    n_rows: int  # FEM residual rows over the K instances
    n_params: int
    ksp_iterations: int  # the reduced solve at the chosen rank
    loss_before: float  # physics_loss on the K training instances, network
    loss_after: float  # the same for the linearized predictor at the chosen rank
    residual_l2_before: float  # ||A u − b||₂ over the K training instances, network
    residual_l2_after: float  # the same, linearized predictor at the chosen rank
    selection: dict = field(default_factory=dict)  # candidate rank -> held-out physics_loss
    seconds: dict = field(default_factory=dict)  # subspace, reduced_solve, selection, total


def _delta(problem: ReducedPhysicsProblem, rank: int) -> torch.Tensor:
    """δ (m,) of the leading ``rank`` basis columns. Collective (the reduced solve runs on every
    rank)."""
    c = torch.from_numpy(problem.coefficients(rank))
    V = problem.subspace.V
    return (V[:, :rank].double() @ c).to(V.dtype)


def _predictor(
    model: nn.Module, problem: ReducedPhysicsProblem, fem: FEMInstances, rank: int
) -> RefinedModel:
    """``q(θ0, a) + J(a) δ`` evaluated as ``fem`` maps the network to its dofs (on the grid, or a
    DeepONet at ``fem``'s dof coordinates). Collective."""
    forward = None
    if fem.evaluate_at == "dofs":
        points = torch.as_tensor(fem.dof_points(), dtype=problem.subspace.V.dtype)

        def forward(m, a):
            return m(a, points)

    return RefinedModel(model, select_parameters(model), _delta(problem, rank), forward)


def _linearized_fields(refined: RefinedModel, fem: FEMInstances) -> list[np.ndarray]:
    """A linearized predictor's owned dof fields (n_owned,) on ``fem``'s inputs. Local."""
    values = refined.predict(fem.model_inputs(refined.model)).double().numpy()
    return list(values) if fem.evaluate_at == "dofs" else [fem.to_dofs @ row for row in values]


@dataclass
class OperatorRefinement:
    """The refined operator: the reduced problem (any leading rank) and the report; the
    predictor is the linearized network at ``report.chosen_rank`` unless a rank is given."""

    model: nn.Module  # the network at θ0 (not modified)
    problem: ReducedPhysicsProblem
    report: OperatorReport

    def predictor(self, fem: FEMInstances, rank: int | None = None) -> RefinedModel:
        """The linearized predictor for ``fem``'s inputs (see :func:`_predictor`). Collective."""
        return _predictor(self.model, self.problem, fem, rank or self.report.chosen_rank)

    def fields(self, fem: FEMInstances, rank: int | None = None) -> list[np.ndarray]:
        """The linearized predictor's owned dof fields (n_owned,) on ``fem``'s inputs (unseen
        ones, typically). Collective."""
        return _linearized_fields(self.predictor(fem, rank), fem)

    def training_fields(self, rank: int | None = None) -> list[np.ndarray]:
        """The linearized fields on the K training instances, owned dofs. Collective."""
        r = rank or self.report.chosen_rank
        return self.problem.fields(self.problem.coefficients(r))

    def committed_fields(self, fem: FEMInstances, rank: int | None = None) -> list[np.ndarray]:
        """The committed network ``θ0 + δ``'s owned dof fields on ``fem``'s inputs. Collective."""
        return fem.network_fields(self.predictor(fem, rank).committed())


def refine_operator(
    model: nn.Module,
    train: FEMInstances,
    rank: int,
    *,
    norm: str = "energy",
    subspace: str = "krylov",
    block_size: int = 1,
    precondition: str = "none",
    probes: int = 64,
    oversampling: int = 10,
    petsc_options=None,
    select: FEMInstances | None = None,
    ranks: Sequence[int] | None = None,
    seed: int = 0,
    chunk_samples: int | None = None,
    progress=None,
) -> OperatorRefinement:
    """Refine ``model`` jointly on ``train``'s K unlabeled instances with one basis of rank
    ``rank``; with ``select``, choose the predictor's rank among ``ranks`` (default
    :func:`scan_ranks`) by :func:`physics_loss` of the linearized predictor on ``select``'s
    instances. No reference solution is used. ``chunk_samples``: inputs per network product
    (default all K). Collective.

    Raises:
        ValueError: a rank outside [1, min(parameters, K · dofs)], a candidate rank outside
            [1, rank], ``select`` with no instances, or ``model`` not matching the instances.
        SolverError: a reduced solve did not converge.
    """
    total = time.perf_counter()
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
    candidates = sorted({int(r) for r in (ranks if ranks is not None else scan_ranks(rank))})
    if not candidates or not 1 <= candidates[0] <= candidates[-1] <= rank:
        raise ValueError(f"ranks must lie in [1, rank={rank}], got {list(ranks or [])}")
    residual = train.residual(model, norm=norm)
    if chunk_samples is not None:
        if chunk_samples < 1:
            raise ValueError(f"chunk_samples must be at least 1, got {chunk_samples}")
        residual.jacobian.chunk_samples = residual.jacobian.vjp_chunk_samples = chunk_samples
    refinement = refine_physics(
        residual,
        rank,
        subspace=subspace,
        block_size=block_size,
        precondition=precondition,
        probes=probes,
        oversampling=oversampling,
        petsc_options=petsc_options,
        seed=seed,
        progress=progress,
    )
    problem = refinement.problem
    basis_rank = refinement.report.rank  # smaller when the Krylov space became invariant
    candidates = [r for r in candidates if r < basis_rank] + [basis_rank]
    seconds = dict(refinement.report.seconds)
    selection, chosen = {}, basis_rank
    if select is not None:
        start = time.perf_counter()
        for r in candidates:
            fields = _linearized_fields(_predictor(model, problem, select, r), select)
            selection[r] = physics_loss(select, fields, norm)
        chosen = min(selection, key=selection.get)
        seconds["selection"] = time.perf_counter() - start
    start = time.perf_counter()
    fields = problem.fields(problem.coefficients(chosen))
    seconds["reduced_solve"] += time.perf_counter() - start
    before = residual.u0
    seconds["total"] = time.perf_counter() - total
    report = OperatorReport(
        rank=basis_rank,
        chosen_rank=chosen,
        norm=norm,
        subspace=subspace,
        n_train=len(train),
        n_select=0 if select is None else len(select),
        n_rows=refinement.report.n_rows,
        n_params=refinement.report.n_params,
        ksp_iterations=problem.iterations[chosen],
        loss_before=physics_loss(train, before, norm),
        loss_after=physics_loss(train, fields, norm),
        residual_l2_before=train.residual_norm(before),
        residual_l2_after=train.residual_norm(fields),
        selection=selection,
        seconds=seconds,
    )
    log.info(
        "operator physics LSR (%s norm, rank %d of %d, %d unlabeled inputs%s): loss %.4e -> %.4e "
        "in %.1f s",
        norm,
        chosen,
        basis_rank,
        len(train),
        f", rank chosen on {len(select)} held-out inputs" if select is not None else "",
        report.loss_before,
        report.loss_after,
        seconds["total"],
    )
    return OperatorRefinement(model, problem, report)
