"""Numbers a report shows, pulled out of metrics.jsonl and eval.json without trusting their shape.

New loss terms and new evaluation figures appear as the methods grow (``loss_cm``, ``caption_only``);
these helpers find them by shape (a number; a ``{mean, std, per_model}`` mapping) rather than by a
fixed list of names, so the report keeps up without edits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

NOT_CURVES = frozenset({"iteration", "seconds", "step", "epoch", "time", "timestamp"})


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def loss_terms(rows: list[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """Every numeric key except the step/time bookkeeping, as (iterations, values), in first-seen order."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for index, row in enumerate(rows):
        step = row.get("iteration")
        x = float(step) if is_number(step) else float(index + 1)
        for key, value in row.items():
            if key in NOT_CURVES or not is_number(value):
                continue
            xs, ys = curves.setdefault(key, ([], []))
            xs.append(x)
            ys.append(float(value))
    return curves


def distill_seconds(rows: list[dict[str, Any]]) -> float | None:
    """Wall time of the distillation loop as logged (the last row's running ``seconds``)."""
    times = [row["seconds"] for row in rows if is_number(row.get("seconds"))]
    return float(max(times)) if times else None


def eval_seconds(evaluation: dict[str, Any] | None) -> float | None:
    if not evaluation:
        return None
    for key in ("wall_seconds", "total_seconds", "seconds"):
        if is_number(evaluation.get(key)):
            return float(evaluation[key])
    return None


@dataclass
class Accuracy:
    """One accuracy figure: which model/input it is, and its mean ± std over independently trained models."""

    label: str
    mean: float
    std: float | None = None
    per_model: list[float] = field(default_factory=list)
    kind: str = "image"  # image | image+caption | caption-only | cross-arch


def as_accuracy(label: str, value: Any, kind: str) -> Accuracy | None:
    """``{mean, std, per_model}``, a bare number, or a list of per-model numbers; else None."""
    if is_number(value):
        return Accuracy(label, float(value), None, [], kind)
    if isinstance(value, list):
        per = [float(v) for v in value if is_number(v)]
        if not per:
            return None
        mean = sum(per) / len(per)
        return Accuracy(label, mean, math.sqrt(sum((v - mean) ** 2 for v in per) / len(per)), per, kind)
    if isinstance(value, dict):
        per = [float(v) for v in value.get("per_model", []) or [] if is_number(v)]
        mean = value.get("mean")
        if not is_number(mean):
            return as_accuracy(label, per, kind) if per else None
        std = value.get("std")
        return Accuracy(label, float(mean), float(std) if is_number(std) else None, per, kind)
    return None


def accuracy_rows(evaluation: dict[str, Any] | None) -> list[Accuracy]:
    """The evaluation model, the cross-architecture models, and the caption-aware figures, in that order."""
    if not evaluation:
        return []
    model = str(evaluation.get("model") or "convnet3")
    candidates: list[tuple[str, Any, str]] = [(f"{model} (image only)", evaluation.get("accuracy"), "image")]
    cross = evaluation.get("cross_arch")
    if isinstance(cross, dict):
        candidates += [(f"{name} (cross-arch)", value, "cross-arch") for name, value in cross.items()]
    candidates.append((f"{model} (image + caption)", evaluation.get("accuracy_image_caption"), "image+caption"))
    candidates.append(("caption-only baseline", evaluation.get("caption_only"), "caption-only"))
    rows = [as_accuracy(label, value, kind) for label, value, kind in candidates]
    return [r for r in rows if r is not None]


def headline(evaluation: dict[str, Any] | None, kind: str = "image") -> Accuracy | None:
    """The first figure of ``kind`` (the main model's image-only accuracy by default)."""
    return next((r for r in accuracy_rows(evaluation) if r.kind == kind), None)


def percent(acc: Accuracy | None) -> str:
    if acc is None:
        return "–"
    text = f"{100 * acc.mean:.2f}"
    return f"{text} ± {100 * acc.std:.2f} %" if acc.std is not None else f"{text} %"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
