"""Data-parallel gradient training under MPI.

Every rank holds the same model and the whole dataset. Each epoch draws one permutation from
``(seed, epoch)``; every global batch is split into contiguous shares, one per rank; each rank
back-propagates ``Σ_{its samples} loss_i / |global batch|`` and the gradients are summed across
ranks, so 1 and N ranks take the same steps up to floating-point reduction order. Checkpoints
hold everything needed to continue (model, optimiser, schedule, history, work counters), and the
permutations depend only on the epoch, so a resumed run ends with the parameters of an
uninterrupted one.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from mpi4py import MPI
from torch import nn
from tqdm import tqdm

from pinn_lsr.models.parameters import real_parameters
from pinn_lsr.parallel.device import allreduce_, broadcast_, resolve_device
from pinn_lsr.train.checkpoint import model_state, read_checkpoint, save_checkpoint
from pinn_lsr.train.losses import LOSSES
from pinn_lsr.train.metrics import error_summary
from pinn_lsr.train.optim import make_optimizer, make_scheduler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """How to train (global quantities: the same whatever the number of ranks)."""

    epochs: int = 20
    batch_size: int = 20  # global batch; ignored by lbfgs (full batch)
    optimizer: str = "adam"  # adam | sgd | lbfgs
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd
    scheduler: str = "step"  # none | step | plateau | cosine
    step_size: int = 50  # epochs between decays (step)
    gamma: float = 0.5  # decay factor (step, plateau)
    patience: int = 10  # epochs without improvement (plateau)
    lbfgs_max_iter: int = 20  # L-BFGS iterations per epoch
    loss: str = "rel_l2"  # rel_l2 | mse
    seed: int = 0  # permutations of the data
    checkpoint_every: int = 0  # epochs; 0: only at the end


def resume_changes(
    state: dict, settings: TrainSettings, *, name: Callable[[str], str] = str
) -> dict[str, list]:
    """The settings that resuming from checkpoint ``state`` with ``settings`` changes, as
    ``{name: [saved, new]}``: ``checkpoint_every``, and ``epochs`` when the run is lengthened or
    shortened to no fewer than the epochs already done (except under the cosine schedule, whose
    period is the number of epochs). Such a run ends with the parameters of an uninterrupted run
    with ``settings``. Local.

    Raises:
        ValueError: ``state`` holds no gradient-training state, or any other setting differs, or
            ``epochs`` changes where it may not; the message lists every difference, each
            setting called ``name(field)``.
    """
    if not {"optimizer_state", "epoch", "settings"} <= set(state):
        raise ValueError(
            "the checkpoint holds no gradient-training state to resume (it was written by "
            f"{state.get('optimizer', 'another program')!r})"
        )
    saved, new = state["settings"], asdict(settings)
    changes = {k: [saved.get(k), v] for k, v in new.items() if saved.get(k) != v}
    refused = [k for k in changes if k not in ("epochs", "checkpoint_every")]
    done = state["epoch"]
    if "epochs" in changes and (settings.epochs < done or settings.scheduler == "cosine"):
        refused.append("epochs")
    if refused:
        why = {
            "epochs": f" ({done} epochs are done)"
            if settings.epochs < done
            else " (the cosine schedule's period is the number of epochs)"
        }
        raise ValueError(
            "resuming would change settings the checkpoint was trained with: "
            + "; ".join(
                f"{name(k)}={changes[k][1]!r} (checkpoint: {changes[k][0]!r}){why.get(k, '')}"
                for k in refused
            )
        )
    return changes


@dataclass
class WorkCounters:
    """Work done, summed over ranks: samples through forward and backward passes, steps."""

    epochs: int = 0
    optimizer_steps: int = 0
    forward_samples: int = 0
    backward_samples: int = 0
    seconds: float = 0.0


@dataclass
class TrainResult:
    """What training did. ``history`` has one entry per epoch: epoch, train_loss, test_rel_l2,
    lr."""

    history: list[dict] = field(default_factory=list)
    counters: WorkCounters = field(default_factory=WorkCounters)
    train_rel_l2: float = float("nan")
    test_rel_l2: float = float("nan")
    #: when resumed: ``{"from_epoch": k, "changed": {name: [saved, new]}}`` (see resume_changes)
    resumed: dict | None = None


def broadcast_parameters(model: nn.Module, comm: MPI.Comm) -> None:
    """Copy rank 0's parameters and buffers to every rank (on any device). Collective."""
    for tensor in list(real_parameters(model).values()) + list(model.buffers()):
        broadcast_(tensor, comm)


def allreduce_gradients(model: nn.Module, comm: MPI.Comm) -> None:
    """Sum the gradients of all trainable parameters across ranks, in place. Collective.

    A parameter without a gradient (a rank with no sample in this batch) contributes zeros.
    """
    if comm.size == 1:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [torch.view_as_real(p.grad) if p.is_complex() else p.grad for p in params]
    flat = allreduce_(torch.cat([g.reshape(-1) for g in grads]), comm)
    for g, values in zip(grads, torch.split(flat, [g.numel() for g in grads])):
        g.copy_(values.reshape(g.shape))


def evaluate_rel_l2(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, comm: MPI.Comm
) -> float:
    """Mean per-sample relative L2 error of ``model`` on the whole data (identical on every
    rank), rows split across ranks. Collective."""
    share = torch.from_numpy(np.array_split(np.arange(len(inputs)), comm.size)[comm.rank])
    return error_summary(model, inputs[share], targets[share], comm)["rel_l2"]


def train(
    model: nn.Module,
    train_data: tuple[torch.Tensor, torch.Tensor],
    test_data: tuple[torch.Tensor, torch.Tensor] | None,
    settings: TrainSettings,
    *,
    comm: MPI.Comm = MPI.COMM_WORLD,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    identity: dict | None = None,
    device: str = "cpu",
) -> TrainResult:
    """Train ``model`` on ``train_data = (inputs (n, ...), targets (n, n_points))``.

    Collective on ``comm``. Normalisers are fitted to the training data unless resuming.
    ``device`` (``cpu``, ``cuda``, ``cuda:N``; :func:`pinn_lsr.parallel.device.resolve_device`):
    where the model and the data live during training; the model is moved back to the CPU at
    the end (in place), and checkpoints hold CPU tensors.
    With ``checkpoint``, rank 0 writes it every ``settings.checkpoint_every`` epochs and at the
    end, with ``identity`` (the caller's record of what the data and model are for, kept as
    ``"identity"``); ``resume=True`` continues from it if it exists, with the settings it was
    written with (only those :func:`resume_changes` allows may differ).

    Raises:
        ValueError: mismatched lengths, NaN/Inf in the data, bad settings, settings that
            differ from those of the checkpoint resumed, or a device torch does not see.
    """
    inputs, targets = train_data
    _check_data(inputs, targets, "training")
    if test_data is not None:
        _check_data(*test_data, "test")
    if settings.loss not in LOSSES:
        raise ValueError(f"unknown loss {settings.loss!r}; choose one of {sorted(LOSSES)}")
    if settings.epochs < 0 or settings.batch_size < 1:
        raise ValueError(
            f"need epochs >= 0 and batch_size >= 1, got {settings.epochs}, {settings.batch_size}"
        )
    where = resolve_device(device, comm)
    model.to(where)
    inputs, targets = inputs.to(where), targets.to(where)
    if test_data is not None:
        test_data = (test_data[0].to(where), test_data[1].to(where))

    optimizer = make_optimizer(
        model.parameters(),
        settings.optimizer,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        momentum=settings.momentum,
        lbfgs_max_iter=settings.lbfgs_max_iter,
    )
    scheduler = make_scheduler(
        optimizer,
        settings.scheduler,
        epochs=settings.epochs,
        step_size=settings.step_size,
        gamma=settings.gamma,
        patience=settings.patience,
    )
    result = TrainResult()
    first_epoch = 0
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        state = read_checkpoint(checkpoint)
        changes = resume_changes(state, settings)
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler_state"])
        result.history = state["history"]
        result.counters = WorkCounters(**state["counters"])
        first_epoch = state["epoch"]
        result.resumed = {"from_epoch": first_epoch, "changed": changes}
        log.info(
            "resuming from %s after epoch %d%s",
            checkpoint,
            first_epoch,
            "".join(f"; {k} {old} -> {new}" for k, (old, new) in changes.items()),
        )
    else:
        model.input_normalizer.fit(inputs)
        model.output_normalizer.fit(targets)
        broadcast_parameters(model, comm)

    def save(epochs_done: int) -> None:
        if comm.rank == 0:
            save_checkpoint(
                checkpoint,
                {
                    "model_spec": getattr(model, "spec", None),
                    "model_state": model_state(model),
                    "optimizer_state": optimizer.state_dict(),
                    "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
                    "epoch": epochs_done,
                    "history": result.history,
                    "counters": asdict(result.counters),
                    "settings": asdict(settings),
                    "identity": identity,
                },
            )
        comm.Barrier()

    loss_fn = LOSSES[settings.loss]
    bar = tqdm(
        range(first_epoch, settings.epochs),
        desc="training",
        disable=not progress or comm.rank != 0,
        initial=first_epoch,
        total=settings.epochs,
        mininterval=1.0,
    )
    for epoch in bar:
        start = time.perf_counter()
        model.train()
        if settings.optimizer == "lbfgs":
            train_loss = _lbfgs_epoch(
                model, optimizer, loss_fn, inputs, targets, comm, result.counters
            )
        else:
            train_loss = _minibatch_epoch(
                model, optimizer, loss_fn, inputs, targets, comm, settings, epoch, result.counters
            )
        if scheduler is not None:
            scheduler.step(train_loss) if settings.scheduler == "plateau" else scheduler.step()
        model.eval()
        test_error = (
            evaluate_rel_l2(model, *test_data, comm) if test_data is not None else float("nan")
        )
        result.counters.forward_samples += len(test_data[0]) if test_data is not None else 0
        result.counters.epochs = epoch + 1
        result.counters.seconds += comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
        result.history.append(
            {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "test_rel_l2": test_error,
                "lr": optimizer.param_groups[0]["lr"],
            }
        )
        bar.set_postfix(loss=f"{train_loss:.3e}", test=f"{test_error:.3e}", refresh=False)
        if not np.isfinite(train_loss):
            raise FloatingPointError(
                f"training loss is {train_loss} at epoch {epoch + 1}; lower train.lr"
            )
        last = epoch + 1 == settings.epochs
        if checkpoint is not None and (
            last or (settings.checkpoint_every and (epoch + 1) % settings.checkpoint_every == 0)
        ):
            save(epoch + 1)
    if checkpoint is not None and settings.epochs == 0:  # the initial model (random features)
        save(0)

    model.eval()
    result.train_rel_l2 = evaluate_rel_l2(model, inputs, targets, comm)
    if test_data is not None:
        result.test_rel_l2 = evaluate_rel_l2(model, *test_data, comm)
    model.to("cpu")
    return result


def _minibatch_epoch(
    model, optimizer, loss_fn, inputs, targets, comm, settings, epoch, counters
) -> float:
    n = len(inputs)
    order = np.random.default_rng([settings.seed, epoch]).permutation(n)
    total = 0.0
    for start in range(0, n, settings.batch_size):
        batch = order[start : start + settings.batch_size]
        share = torch.from_numpy(np.array_split(batch, comm.size)[comm.rank])
        optimizer.zero_grad(set_to_none=False)
        if len(share):
            losses = loss_fn(model(inputs[share]), targets[share])
            (losses.sum() / len(batch)).backward()
            total += float(losses.detach().sum())
        allreduce_gradients(model, comm)
        optimizer.step()
        counters.optimizer_steps += 1
        counters.forward_samples += len(batch)
        counters.backward_samples += len(batch)
    return comm.allreduce(total, op=MPI.SUM) / n


def _lbfgs_epoch(model, optimizer, loss_fn, inputs, targets, comm, counters) -> float:
    n = len(inputs)
    share = torch.from_numpy(np.array_split(np.arange(n), comm.size)[comm.rank])

    def closure():
        optimizer.zero_grad(set_to_none=False)
        local = (
            loss_fn(model(inputs[share]), targets[share]).sum() / n
            if len(share)
            else torch.zeros((), requires_grad=True, device=inputs.device)
        )
        local.backward()
        allreduce_gradients(model, comm)
        counters.forward_samples += n
        counters.backward_samples += n
        return torch.tensor(comm.allreduce(float(local.detach()), op=MPI.SUM), dtype=inputs.dtype)

    optimizer.step(closure)
    counters.optimizer_steps += 1
    with torch.no_grad():
        return (
            comm.allreduce(float(loss_fn(model(inputs[share]), targets[share]).sum()), op=MPI.SUM)
            / n
        )


def _check_data(inputs: torch.Tensor, targets: torch.Tensor, what: str) -> None:
    if len(inputs) != len(targets):
        raise ValueError(
            f"{what} inputs and targets differ in length: {len(inputs)} vs {len(targets)}"
        )
    if len(inputs) == 0:
        raise ValueError(f"{what} data are empty")
    if not (torch.isfinite(inputs).all() and torch.isfinite(targets).all()):
        raise ValueError(f"{what} data contain NaN or infinite values")
