"""PNG figures for evaluation reports: confusion matrices, occlusion curves, reliability
diagrams, training curves.

Matplotlib is imported inside each function, so importing this module is cheap. Figures
are drawn on matplotlib's Agg (raster) canvas through the object-oriented API: no pyplot
state is touched, the user's interactive backend is never switched, and no window opens.
Each figure is released after saving.

Accuracies are fractions in [0, 1] (as produced by :mod:`robustfer.engine.metrics`) and
are drawn as percentages.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robustfer.engine.metrics import MetricsError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Occluder names of the form ``block<coverage percent>``, e.g. ``block30``.
_BLOCK_RE = re.compile(r"^block[_-]?(\d+)$")


def _new_figure(width: float, height: float) -> Figure:
    """A figure attached to an Agg canvas, independent of pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as a PNG to ``path`` (creating parent folders), then release it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, format="png", bbox_inches="tight")
    finally:
        fig.clear()
    return out


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` when it is missing, ``None`` or NaN."""
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _check_fraction(name: str, value: float) -> float:
    """Raise unless ``value`` is an accuracy fraction in [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise MetricsError(
            f"accuracy for {name!r} is {value}; expected a fraction in [0, 1] "
            "(divide percentages by 100)."
        )
    return value


def plot_confusion(
    cm: Any,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    normalize: bool = True,
    title: str | None = None,
) -> Path:
    """Draw a confusion matrix as a heat map with the value written in each cell.

    Args:
        cm: square count matrix (rows = true class, columns = predicted), e.g. the
            ``"confusion"`` entry of :func:`~robustfer.engine.metrics.classification_metrics`.
        class_names: one name per class, in index order.
        path: PNG file to write.
        normalize: colour and label cells by the row-normalised percentage (per-class
            recall) with the count underneath; when ``False``, colour and label by count.
            Rows with no sample stay at 0 %.
        title: figure title; defaults to ``"Confusion matrix"``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        MetricsError: if ``cm`` is not square or does not match ``class_names``.
    """
    mat = np.asarray(cm, dtype=np.float64)
    k = len(class_names)
    if mat.ndim != 2 or mat.shape != (k, k):
        raise MetricsError(
            f"confusion matrix of shape {mat.shape} does not match {k} class names."
        )
    counts = mat.astype(np.int64)
    rows = mat.sum(axis=1, keepdims=True)
    share = np.divide(mat, rows, out=np.zeros_like(mat), where=rows > 0)
    shown = share if normalize else mat
    vmax = 1.0 if normalize else max(float(mat.max()), 1.0)

    size = max(4.0, 0.75 * k + 2.0)
    fig = _new_figure(size + 1.0, size)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=vmax)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if normalize:
        colorbar.set_label("share of true class (%)")
        colorbar.set_ticks(np.linspace(0.0, 1.0, 6))
        colorbar.set_ticklabels([f"{int(t)}" for t in np.linspace(0, 100, 6)])
    else:
        colorbar.set_label("samples")

    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(list(class_names), rotation=45, ha="right")
    ax.set_yticklabels(list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "Confusion matrix")

    font = 9 if k <= 8 else 7
    for i in range(k):
        for j in range(k):
            if normalize:
                text = f"{100.0 * share[i, j]:.1f}%\n({counts[i, j]})"
            else:
                text = str(counts[i, j])
            dark = shown[i, j] > 0.5 * vmax
            ax.text(
                j, i, text, ha="center", va="center", fontsize=font,
                color="white" if dark else "black",
            )
    return _save(fig, path)


def plot_reliability(bins: Sequence[Mapping[str, Any]], path: str | os.PathLike[str],
                     title: str | None = None) -> Path:
    """Reliability diagram: accuracy against mean confidence per confidence bin (bars, the
    diagonal is perfect calibration), with the share of samples per bin below.

    Args:
        bins: the ``bins`` of :func:`robustfer.data.calibration.reliability` (``lo``, ``hi``,
            ``count``, ``confidence``, ``accuracy``; empty bins have ``None``).
        path: PNG file to write.
        title: figure title.
    """
    fig = _new_figure(5.0, 5.5)
    grid = fig.add_gridspec(2, 1, height_ratios=[3, 1], hspace=0.08)
    ax = fig.add_subplot(grid[0, 0])
    hist = fig.add_subplot(grid[1, 0], sharex=ax)
    total = sum(int(b["count"]) for b in bins) or 1
    for b in bins:
        width = b["hi"] - b["lo"]
        if b["count"]:
            ax.bar(b["lo"], b["accuracy"], width=width, align="edge", color="#4c72b0", edgecolor="white")
            gap_lo, gap_hi = sorted((b["accuracy"], b["confidence"]))
            ax.bar(b["lo"], gap_hi - gap_lo, bottom=gap_lo, width=width, align="edge", color="#dd8452",
                   alpha=0.35, edgecolor="none")
        hist.bar(b["lo"], int(b["count"]) / total, width=width, align="edge", color="#7f7f7f", edgecolor="white")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title or "Reliability")
    ax.tick_params(labelbottom=False)
    hist.set_xlabel("confidence (top class)")
    hist.set_ylabel("share")
    return _save(fig, path)


def plot_occlusion_curve(
    results: Mapping[str, float | None],
    path: str | os.PathLike[str],
    clean_accuracy: float | None = None,
    title: str | None = None,
) -> Path:
    """Draw accuracy against occlusion: a curve over block sizes and bars for the rest.

    The left panel plots accuracy against block coverage: each ``block<P>`` entry
    (``block10`` ... ``block50``) is a point at ``P`` % coverage, joined by a line that
    starts at the clean accuracy at 0 %. The right panel, present only when there are
    other occluders (``eye_band``, ``lower_face``, ...), shows one labelled bar each, next
    to a clean-accuracy bar and reference line. Entries that are missing, ``None`` or NaN
    are left out; with nothing to draw the figure says so.

    Args:
        results: occluder name -> accuracy (fraction in [0, 1]). A ``"clean"`` entry is
            used as the clean accuracy when ``clean_accuracy`` is not given.
        path: PNG file to write.
        clean_accuracy: accuracy without occlusion, drawn at 0 % coverage.
        title: figure title; defaults to ``"Accuracy under occlusion"``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        MetricsError: if an accuracy lies outside [0, 1].
    """
    clean = _number(clean_accuracy)
    if clean is None:
        clean = _number(results.get("clean"))
    if clean is not None:
        _check_fraction("clean", clean)

    blocks: list[tuple[int, float]] = []
    others: list[tuple[str, float]] = []
    for name, value in results.items():
        acc = _number(value)
        if acc is None or name == "clean":
            continue
        _check_fraction(name, acc)
        match = _BLOCK_RE.match(name)
        if match:
            blocks.append((int(match.group(1)), acc))
        else:
            others.append((name, acc))
    blocks.sort()

    fig = _new_figure(9.0 if others else 6.0, 4.0)
    if others:
        grid = fig.add_gridspec(1, 2, width_ratios=[3, 2])
        ax = fig.add_subplot(grid[0, 0])
        bar_ax = fig.add_subplot(grid[0, 1], sharey=ax)
    else:
        ax = fig.add_subplot(1, 1, 1)
        bar_ax = None

    xs = ([0] if clean is not None else []) + [c for c, _ in blocks]
    ys = ([clean] if clean is not None else []) + [a for _, a in blocks]
    if xs:
        ax.plot(xs, [100.0 * y for y in ys], marker="o", color="tab:blue")
        for x, y in zip(xs, ys):
            ax.annotate(
                f"{100.0 * y:.1f}", (x, 100.0 * y), textcoords="offset points",
                xytext=(0, 6), ha="center", fontsize=8,
            )
        if clean is not None:
            ax.axhline(100.0 * clean, color="gray", linestyle=":", linewidth=1)
    else:
        ax.text(0.5, 0.5, "no block-occlusion results", transform=ax.transAxes,
                ha="center", va="center", color="gray")
    ticks = sorted(set(xs) | {0, 10, 20, 30, 40, 50})
    ax.set_xticks(ticks)
    ax.set_xlim(min(ticks) - 3, max(ticks) + 3)
    ax.set_ylim(0.0, 105.0)
    ax.set_xlabel("block coverage (% of face)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, alpha=0.3)

    if bar_ax is not None:
        labels = (["clean"] if clean is not None else []) + [n for n, _ in others]
        values = ([clean] if clean is not None else []) + [a for _, a in others]
        colors = (["gray"] if clean is not None else []) + ["tab:orange"] * len(others)
        positions = list(range(len(labels)))
        bars = bar_ax.bar(positions, [100.0 * v for v in values], color=colors)
        for bar, v in zip(bars, values):
            bar_ax.annotate(
                f"{100.0 * v:.1f}", (bar.get_x() + bar.get_width() / 2, 100.0 * v),
                textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8,
            )
        if clean is not None:
            bar_ax.axhline(100.0 * clean, color="gray", linestyle=":", linewidth=1)
        bar_ax.set_xticks(positions)
        bar_ax.set_xticklabels(labels, rotation=30, ha="right")
        bar_ax.set_title("other occluders", fontsize=10)
        bar_ax.grid(True, axis="y", alpha=0.3)
        bar_ax.tick_params(labelleft=False)

    fig.suptitle(title or "Accuracy under occlusion")
    return _save(fig, path)


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """Epochs and values of ``key`` over the history rows that have a finite value."""
    xs: list[float] = []
    ys: list[float] = []
    for index, row in enumerate(history):
        value = _number(row.get(key))
        if value is None:
            continue
        epoch = _number(row.get("epoch"))
        xs.append(float(index + 1) if epoch is None else epoch)
        ys.append(value)
    return xs, ys


def plot_training_curves(
    history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]
) -> Path:
    """Draw losses (left) and accuracies (right) over epochs.

    Args:
        history: one dict per epoch with any of ``epoch``, ``train_loss``, ``val_loss``,
            ``val_accuracy`` and ``train_accuracy`` (accuracies as fractions in [0, 1]).
            Missing, ``None`` or NaN values are skipped; a row without ``epoch`` is placed
            at its 1-based position in ``history``.
        path: PNG file to write.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    fig = _new_figure(10.0, 4.0)
    loss_ax = fig.add_subplot(1, 2, 1)
    acc_ax = fig.add_subplot(1, 2, 2)

    panels = (
        (loss_ax, (("train_loss", "train"), ("val_loss", "validation")), 1.0, "loss"),
        (
            acc_ax,
            (("train_accuracy", "train"), ("val_accuracy", "validation")),
            100.0,
            "accuracy (%)",
        ),
    )
    for ax, keys, scale, ylabel in panels:
        drawn = False
        for key, label in keys:
            xs, ys = _series(history, key)
            if xs:
                ax.plot(xs, [scale * y for y in ys], marker="o", markersize=3, label=label)
                drawn = True
        if drawn:
            ax.legend(loc="best", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes,
                    ha="center", va="center", color="gray")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    loss_ax.set_title("Loss")
    acc_ax.set_title("Accuracy")
    return _save(fig, path)


#: Columns every training run writes to ``metrics.csv`` (whatever the model), drawn by
#: ``robustfer plot`` when no ``--columns`` are given.
DEFAULT_HISTORY_COLUMNS: tuple[str, ...] = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")


def history_columns(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """The columns of ``history`` (other than ``epoch``) that have a finite value in some row."""
    return sorted(
        {k for row in history for k, v in row.items() if _number(v) is not None} - {"epoch"}
    )


def plot_history_columns(
    history: Sequence[Mapping[str, Any]], columns: Sequence[str], path: str | os.PathLike[str],
    title: str | None = None, ylabel: str = "value",
) -> Path:
    """Draw chosen ``metrics.csv`` columns over epochs, one line each.

    Every run logs ``epoch``, ``lr``, ``train_loss``, ``train_accuracy``, ``val_loss``,
    ``val_accuracy``, ``val_mean_class_accuracy``, ``val_macro_f1``, ``epoch_seconds`` and
    ``images_per_second``; ``robustfer plot`` draws the losses and accuracies among them
    (:data:`DEFAULT_HISTORY_COLUMNS`) unless told otherwise.
    Methods with several loss terms add ``train_<term>`` columns, e.g. PhaNet's scale
    weights ``train_c1..train_c3`` and task weights ``train_lambda_e`` / ``train_lambda_p``
    (the paper's Figs. 12, 13, 15). All columns share one y axis, so plot quantities of
    similar scale together.

    Raises:
        MetricsError: when ``columns`` is empty, or when a column has no value in
            ``history`` (the message names the missing columns and lists those the log has).
    """
    if not columns:
        raise MetricsError("plot_history_columns needs at least one column name.")
    have = history_columns(history)
    missing = [c for c in columns if c not in have]
    if missing:
        raise MetricsError(
            f"column(s) {', '.join(missing)} not in the log (or without values); "
            f"available columns: {', '.join(have) if have else '(none)'}."
        )
    fig = _new_figure(6.5, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for key in columns:
        xs, ys = _series(history, key)
        ax.plot(xs, ys, marker="o", markersize=3, label=key)
    ax.legend(loc="best", fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.set_title(title or ", ".join(columns))
    return _save(fig, path)


def plot_embedding(
    points: np.ndarray, groups: Sequence[int], names: Sequence[str], path: str | os.PathLike[str],
    title: str | None = None,
) -> Path:
    """Scatter 2-D points (e.g. a t-SNE of a model's features) coloured by group.

    ``groups`` holds an index into ``names`` per point, or -1 (drawn grey, "unknown").
    """
    pts = np.asarray(points, dtype=np.float64)
    g = np.asarray(groups)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) != len(g):
        raise MetricsError(f"plot_embedding needs (N, 2) points and N groups, got {pts.shape} and {len(g)}.")
    fig = _new_figure(6.5, 6.0)
    ax = fig.add_subplot(1, 1, 1)
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    if (g < 0).any():
        ax.scatter(pts[g < 0, 0], pts[g < 0, 1], s=4, c="lightgray", label="unknown")
    for i, name in enumerate(names):
        sel = g == i
        if sel.any():
            ax.scatter(pts[sel, 0], pts[sel, 1], s=4, color=cmap(i % 10), label=f"{name} ({int(sel.sum())})")
    ax.legend(loc="best", fontsize=7, markerscale=3)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "embedding")
    return _save(fig, path)
