"""Gauss–Newton iterations on a reduced problem: trust region (two forms), Armijo, sampled.

Each outer iteration takes the gradient g of Φ, solves the Gauss–Newton model
``min_s q(s) = gᵀs + ½ sᵀBs`` (B the Gauss–Newton matrix) by truncated CG
(:func:`~pinn_lsr.vpro.krylov.steihaug_cg`, at most ``krylov_max_iterations`` products, relative
tolerance ``krylov_rtol``) and globalises by one of

* ``trust_region``: Steihaug–Toint CG in the ball ``‖s‖ ≤ Δ``;
  ratio ρ = (Φ(θ) − Φ(θ + s)) / (−q(s)); accept when ρ > ``eta_accept`` (1e-4);
  Δ ← ``shrink``·min(Δ, ‖s‖) when ρ < ``eta_shrink`` (0.1);
  Δ ← ``expand``·Δ when ρ > ``eta_expand`` (0.75) and the step reached the boundary (the
  thresholds and factors of Newman et al. 2021);
* ``levenberg_marquardt`` (default): the same trust region in its damping form: CG on
  ``(B + λI) s = −g`` (the minimiser of q in the ball of radius ‖s(λ)‖), the same ratio test and
  thresholds, λ ← λ/``shrink`` when ρ < 0.1 and λ ← λ/``expand`` when ρ > 0.75. The damped system
  is better conditioned, so the truncated CG steps are better than Steihaug's boundary steps;
* ``armijo``: CG on ``(B + damping I) s = −g``, then backtracking ``t ← t/2`` until
  ``Φ(θ + t s) ≤ Φ(θ) + armijo_c · t gᵀs``.

Sampling: ``curvature_batch_size`` takes the Gauss–Newton products on a random subsample (its own
W and linearisation) while the gradient and the ratio test use all data (subsampled Gauss–Newton,
Byrd et al. 2011); ``batch_size`` builds the whole reduced problem (W(θ), gradient, products,
ratio test) on a random mini-batch per iteration, monitoring the full-data objective every
``monitor_every`` iterations (neither its work nor its time is counted) and keeping the best
monitored iterate. Draws depend on ``(seed, iteration)`` only, the same on every rank.

Termination reasons (``GNResult.status``): ``gradient`` (‖g‖ ≤ gradient_tol), ``max_iterations``,
``max_work_units``, ``max_seconds``, ``trust_region_collapsed`` (Δ < min_radius or λ > max_damping)
and ``line_search_failed``; the last two are warned about. A trial point with a non-finite
objective is rejected. The best iterate is always the one returned.
"""

import logging
import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from mpi4py import MPI

from pinn_lsr.vpro.krylov import steihaug_cg
from pinn_lsr.vpro.problem import Point, ReducedProblem
from pinn_lsr.vpro.reductions import sample_offset

log = logging.getLogger(__name__)

GLOBALIZATIONS = ("trust_region", "levenberg_marquardt", "armijo")


@dataclass(frozen=True)
class GNSettings:
    """How to run GNvpro. Global quantities: the same whatever the number of ranks."""

    loss: str = "squared"  # squared | cross_entropy
    globalization: str = "levenberg_marquardt"  # levenberg_marquardt | trust_region | armijo
    max_iterations: int = 100
    max_work_units: float = math.inf
    max_seconds: float = math.inf
    gradient_tol: float = 1e-12  # stop when ‖∇Φ‖ ≤ gradient_tol
    alpha_W: float = 1e-10  # Tikhonov weight on the final affine layer
    alpha_theta: float = 0.0  # Tikhonov weight on θ − θ_ref
    krylov_rtol: float = 1e-3  # CG stops at ‖Bs + g‖ ≤ krylov_rtol ‖g‖ ...
    krylov_max_iterations: int = 40  # ... or after this many Gauss–Newton products
    radius: float = 1.0  # initial trust radius Δ0
    max_radius: float = 1e4
    min_radius: float = 1e-12  # Δ below this: the trust region collapsed
    eta_accept: float = 1e-4
    eta_shrink: float = 0.1
    eta_expand: float = 0.75
    shrink: float = 0.5
    expand: float = 1.5
    armijo_c: float = 1e-4
    max_backtracks: int = 30
    damping: float = 1e-3  # λ0 of levenberg_marquardt; the fixed λ of armijo
    min_damping: float = 1e-12
    max_damping: float = 1e10  # λ above this: the (damping-form) trust region collapsed
    curvature_batch_size: int | None = None  # samples for the Gauss–Newton products (None: all)
    batch_size: int | None = None  # mini-batch variant: samples per iteration (None: all)
    monitor_every: int = 1  # mini-batch variant: full-data objective every this many iterations
    seed: int = 0  # mini-batch draws
    inner_tol: float = 1e-10  # cross-entropy: ‖∇_W L‖ at which the inner Newton–Krylov solve stops
    inner_max_iterations: int = 50  # cross-entropy: inner Newton steps
    inner_krylov_rtol: float = (
        1e-2  # cross-entropy: relative CG tolerance of each inner Newton step
    )
    inner_krylov_max_iterations: int = 200


@dataclass(frozen=True)
class GNResult:
    """What GNvpro did. ``history``: one dict per iteration (0 is the start), see
    :func:`minimize`."""

    theta: torch.Tensor  # (m,) best iterate
    W: torch.Tensor  # (n_outputs, n_features + 1), W(θ) on all data
    objective: float
    loss: float
    status: str
    iterations: int
    work_units: float
    seconds: float
    history: list[dict] = field(default_factory=list)


def minimize(problem: ReducedProblem, theta0: torch.Tensor, settings: GNSettings) -> GNResult:
    """Minimise the reduced objective of ``problem`` from θ0. Collective on ``problem.comm``.

    The model is not changed (call ``problem.write`` on the result's point, as
    :func:`pinn_lsr.vpro.train_gnvpro` does). Every history entry has ``iteration``, ``objective``,
    ``loss`` (on all data), ``gradient_norm``, ``work_units``, ``seconds``, ``radius`` (Δ; for
    levenberg_marquardt the implied ‖s(λ)‖ and ``damping`` λ), ``inner_iterations`` (CG
    products), ``krylov_reason``, ``step_norm``, ``ratio`` (trust region) or ``step_length``
    (Armijo), ``accepted``, and the problem's facts (e.g. ``w_iterations``, ``w_converged`` of
    the cross-entropy inner solve).

    Raises:
        ValueError: unknown globalisation, bad batch size, or a non-finite objective at θ0.
    """
    if settings.globalization not in GLOBALIZATIONS:
        raise ValueError(
            f"unknown globalization {settings.globalization!r}; choose one of {GLOBALIZATIONS}"
        )
    for name in ("batch_size", "curvature_batch_size"):
        size = getattr(settings, name)
        if size is not None and not 1 <= size <= problem.n_samples:
            raise ValueError(f"{name} must be between 1 and {problem.n_samples}, got {size}")
    if settings.batch_size is not None and settings.curvature_batch_size is not None:
        raise ValueError(
            "choose batch_size (mini-batch variant) or curvature_batch_size "
            "(subsampled products), not both"
        )
    comm = problem.comm
    clock = _Clock(comm)
    point = problem.evaluate(theta0)
    if not math.isfinite(point.objective):
        raise ValueError(f"the objective at the initial parameters is {point.objective}")
    best = point
    radius = settings.radius
    damping = settings.damping
    history = [_record(0, point, None, problem, clock, {"radius": radius})]
    status = "max_iterations"
    offset = sample_offset(len(problem.inputs), comm)
    for iteration in range(1, settings.max_iterations + 1):
        local = problem
        if settings.batch_size is not None:
            local = problem.subset(
                _draw(settings.seed, iteration, settings.batch_size, problem, offset)
            )
            point = local.evaluate(point.theta, start=point)
        g = local.gradient(point)
        if settings.curvature_batch_size is not None:
            sample = problem.subset(
                _draw(settings.seed, iteration, settings.curvature_batch_size, problem, offset)
            )
            sample_point = sample.evaluate(point.theta, start=point)
            gn_product = lambda v: sample.gn_product(sample_point, v)  # noqa: E731
        else:
            gn_product = lambda v: local.gn_product(point, v)  # noqa: E731
        gradient_norm = float(g.norm())
        if gradient_norm <= settings.gradient_tol:
            status = "gradient"
            break
        if settings.globalization == "trust_region":
            point, radius, facts = _trust_region_step(local, point, g, gn_product, radius, settings)
        elif settings.globalization == "levenberg_marquardt":
            point, damping, facts = _levenberg_marquardt_step(
                local, point, g, gn_product, damping, settings
            )
        else:
            point, facts = _armijo_step(local, point, g, gn_product, settings)
        if settings.batch_size is not None and (
            iteration % settings.monitor_every == 0 or iteration == settings.max_iterations
        ):
            with clock.paused():
                full = _uncounted(problem, point.theta, point)
            history.append(_record(iteration, full, gradient_norm, problem, clock, facts))
            best = full if full.objective < best.objective else best
        elif settings.batch_size is None:
            history.append(_record(iteration, point, gradient_norm, problem, clock, facts))
            best = point
        if facts.get("failed"):
            status = facts["failed"]
            warnings.warn(
                f"GNvpro stopped at iteration {iteration}: {status}; keeping the best iterate",
                RuntimeWarning,
                stacklevel=2,
            )
            break
        if problem.work.units >= settings.max_work_units:
            status = "max_work_units"
            break
        if clock.seconds() >= settings.max_seconds:
            status = "max_seconds"
            break
    return GNResult(
        theta=best.theta,
        W=best.W,
        objective=best.objective,
        loss=best.loss,
        status=status,
        iterations=len(history) - 1,
        work_units=problem.work.units,
        seconds=clock.seconds(),
        history=history,
    )


def _trust_region_step(
    problem: ReducedProblem,
    point: Point,
    g: torch.Tensor,
    gn_product,
    radius: float,
    settings: GNSettings,
):
    krylov = steihaug_cg(
        gn_product,
        g,
        radius,
        rtol=settings.krylov_rtol,
        max_iterations=settings.krylov_max_iterations,
    )
    step_norm = float(krylov.step.norm())
    trial = _safe_evaluate(problem, point.theta + krylov.step, point)
    predicted = -krylov.model_change
    actual = point.objective - trial.objective if trial is not None else -math.inf
    ratio = actual / predicted if predicted > 0 else -math.inf
    accepted = ratio > settings.eta_accept
    if ratio < settings.eta_shrink:
        radius = settings.shrink * min(radius, step_norm)
    elif ratio > settings.eta_expand and krylov.reason == "boundary":
        radius = min(settings.expand * radius, settings.max_radius)
    facts = {
        "inner_iterations": krylov.iterations,
        "krylov_reason": krylov.reason,
        "step_norm": step_norm,
        "ratio": ratio,
        "accepted": accepted,
        "radius": radius,
    }
    if radius < settings.min_radius:
        facts["failed"] = "trust_region_collapsed"
    return (trial if accepted else point), radius, facts


def _levenberg_marquardt_step(
    problem: ReducedProblem,
    point: Point,
    g: torch.Tensor,
    gn_product,
    damping: float,
    settings: GNSettings,
):
    """One damping-form trust-region step; the history's ``radius`` is the implied one, ‖s(λ)‖."""
    krylov = steihaug_cg(
        lambda v: gn_product(v) + damping * v,
        g,
        math.inf,
        rtol=settings.krylov_rtol,
        max_iterations=settings.krylov_max_iterations,
    )
    trial = _safe_evaluate(problem, point.theta + krylov.step, point)
    predicted = -(krylov.model_change - 0.5 * damping * float(krylov.step @ krylov.step))
    actual = point.objective - trial.objective if trial is not None else -math.inf
    ratio = actual / predicted if predicted > 0 else -math.inf
    accepted = ratio > settings.eta_accept
    if ratio < settings.eta_shrink:
        damping = max(damping, settings.min_damping) / settings.shrink
    elif ratio > settings.eta_expand:
        damping = damping / settings.expand
    step_norm = float(krylov.step.norm())
    facts = {
        "inner_iterations": krylov.iterations,
        "krylov_reason": krylov.reason,
        "step_norm": step_norm,
        "ratio": ratio,
        "accepted": accepted,
        "damping": damping,
        "radius": step_norm,
    }
    if damping > settings.max_damping:
        facts["failed"] = "trust_region_collapsed"
    return (trial if accepted else point), damping, facts


def _armijo_step(
    problem: ReducedProblem, point: Point, g: torch.Tensor, gn_product, settings: GNSettings
):
    krylov = steihaug_cg(
        lambda v: gn_product(v) + settings.damping * v,
        g,
        math.inf,
        rtol=settings.krylov_rtol,
        max_iterations=settings.krylov_max_iterations,
    )
    slope = float(g @ krylov.step)
    facts = {
        "inner_iterations": krylov.iterations,
        "krylov_reason": krylov.reason,
        "step_norm": float(krylov.step.norm()),
        "accepted": False,
        "step_length": 0.0,
        "radius": math.nan,
    }
    t = 1.0
    for _ in range(settings.max_backtracks + 1):
        trial = _safe_evaluate(problem, point.theta + t * krylov.step, point)
        if trial is not None and trial.objective <= point.objective + settings.armijo_c * t * slope:
            facts.update(accepted=True, step_length=t)
            return trial, facts
        t *= 0.5
    facts["failed"] = "line_search_failed"
    return point, facts


def _safe_evaluate(problem: ReducedProblem, theta: torch.Tensor, start: Point) -> Point | None:
    """The point at θ, or None when its objective is not finite (a rejected trial)."""
    with np.errstate(all="ignore"):
        try:
            trial = problem.evaluate(theta, start=start)
        except (FloatingPointError, torch.linalg.LinAlgError, np.linalg.LinAlgError):
            trial = None
    if not problem.comm.allreduce(
        trial is not None and math.isfinite(trial.objective), op=MPI.LAND
    ):
        return None
    return trial


def _uncounted(problem: ReducedProblem, theta: torch.Tensor, start: Point) -> Point:
    """The full-data point at θ for monitoring; its work is not counted."""
    units = problem.work.units
    full = problem.evaluate(theta, start=start)
    problem.work.units = units
    return full


def _draw(
    seed: int, iteration: int, size: int, problem: ReducedProblem, offset: int
) -> torch.Tensor:
    """This rank's local indices of a random draw of ``size`` of all samples (same draw on every
    rank)."""
    chosen = np.sort(
        np.random.default_rng([seed, iteration]).choice(problem.n_samples, size, replace=False)
    )
    mine = chosen[(chosen >= offset) & (chosen < offset + len(problem.inputs))] - offset
    return torch.from_numpy(mine)


def _record(iteration, point, gradient_norm, problem, clock, facts) -> dict:
    entry = {
        "iteration": iteration,
        "objective": point.objective,
        "loss": point.loss,
        "gradient_norm": gradient_norm if gradient_norm is not None else math.nan,
        "work_units": problem.work.units,
        "seconds": clock.seconds(),
        "inner_iterations": 0,
        **facts,
        **point.info,
    }
    entry.pop("failed", None)
    log.debug("GNvpro %s", entry)
    return entry


class _Clock:
    """Wall seconds since creation, slowest rank, with paused intervals excluded. Collective
    reads."""

    def __init__(self, comm: MPI.Comm):
        self.comm = comm
        self.start = time.perf_counter()
        self.excluded = 0.0

    def seconds(self) -> float:
        return self.comm.allreduce(time.perf_counter() - self.start - self.excluded, op=MPI.MAX)

    @contextmanager
    def paused(self):
        start = time.perf_counter()
        yield
        self.excluded += time.perf_counter() - start
