"""PNG figures for reports: a confusion matrix and learning curves over seeds.

Built with the object-oriented `matplotlib.figure.Figure` API: it needs no GUI backend and is
never registered with pyplot, so a figure is freed once its bytes are written (services render
many figures over their lifetime without memory growth).
"""

from __future__ import annotations

import io
import math
from typing import Callable, Sequence

import msgspec
import numpy as np
from matplotlib.figure import Figure

from shared.registry.records import Evaluation

DPI = 100  # pixels per inch: figure sizes below are in inches
ANNOTATE_MAX_CLASSES = 20  # beyond this, numbers in the cells are unreadable
TICK_LABELS_MAX_CLASSES = 40  # beyond this, class names on the axes overlap
CURVES_SIZE = (11.0, 4.2)  # inches, two side-by-side panels
TRAIN_COLOR, VAL_COLOR = "tab:blue", "tab:orange"


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def confusion_matrix_size(n_classes: int) -> tuple[float, float]:
    """Figure size in inches: grows with the class count so cells stay legible, within 4 to 16."""
    side = min(max(0.5 * n_classes + 2.5, 4.0), 16.0)
    return side + 1.0, side  # the extra width holds the colour bar


def confusion_matrix_png(matrix: Sequence[Sequence[float]], class_names: Sequence[str], *,
                         normalized: bool = False, title: str = "") -> bytes:
    """A heat map of a (C, C) matrix, rows = true class; cells annotated up to 20 classes."""
    cm = np.asarray(matrix, dtype=np.float64)
    n = len(class_names)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix of shape {cm.shape} for {n} class names; expected ({n}, {n})")
    fig = Figure(figsize=confusion_matrix_size(n), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(cm, cmap="Blues", vmin=0.0, vmax=1.0 if normalized else max(float(cm.max()), 1.0))
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalized else "confusion matrix"))
    if n <= TICK_LABELS_MAX_CLASSES:
        ax.set_xticks(range(n), [str(c) for c in class_names], rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(n), [str(c) for c in class_names])
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if n <= ANNOTATE_MAX_CLASSES:
        threshold = image.norm.vmax / 2  # white text on dark cells
        for (t, p), value in np.ndenumerate(cm):
            text = f"{value:.2f}" if normalized else f"{int(round(value))}"
            ax.text(p, t, text, ha="center", va="center", fontsize=8,
                    color="white" if value > threshold else "black")
    return _png(fig)


def _series(curve: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Epochs and values of one key; absent or non-finite values are dropped so lines stay drawable."""
    points = [(int(e["epoch"]), float(e[key])) for e in curve
              if e.get(key) is not None and math.isfinite(float(e[key]))]
    return [p[0] for p in points], [p[1] for p in points]


def _mean_series(curves: list[list[dict]], key: str) -> tuple[list[int], list[float]]:
    """Mean over the seeds that reached each epoch (seeds may stop at different epochs)."""
    by_epoch: dict[int, list[float]] = {}
    for curve in curves:
        for epoch, value in zip(*_series(curve, key)):
            by_epoch.setdefault(epoch, []).append(value)
    epochs = sorted(by_epoch)
    return epochs, [float(np.mean(by_epoch[e])) for e in epochs]


def learning_curves_png(curves: list[list[dict]], *, title: str = "") -> bytes:
    """Loss and accuracy against epoch, train and validation, one thin line per seed and the
    mean across seeds in bold when there are several."""
    fig = Figure(figsize=CURVES_SIZE, layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    several = len(curves) > 1
    for ax, quantity in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        drawn = False
        for split, color in (("train", TRAIN_COLOR), ("val", VAL_COLOR)):
            key = f"{split}_{quantity}"
            for i, curve in enumerate(curves):
                epochs, values = _series(curve, key)
                if epochs:
                    ax.plot(epochs, values, color=color, linewidth=0.8 if several else 1.6,
                            alpha=0.35 if several else 1.0, label=None if several or i else split)
                    drawn = True
            if several:
                epochs, values = _mean_series(curves, key)
                if epochs:
                    ax.plot(epochs, values, color=color, linewidth=2.5, label=f"{split} (mean of {len(curves)} seeds)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(quantity)
        ax.set_title(quantity)
        if drawn:
            ax.legend()
        else:
            ax.text(0.5, 0.5, f"no {quantity} recorded", ha="center", va="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title)
    return _png(fig)


def seeds_label(seeds: Sequence[str | int]) -> str:
    """Which seeds a figure shows, for its title: a plot of one seed must say which."""
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"


def evaluation_plots(evaluation: Evaluation, class_names: Sequence[str], title: str) -> dict[str, Callable[[], bytes]]:
    """The plots of an evaluation, by file name, each drawn when called: the best seed's confusion
    matrix and every seed's learning curves, each title saying which seeds it shows."""
    final, best = evaluation.final, evaluation.best_seed
    drawn = {seed: curve for seed, curve in evaluation.learning_curves.items() if curve}
    curves = [[msgspec.to_builtins(e) for e in curve] for curve in drawn.values()]
    which = seeds_label(list(drawn))
    wanted: dict[str, Callable[[], bytes]] = {}
    if final is not None and final.confusion_matrix:
        names = [row.class_name for row in final.per_class] or list(class_names) or [
            str(i) for i in range(len(final.confusion_matrix))]
        wanted["confusion_matrix.png"] = lambda: confusion_matrix_png(final.confusion_matrix or [], names,
                                                                      title=f"{title}, {seeds_label([best])} (the best)")
    if curves:
        wanted["learning_curves.png"] = lambda: learning_curves_png(curves, title=f"{title}, {which}")
    return wanted


def accuracy_vs_compute_png(points: Sequence[tuple[int, float, float]], *, metric: str, axis: str,
                            title: str = "") -> bytes:
    """Each candidate's mean validation `metric` against its measured compute (`axis`: "CPU
    seconds" or "GPU seconds", every rung's seeds), labelled with its iteration: (iteration,
    seconds, score) points."""
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    if points:
        ax.scatter([p[1] for p in points], [p[2] for p in points], color=VAL_COLOR)
        for iteration, seconds, value in points:
            ax.annotate(f"#{iteration}", (seconds, value), textcoords="offset points", xytext=(4, 4), fontsize=8)
    else:
        ax.text(0.5, 0.5, "no candidate with measured compute", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"{axis} (all its seeds and rungs)")
    ax.set_ylabel(f"mean {metric} over seeds")
    ax.set_title(title or f"{metric} against compute")
    return _png(fig)


def score_over_time_png(points: Sequence[tuple[int, float, float, bool]], *, metric: str, lower: bool = False,
                        title: str = "") -> bytes:
    """Each measured candidate's mean `metric` against the minutes into the run it was measured
    at, (iteration, minutes, score, at the full budget) points, and the best at the full budget
    so far as a step line: how the search improved over time."""
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    full = [p for p in points if p[3]]
    cheap = [p for p in points if not p[3]]
    if cheap:
        ax.scatter([p[1] for p in cheap], [p[2] for p in cheap], color="lightgray", edgecolors="gray",
                   label="a cheap rung (fewer epochs or seeds)")
    if full:
        ax.scatter([p[1] for p in full], [p[2] for p in full], color=VAL_COLOR, label="full budget")
        ordered, best, xs, ys = sorted(full, key=lambda p: p[1]), None, [], []
        for _, minutes, value, _ in ordered:
            best = value if best is None or (value < best if lower else value > best) else best
            xs.append(minutes)
            ys.append(best)
        ax.step(xs, ys, where="post", color=TRAIN_COLOR, linewidth=2, label="best so far")
    for iteration, minutes, value, _ in points:
        ax.annotate(f"#{iteration}", (minutes, value), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if points:
        ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no candidate measured yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("minutes into the run")
    ax.set_ylabel(f"mean {metric} over seeds")
    ax.set_title(title or f"{metric} over time")
    return _png(fig)
