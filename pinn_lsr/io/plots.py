"""PNG figures of grid fields. Local: call on the writing rank only.

Figures are drawn on :class:`matplotlib.figure.Figure` objects, never through pyplot: no
backend is chosen and no global state is touched, at import or later.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pinn_lsr.io.atomic import atomic_path


def plot_fields(
    path: str | Path,
    columns: Sequence[tuple[str, np.ndarray]],
    *,
    sample_labels: Sequence[str] = (),
) -> None:
    """One row per sample, one column per named field; each field array is (n_samples, s, s), or
    (n_samples, c, s, s) for a vector field, drawn as its magnitude (title ``|name|``), or
    (n_samples, s) on a 1D grid, drawn as a curve over the periodic grid ``x_i = i / s``.

    ``field[k, i, j]`` is drawn at ``x = i``, ``y = j`` (origin lower left). Written atomically.
    """
    n_rows = len(columns[0][1])
    fig = Figure(figsize=(3.2 * len(columns), 2.8 * n_rows))
    axes = fig.subplots(n_rows, len(columns), squeeze=False)
    for col, (title, fields) in enumerate(columns):
        fields = np.asarray(fields)
        if fields.ndim == 4:
            fields = np.linalg.norm(fields, axis=1)
            title = title if title.startswith("|") else f"|{title}|"
        for row in range(n_rows):
            ax = axes[row, col]
            label = sample_labels[row] if row < len(sample_labels) else f"sample {row}"
            ax.set_title(f"{title}, {label}", fontsize=9)
            if fields.ndim == 2:
                ax.plot(np.arange(fields.shape[1]) / fields.shape[1], fields[row])
                ax.set_xlabel("x", fontsize=8)
                ax.grid(True, alpha=0.3)
                continue
            image = ax.imshow(
                np.asarray(fields[row]).T, origin="lower", extent=(0, 1, 0, 1), cmap="viridis"
            )
            fig.colorbar(image, ax=ax, fraction=0.046)
            ax.set_xticks([])
            ax.set_yticks([])
    _save(fig, path)


def plot_history(path: str | Path, history: Sequence[dict], *, title: str = "") -> None:
    """Training loss and test relative L2 error against epoch (log scale). Written atomically."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    ax.semilogy(epochs, [h["train_loss"] for h in history], label="training loss")
    test = [h["test_rel_l2"] for h in history]
    if np.isfinite(test).any():
        ax.semilogy(epochs, test, label="test relative L2")
    ax.set_xlabel("epoch")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    _save(fig, path)


def plot_rank_scan(
    path: str | Path, scan: Sequence[dict], *, chosen: int, suffix: str = "_rel_l2"
) -> None:
    """LSR errors against rank: training objective and every ``*{suffix}`` entry of the scan."""
    ranks = [e["rank"] for e in scan]
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    ax.loglog(
        ranks,
        [e["train_objective"] for e in scan],
        "o-",
        ms=3,
        label="training objective (linearized)",
    )
    for key in sorted(k for k in scan[0] if k.endswith(suffix) and k != "train_objective"):
        ax.loglog(ranks, [e[key] for e in scan], "o-", ms=3, label=key.replace("_", " "))
    ax.axvline(chosen, color="gray", ls=":", label=f"chosen rank {chosen}")
    ax.set_xlabel("rank r")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_stage_errors(path: str | Path, errors: dict[str, float]) -> None:
    """One horizontal bar per stage: its error (log scale), labelled with the value."""
    fig = Figure(figsize=(6.5, 0.5 * len(errors) + 1.2))
    ax = fig.subplots()
    names, values = list(errors), list(errors.values())
    ax.barh(range(len(values)), values, color="tab:blue")
    ax.set_xscale("log")
    ax.set_yticks(range(len(values)), names, fontsize=8)
    ax.invert_yaxis()
    for i, value in enumerate(values):
        ax.text(value, i, f" {value:.2e}", va="center", fontsize=8)
    ax.set_xlabel("relative L2 error against the FEM solution")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    _save(fig, path)


def plot_ilsr_history(
    path: str | Path,
    ilsr: Sequence[Sequence[dict]],
    baseline: Sequence[Sequence[dict]] = (),
    finished: Sequence[dict] = (),
) -> None:
    """Error against wall time per instance: I-LSR's refined fields (when each was ready) and
    updated network per outer iteration, the gradient baseline per step, and (``finished``:
    :func:`~pinn_lsr.physics.finetune_lsr.finetune_then_refine`'s summaries) the baseline's
    fine-tuning finished by physics LSR: its network when the fine-tuning ended and its field."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for k, history in enumerate(ilsr):
        refined = [h for h in history if "refined_rel_l2" in h]
        ax.semilogy(
            [h["refined_seconds"] for h in refined],
            [h["refined_rel_l2"] for h in refined],
            "o-",
            color=f"C{k}",
            label=f"I-LSR refined, instance {k}",
        )
        # the network's error is measured when an iteration starts, i.e. when the previous one ends
        starts = [0.0] + [h["seconds"] for h in history[:-1]]
        ax.semilogy(
            starts,
            [h["network_rel_l2"] for h in history],
            "s:",
            color=f"C{k}",
            ms=3,
            label=f"I-LSR network, instance {k}",
        )
    for k, history in enumerate(baseline):
        ax.semilogy(
            [h["seconds"] for h in history],
            [h["rel_l2"] for h in history],
            "-",
            color=f"C{k}",
            alpha=0.5,
            label=f"gradient baseline, instance {k}",
        )
    for k, summary in enumerate(finished):
        ax.semilogy(
            [summary["finetune_seconds"], summary["seconds"]],
            [summary["network_rel_l2"], summary["refined_rel_l2"]],
            "*--",
            color=f"C{k}",
            ms=9,
            label=f"gradient, then physics LSR (rank {summary['rank']}), instance {k}",
        )
    ax.set_xlabel("seconds")
    ax.set_ylabel("relative L2 error against the FEM solution")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_gnvpro_history(path: str | Path, history: Sequence[dict], *, title: str = "") -> None:
    """GNvpro's training loss (MSE) against work units (log scale), rejected steps marked.
    Written atomically."""
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    ax.semilogy(
        [h["work_units"] for h in history],
        [h["loss"] for h in history],
        "o-",
        ms=3,
        label="training loss (MSE)",
    )
    rejected = [h for h in history if h.get("accepted") is False]
    if rejected:
        ax.semilogy(
            [h["work_units"] for h in rejected],
            [h["loss"] for h in rejected],
            "x",
            color="tab:red",
            label="rejected step",
        )
    ax.set_xlabel("work units (1: a forward or backward pass over the data)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    _save(fig, path)


def plot_convergence(
    path: str | Path,
    panels: Sequence[tuple[str, Sequence[tuple[str, np.ndarray, np.ndarray, int, int]]]],
) -> None:
    """One log–log panel per (x label, lines), one above the other; each line is (legend label,
    x, y, colour index, style index): one colour per quantity, one marker and dash per group."""
    styles = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", (0, (5, 1)))]
    fig = Figure(figsize=(11, 4.2 * len(panels)))
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (xlabel, lines) in zip(axes, panels):
        for label, x, y, color, style in lines:
            marker, dash = styles[style % len(styles)]
            ax.loglog(x, y, marker=marker, ls=dash, ms=4, color=f"C{color % 10}", label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("error")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)


def _save(fig, path: str | Path) -> None:
    """Lay ``fig`` out and write it as PNG atomically."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
