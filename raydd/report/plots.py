"""The report's matplotlib figures, each returned as PNG bytes (the caller decides where they go)."""

from __future__ import annotations

import math
from typing import Any, Sequence

from raydd.figures import png_bytes, subplots
from raydd.report.summaries import Accuracy, is_number

COLOURS = {"image": "#2f5fb3", "cross-arch": "#7a4fb3", "image+caption": "#1f8a4c", "caption-only": "#b36b2f"}


def figure_png(fig, dpi: int = 110) -> bytes:
    return png_bytes(fig, dpi=dpi)


def _wants_log(values: Sequence[float]) -> bool:
    """Log axis when every value is positive and they span more than two decades."""
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and len(values) > 1 and max(positive) / min(positive) >= 100


def loss_curves_png(curves: dict[str, tuple[list[float], list[float]]]) -> bytes:
    """One small panel per loss term: terms live on different scales, so they do not share a y axis."""
    names = list(curves)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = subplots(rows, cols, figsize=(4.0 * cols, 2.7 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        xs, ys = curves[name]
        ax.plot(xs, ys, color="#2f5fb3", linewidth=1.3, marker="o" if len(xs) <= 30 else None, markersize=3)
        if _wants_log(ys):
            ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("iteration", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


def accuracy_png(rows: list[Accuracy]) -> bytes:
    """Mean ± std per model as a dot with an error bar; each trained network as a faint dot behind it."""
    fig, ax = subplots(figsize=(6.5, 0.5 * len(rows) + 1.1))
    positions = list(range(len(rows)))[::-1]
    values: list[float] = []
    for y, row in zip(positions, rows):
        colour = COLOURS.get(row.kind, "#444444")
        per = [100 * v for v in row.per_model]
        # clip_on=False: a perfect 100 % sits on the frame instead of vanishing behind it
        ax.scatter(per, [y] * len(per), s=14, color=colour, alpha=0.35, zorder=2, clip_on=False)
        ax.errorbar([100 * row.mean], [y], xerr=[[100 * (row.std or 0)]] * 2 if row.std else None, fmt="o",
                    color=colour, capsize=4, markersize=7, zorder=3, clip_on=False)
        values += [100 * row.mean, *per]
    ax.set_yticks(positions, [r.label for r in rows], fontsize=9)
    low, high = min(values), max(values)
    pad = max(2.0, 0.15 * (high - low))
    ax.set_xlim(max(0.0, low - pad), min(100.0, high + pad))
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("test accuracy (%)", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


def _axis_values(values: list[Any]) -> tuple[list[float], list[str] | None]:
    """Numbers stay numbers; anything else (``real``/``noise``, booleans) becomes evenly spaced categories."""
    if all(is_number(v) for v in values):
        return [float(v) for v in values], None
    categories = sorted({str(v) for v in values})
    return [float(categories.index(str(v))) for v in values], categories


def objective_scatter_png(params: list[str], trials: list[dict[str, Any]], metric: str,
                          best_index: int | None, log_params: frozenset[str] = frozenset()) -> bytes:
    """Objective against each searched parameter; the best trial is a star, stopped trials are hollow.

    ``log_params`` were searched on a log scale and are drawn on one (others: when they span 2 decades).
    """
    cols = min(3, max(1, len(params)))
    rows = math.ceil(max(1, len(params)) / cols)
    fig, axes = subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(params):]:
        ax.set_visible(False)
    scored = [(i, t) for i, t in enumerate(trials) if is_number(t.get(metric))]
    for ax, name in zip(axes.flat, params):
        usable = [(i, t) for i, t in scored if t.get("params", {}).get(name) is not None]
        if not usable:
            ax.set_title(f"{name} (no scored trial)", fontsize=9)
            continue
        xs, categories = _axis_values([t["params"][name] for _, t in usable])
        ys = [100 * float(t[metric]) for _, t in usable]
        done = [j for j, (_, t) in enumerate(usable) if t.get("status") in (None, "completed")]
        early = [j for j in range(len(usable)) if j not in done]
        ax.scatter([xs[j] for j in done], [ys[j] for j in done], s=28, color="#2f5fb3", label="completed")
        ax.scatter([xs[j] for j in early], [ys[j] for j in early], s=28, facecolors="none", edgecolors="#2f5fb3",
                   label="stopped early")
        best = [j for j, (i, _) in enumerate(usable) if i == best_index]
        if best:
            ax.scatter([xs[best[0]]], [ys[best[0]]], s=170, marker="*", color="#d4a017", edgecolors="black",
                       linewidths=0.6, zorder=4, label="best")
        if categories is not None:
            ax.set_xticks(range(len(categories)), categories, fontsize=8)
            ax.set_xlim(-0.5, len(categories) - 0.5)
        elif name in log_params or _wants_log(xs):
            ax.set_xscale("log")
        ax.margins(x=0.08, y=0.15)  # room for the star at the edges
        ax.set_xlabel(name, fontsize=9)
        ax.set_ylabel(f"{metric} (%)", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        axes.flat[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return figure_png(fig)
