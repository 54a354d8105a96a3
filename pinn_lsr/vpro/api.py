"""Entry points: :func:`train_gnvpro` for a user's network and tensors, :func:`run_gnvpro` with a
:class:`GNSettings`, :func:`train_gnvpro_on_dataset` for the pipeline."""

import dataclasses
import warnings

import numpy as np
import torch
from mpi4py import MPI
from torch import nn

from pinn_lsr.vpro.cross_entropy import CrossEntropyProblem
from pinn_lsr.vpro.optimizer import GNResult, GNSettings, minimize
from pinn_lsr.vpro.plain import PlainSquaredProblem, WholeModel
from pinn_lsr.vpro.problem import ReducedProblem, WorkCounter
from pinn_lsr.vpro.separable import SeparableModel, as_separable
from pinn_lsr.vpro.squared import SquaredProblem

GNVPRO_LOSSES = ("squared", "cross_entropy")


def build_problem(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    settings: GNSettings,
    *,
    comm: MPI.Comm = MPI.COMM_WORLD,
    theta_ref: torch.Tensor | None = None,
    points: torch.Tensor | None = None,
    variable_projection: bool = True,
) -> ReducedProblem:
    """The reduced problem of ``model`` on this rank's ``(inputs, targets)``. Collective.

    ``variable_projection=False`` gives plain Gauss–Newton over all parameters (squared loss only).

    Raises:
        ValueError: unknown loss, mismatched lengths, NaN/Inf in the data, targets that do not
            match the model's outputs, or a model without a final affine layer; on every rank.
    """
    if settings.loss not in GNVPRO_LOSSES:
        raise ValueError(f"unknown loss {settings.loss!r}; choose one of {GNVPRO_LOSSES}")
    ok = (
        len(inputs) == len(targets)
        and bool(torch.isfinite(inputs).all())
        and (not targets.dtype.is_floating_point or bool(torch.isfinite(targets).all()))
    )
    if not comm.allreduce(ok, op=MPI.LAND):
        raise ValueError(
            f"inputs and targets must have the same length and finite values on every rank; "
            f"got {tuple(inputs.shape)} and {tuple(targets.shape)} here"
            f"{'' if ok else ' (this rank is at fault)'}"
        )
    if comm.allreduce(len(inputs)) == 0:
        raise ValueError("no training samples")
    kwargs = {"theta_ref": theta_ref, "comm": comm, "work": WorkCounter()}
    dtype = next(model.parameters()).dtype
    inputs = inputs.to(dtype)
    if not variable_projection:
        if settings.loss != "squared":
            raise ValueError(
                "plain Gauss–Newton (variable_projection=False) supports the squared loss only"
            )
        whole = WholeModel(model)
        targets = targets.to(dtype)
        return PlainSquaredProblem(
            whole, inputs, targets, **_tikhonov(settings, whole, targets, comm), **kwargs
        )
    separable = as_separable(model, points=points)
    if settings.loss == "cross_entropy":
        inner = {
            "tol": settings.inner_tol,
            "max_iterations": settings.inner_max_iterations,
            "krylov_rtol": settings.inner_krylov_rtol,
            "krylov_max_iterations": settings.inner_krylov_max_iterations,
        }
        return CrossEntropyProblem(
            separable,
            inputs,
            targets,
            inner=inner,
            **_tikhonov(settings, separable, None, comm),
            **kwargs,
        )
    if targets.numel() != len(inputs) * separable.n_values:
        raise ValueError(
            f"targets of shape {tuple(targets.shape)} do not match the model: expected "
            f"{separable.n_values} values per sample"
        )
    targets = targets.to(dtype)
    return SquaredProblem(
        separable, inputs, targets, **_tikhonov(settings, separable, targets, comm), **kwargs
    )


def _tikhonov(
    settings: GNSettings, separable: SeparableModel, targets: torch.Tensor | None, comm: MPI.Comm
) -> dict[str, float]:
    """The problem's absolute ``alpha_W`` and ``alpha_theta`` from the settings' relative ones.
    Collective.

    α_W · scale² (the penalty on the output-space weights scale · W) and, for the squared loss
    (``targets`` given, any shape), α_θ · mean((y − shift)²) over all target entries of all
    ranks: both terms then scale like the data term when the targets are rescaled, whether the
    model's output normalisation follows them or not. The cross-entropy loss has no units, so
    its α_θ is taken as it is.
    """
    alpha_theta = settings.alpha_theta
    if targets is not None:
        sums = comm.allreduce(
            np.array([float((targets - separable.shift).pow(2).sum()), targets.numel()])
        )
        alpha_theta *= sums[0] / sums[1]
    return {"alpha_W": settings.alpha_W * separable.scale**2, "alpha_theta": alpha_theta}


def train_gnvpro(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss: str = "squared",
    comm: MPI.Comm = MPI.COMM_WORLD,
    theta_ref: torch.Tensor | None = None,
    points: torch.Tensor | None = None,
    **settings,
) -> tuple[nn.Module, list[dict]]:
    """Train ``model`` by GNvpro on ``(x, y)``; return the model (changed in place) and the history.

    Collective on ``comm``: each rank passes its own share of the samples and all ranks take the
    same steps. Float64 models are recommended (Gauss–Newton needs the accuracy).

    Args:
        model: an MLP, a DeepONet (its branch's last linear layer and its bias are eliminated),
            any model declaring ``bilinear_output()``, or an ``nn.Sequential`` ending in
            ``nn.Linear`` (see :mod:`pinn_lsr.vpro.separable`); normalisers are used as they are.
        x: (n_local, ...) inputs. y: squared loss: targets (n_local, n_outputs) (DeepONet:
            (n_local, n_points)); cross-entropy: class indices (n_local,).
        loss: ``"squared"`` (mean squared error) or ``"cross_entropy"`` (softmax).
        theta_ref: θ_ref of the Tikhonov term (default zeros), flat like
            ``as_separable(model).theta()``.
        points: DeepONet target points (n_points, d) (default: its grid nodes).
        **settings: fields of :class:`~pinn_lsr.vpro.optimizer.GNSettings`, e.g. ``max_iterations``,
            ``globalization`` (``"levenberg_marquardt"``, ``"trust_region"``, ``"armijo"``),
            ``krylov_max_iterations``, ``curvature_batch_size``, ``batch_size``, ``alpha_W``.

    Returns:
        ``(model, history)``: one dict per iteration with ``iteration``, ``loss``, ``objective``,
        ``work_units``, ``seconds``, ``radius``, ``inner_iterations``, ...; the last entry also has
        ``status`` (why it stopped, see :mod:`pinn_lsr.vpro.optimizer`).

    Raises:
        ValueError: bad data, settings or model (see :func:`build_problem`).
    """
    unknown = set(settings) - {f.name for f in dataclasses.fields(GNSettings)}
    if unknown:
        raise ValueError(f"unknown GNvpro settings {sorted(unknown)}; see pinn_lsr.vpro.GNSettings")
    result = run_gnvpro(
        model,
        x,
        y,
        GNSettings(loss=loss, **settings),
        comm=comm,
        theta_ref=theta_ref,
        points=points,
    )
    history = [dict(entry) for entry in result.history]
    history[-1]["status"] = result.status
    return model, history


def run_gnvpro(
    model,
    x,
    y,
    settings: GNSettings,
    *,
    comm=MPI.COMM_WORLD,
    theta_ref=None,
    points=None,
    variable_projection=True,
) -> GNResult:
    """:func:`train_gnvpro` with a settings object, returning the whole :class:`GNResult`.
    Collective."""
    problem = build_problem(
        model,
        x,
        y,
        settings,
        comm=comm,
        theta_ref=theta_ref,
        points=points,
        variable_projection=variable_projection,
    )
    result = minimize(problem, problem.separable.theta(), settings)
    problem.separable.write(result.theta, result.weights)
    if result.status in ("trust_region_collapsed", "line_search_failed", "no_curvature"):
        warnings.warn(
            f"GNvpro: {result.status}; the model holds the best iterate (loss {result.loss:.3e})",
            RuntimeWarning,
            stacklevel=2,
        )
    return result


def train_gnvpro_on_dataset(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    settings: GNSettings,
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> GNResult:
    """Pipeline entry: fit normalisers, split the samples over ranks, train by GNvpro. Collective.

    Every rank passes the whole training set (as :func:`pinn_lsr.train.loop.train` takes it);
    rank k trains on the k-th contiguous share. Models with ``input_normalizer`` /
    ``output_normalizer`` get them fitted to the data first (the output one for the squared
    loss only).
    """
    if hasattr(model, "input_normalizer"):
        model.input_normalizer.fit(x_train)
    if hasattr(model, "output_normalizer") and settings.loss == "squared":
        model.output_normalizer.fit(y_train)
    share = torch.from_numpy(np.array_split(np.arange(len(x_train)), comm.size)[comm.rank])
    return run_gnvpro(model, x_train[share], y_train[share], settings, comm=comm)
