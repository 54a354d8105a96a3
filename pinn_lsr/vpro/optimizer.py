"""Gauss–Newton iterations on a reduced problem: trust region (two forms), Armijo, sampled.

Each outer iteration takes the gradient g of Φ and builds a Lanczos basis of the Gauss–Newton
model ``q(s) = gᵀs + ½ sᵀBs`` (B the Gauss–Newton matrix; :func:`~pinn_lsr.vpro.krylov.lanczos`,
at most ``krylov_max_iterations`` products, stopped like CG at the relative residual
η_k = max(``krylov_rtol``, min(``krylov_forcing``, √(‖g_k‖/‖g_1‖))), an inexact-Newton forcing
term (Eisenstat and Walker 1996; Dembo and Steihaug 1983): loose while far from a stationary
point, where an accurate Gauss–Newton step is wasted work, tight near one; ``krylov_forcing=None``
keeps η_k = ``krylov_rtol``), takes a step from it
(:meth:`~pinn_lsr.vpro.krylov.KrylovBasis.solve`) and globalises by one of

* ``trust_region``: min q(s) over the basis in the ball ``‖s‖ ≤ Δ`` (the basis stops growing
  where CG leaves the ball, after as many products as Steihaug–Toint CG);
  ratio ρ = (Φ(θ) − Φ(θ + s)) / (−q(s)); accept when ρ > ``eta_accept`` (1e-4);
  Δ ← ``shrink``·min(Δ, ‖s‖) when ρ < ``eta_shrink`` (0.1);
  Δ ← ``expand``·Δ when ρ > ``eta_expand`` (0.75) and the step reached the boundary (the
  thresholds and factors of Newman et al. 2021). Δ0 = ``radius`` · ‖s_GN‖, s_GN the first full
  Gauss–Newton step (its basis is grown without a ball), as in the paper's code (Meganet.m,
  trnewton.m); ``min_radius`` and ``max_radius`` are in the same unit ‖s_GN‖;
* ``levenberg_marquardt`` (default): the same trust region in its damping form: the Galerkin
  solution of ``(B + λI) s = −g`` in the basis (the minimiser of q in the ball of radius
  ‖s(λ)‖), the same ratio test and thresholds, μ ← μ/``shrink`` when ρ < 0.1 and
  μ ← μ/``expand`` when ρ > 0.75, with λ = μ · g₁ᵀB₁g₁/g₁ᵀg₁ (the curvature along the first
  iteration's gradient, the first entry of its Lanczos matrix: no extra product) and
  μ0 = ``damping``; ``min_damping`` and ``max_damping`` bound μ. (The curvature along each
  iteration's own gradient was tried as the unit: it jumps by 10–100× between iterations on
  peaks, so λ did too, and the loss after 1000 WU was 3× worse.) The damped system is better
  conditioned, so its truncated steps are better than the ball's;
* ``armijo``: the same damped step with the fixed μ = ``damping``, then backtracking
  ``t ← t/2`` until ``Φ(θ + t s) ≤ Φ(θ) + armijo_c · t gᵀs``.

A rejected trust-region or Levenberg–Marquardt step is re-solved at the next iteration, with the
new Δ or λ, in the basis it was taken from (no new gradient, no new products: its only work is
the trial point's forward pass, 1 WU), as the paper's code does.

Scale invariance: scaling the targets by c scales Φ, g and B by c² (W by c, θ unchanged), and
every test above compares like with like (ratios, λ relative to g₁ᵀB₁g₁/g₁ᵀg₁, Δ relative to a step
in θ, the gradient test and the forcing term relative to the first gradient; the Tikhonov weights
are made relative where the problem is built, see :class:`GNSettings`), so the iterates θ_k, the
relative losses Φ_k/Φ_0 and the accepted steps do not depend on the targets' units (up to
rounding).

Sampling: ``curvature_batch_size`` takes the Gauss–Newton products on a random subsample (its own
W and linearisation) while the gradient and the ratio test use all data (subsampled Gauss–Newton,
Byrd et al. 2011); ``batch_size`` builds the whole reduced problem (W(θ), gradient, products,
ratio test) on a random mini-batch per iteration, monitoring the full-data objective every
``monitor_every`` iterations (neither its work nor its time is counted) and keeping the best
monitored iterate. Draws depend on ``(seed, iteration)`` only, the same on every rank; a re-solve
keeps the draw of the iteration that built its basis.

Termination reasons (``GNResult.status``): ``gradient`` (‖g‖ ≤ gradient_tol · ‖g_1‖, g_1 the first
iteration's gradient), ``max_iterations``, ``max_work_units``, ``max_seconds``,
``trust_region_collapsed`` (Δ < min_radius · ‖s_GN‖ or μ > max_damping), ``line_search_failed``
and ``no_curvature`` (gᵀBg ≤ 0: for the full-data Gauss–Newton matrix only when g vanishes up to
rounding, possible with a curvature subsample); the last three are warned about. A trial point
with a non-finite objective is rejected. The best iterate is always the one returned.
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

from pinn_lsr.vpro.krylov import KrylovBasis, KrylovStep, lanczos
from pinn_lsr.vpro.problem import Point, ReducedProblem
from pinn_lsr.vpro.reductions import sample_offset
from pinn_lsr.vpro.separable import LinearWeights

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
    gradient_tol: float = 1e-12  # stop when ‖∇Φ‖ ≤ gradient_tol · (the first iteration's ‖∇Φ‖)
    # Tikhonov weight on the eliminated weights in the output's units: (α_W/2)‖scale · (W, β)‖²
    # (scale: the model's output normalisation), so the term scales with the data term
    alpha_W: float = 1e-10
    # Tikhonov weight on θ − θ_ref relative to the targets' mean square about the output shift
    # (the loss of the constant prediction; squared loss); absolute for cross-entropy
    alpha_theta: float = 0.0
    # CG stops at ‖(B + λI)s + g‖ ≤ η_k ‖g‖, η_k = max(krylov_rtol, min(krylov_forcing,
    # √(‖g_k‖/‖g_1‖))) (None: η_k = krylov_rtol) ... or after krylov_max_iterations products.
    # The forcing term 0.1 against a fixed 1e-3 (bench/README.md, 3 seeds): CDR 200 / 1000 WU
    # 8.5e-4 / 3.6e-4 against 1.7e-3 / 5.1e-4, cdr_wide 1.6e-4 / 5.6e-5 against 2.2e-4 / 7.1e-5,
    # peaks 6000 WU 2.1e-5 against 2.7e-5 (1000 WU: 1.8e-3 against 7.9e-4)
    krylov_rtol: float = 1e-3
    krylov_forcing: float | None = 0.1
    krylov_max_iterations: int = 40
    radius: float = 1.0  # Δ0, in units of the first full Gauss–Newton step's norm ‖s_GN‖
    max_radius: float = 1e4  # Δ ≤ max_radius · ‖s_GN‖
    min_radius: float = 1e-12  # Δ < min_radius · ‖s_GN‖: the trust region collapsed
    eta_accept: float = 1e-4
    eta_shrink: float = 0.1
    eta_expand: float = 0.75
    shrink: float = 0.5
    expand: float = 1.5
    armijo_c: float = 1e-4
    max_backtracks: int = 30
    # μ0 of levenberg_marquardt, the fixed μ of armijo: λ = μ · g₁ᵀB₁g₁/g₁ᵀg₁ (relative damping;
    # g₁, B₁: the first iteration's gradient and Gauss–Newton matrix). 1e-3: of 1e-5 … 1e-1 the
    # best or within 2 % of it on CDR, CDR with 128 units (1e-2: 1.7× worse) and DeepONet-Darcy;
    # on peaks 1e-2 and 1e-5 did better, within a ×10 spread over seeds (bench/README.md)
    damping: float = 1e-3
    min_damping: float = 1e-12  # μ after a poor step is at least min_damping/shrink
    max_damping: float = 1e10  # μ above this: the (damping-form) trust region collapsed
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
    weights: LinearWeights  # w(θ) = (W, β) on all data
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
    ``loss`` (on all data), ``gradient_norm``, ``work_units``, ``seconds``, ``radius`` (Δ in θ's
    units; for levenberg_marquardt the implied ‖s(λ)‖ and ``damping`` μ, relative),
    ``inner_iterations`` (Gauss–Newton products: 0 for a re-solve), ``krylov_reason``,
    ``krylov_reused`` (a rejected step's basis re-solved), ``step_norm``, ``ratio`` (trust
    region) or ``step_length`` (Armijo), ``accepted``, and the problem's facts (e.g.
    ``w_iterations``, ``w_converged`` of the cross-entropy inner solve).

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
    if settings.krylov_forcing is not None and not 0 < settings.krylov_forcing < 1:
        raise ValueError(f"krylov_forcing must be in (0, 1) or None, got {settings.krylov_forcing}")
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
    radius = math.inf  # trust_region: Δ; the first basis is grown without a ball
    radius_unit = math.nan  # ‖s_GN‖ of the first full Gauss–Newton step
    damping = settings.damping
    damping_unit = None  # λ = μ · damping_unit: g₁ᵀB₁g₁/g₁ᵀg₁, from the first basis
    gradient_unit = math.nan  # ‖g‖ of the first iteration
    kept = None  # after a rejected step: (problem, g, ‖g‖, basis) to re-solve in
    history = [_record(0, point, None, problem, clock, {"radius": math.nan})]
    status = "max_iterations"
    offset = sample_offset(len(problem.inputs), comm)
    for iteration in range(1, settings.max_iterations + 1):
        if kept is None:
            local = problem
            if settings.batch_size is not None:
                local = problem.subset(
                    _draw(settings.seed, iteration, settings.batch_size, problem, offset)
                )
                point = local.evaluate(point.theta, start=point)
            g = local.gradient(point)
            gradient_norm = float(g.norm())
            if iteration == 1:
                gradient_unit = gradient_norm
            if gradient_norm <= settings.gradient_tol * gradient_unit:
                status = "gradient"
                break
            basis = lanczos(
                _gn_product(problem, local, point, iteration, offset, settings),
                g,
                rtol=_forcing(settings, gradient_norm / gradient_unit),
                max_iterations=settings.krylov_max_iterations,
                damping=0.0 if settings.globalization == "trust_region" else damping,
                unit=damping_unit,
                radius=radius,
            )
            if len(basis.T) == 0:
                status = "no_curvature"
                warnings.warn(
                    f"GNvpro stopped at iteration {iteration}: the Gauss–Newton matrix has no "
                    "positive curvature along the gradient; keeping the best iterate",
                    RuntimeWarning,
                    stacklevel=2,
                )
                break
        else:
            local, g, gradient_norm, basis = kept
        damping_unit = basis.unit
        if settings.globalization == "trust_region":
            if iteration == 1:
                radius_unit = float(basis.solve().step.norm())
                radius = settings.radius * radius_unit
            point, radius, facts = _trust_region_step(
                local, point, basis, radius, radius_unit, settings
            )
        elif settings.globalization == "levenberg_marquardt":
            point, damping, facts = _levenberg_marquardt_step(
                local, point, basis, damping, settings
            )
        else:
            point, facts = _armijo_step(local, point, g, basis, settings)
        facts.update(
            inner_iterations=0 if kept is not None else basis.iterations,
            krylov_reason=basis.reason,
            krylov_reused=kept is not None,
        )
        kept = None if facts["accepted"] else (local, g, gradient_norm, basis)
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
        weights=best.weights,
        objective=best.objective,
        loss=best.loss,
        status=status,
        iterations=len(history) - 1,
        work_units=problem.work.units,
        seconds=clock.seconds(),
        history=history,
    )


def _forcing(settings: GNSettings, relative_gradient: float) -> float:
    """η_k, CG's relative tolerance, for ‖g_k‖/‖g_1‖ = ``relative_gradient``."""
    if settings.krylov_forcing is None:
        return settings.krylov_rtol
    return max(settings.krylov_rtol, min(settings.krylov_forcing, math.sqrt(relative_gradient)))


def _gn_product(problem, local, point, iteration, offset, settings):
    """v -> B v at ``point``: on ``local`` (all data or the mini-batch), or on this iteration's
    curvature subsample."""
    if settings.curvature_batch_size is None:
        return lambda v: local.gn_product(point, v)
    sample = problem.subset(
        _draw(settings.seed, iteration, settings.curvature_batch_size, problem, offset)
    )
    sample_point = sample.evaluate(point.theta, start=point)
    return lambda v: sample.gn_product(sample_point, v)


def _ratio_test(
    problem: ReducedProblem, point: Point, step: KrylovStep
) -> tuple[Point | None, float]:
    """The trial point at θ + s (None when not finite) and ρ = actual / predicted decrease."""
    trial = _safe_evaluate(problem, point.theta + step.step, point)
    predicted = -step.model_change
    actual = point.objective - trial.objective if trial is not None else -math.inf
    return trial, (actual / predicted if predicted > 0 else -math.inf)


def _trust_region_step(
    problem: ReducedProblem,
    point: Point,
    basis: KrylovBasis,
    radius: float,
    radius_unit: float,
    settings: GNSettings,
):
    """One step in the ball ‖s‖ ≤ Δ; Δ's bounds are in units of ``radius_unit`` = ‖s_GN‖."""
    step = basis.solve(radius=radius)
    trial, ratio = _ratio_test(problem, point, step)
    step_norm = float(step.step.norm())
    accepted = ratio > settings.eta_accept
    if ratio < settings.eta_shrink:
        radius = settings.shrink * min(radius, step_norm)
    elif ratio > settings.eta_expand and step.boundary:
        radius = min(settings.expand * radius, settings.max_radius * radius_unit)
    facts = {"step_norm": step_norm, "ratio": ratio, "accepted": accepted, "radius": radius}
    if radius < settings.min_radius * radius_unit:
        facts["failed"] = "trust_region_collapsed"
    return (trial if accepted else point), radius, facts


def _levenberg_marquardt_step(
    problem: ReducedProblem,
    point: Point,
    basis: KrylovBasis,
    damping: float,
    settings: GNSettings,
):
    """One damping-form trust-region step with the relative damping μ = ``damping``; the
    history's ``radius`` is the implied one, ‖s(λ)‖."""
    step = basis.solve(damping=damping)
    trial, ratio = _ratio_test(problem, point, step)
    accepted = ratio > settings.eta_accept
    if ratio < settings.eta_shrink:
        damping = max(damping, settings.min_damping) / settings.shrink
    elif ratio > settings.eta_expand:
        damping = damping / settings.expand
    step_norm = float(step.step.norm())
    facts = {
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
    problem: ReducedProblem,
    point: Point,
    g: torch.Tensor,
    basis: KrylovBasis,
    settings: GNSettings,
):
    step = basis.solve(damping=settings.damping).step
    slope = float(g @ step)
    facts = {
        "step_norm": float(step.norm()),
        "accepted": False,
        "step_length": 0.0,
        "radius": math.nan,
    }
    t = 1.0
    for _ in range(settings.max_backtracks + 1):
        trial = _safe_evaluate(problem, point.theta + t * step, point)
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
