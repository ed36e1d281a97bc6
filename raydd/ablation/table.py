"""The ablation table: each row against base, over distillation seeds.

A row's accuracy is the mean over seeds of each seed's mean over its evaluation models, ± the sample
standard deviation over seeds. The difference to base is paired by seed (real init draws the same real
images for every row of a seed, so pairing removes that part of the variance), ± its standard error
over seeds. With one seed the spreads fall back to the evaluation models, which understate run-to-run
variance, and the row says so instead of reading the difference. A difference reads as a gain or a
loss only when the 95 % t-interval of the paired differences leaves out zero: with three seeds that
takes more than 4.3 standard errors.
"""

from __future__ import annotations

import math

import numpy as np

from raydd.ablation.records import AblationRecord, Figure

HEADER = ["| dataset | method | row | seeds | accuracy % | Δ vs base | reads as | image+caption % | n |",
          "|---|---|---|---|---|---|---|---|---|"]


def _per_seed(records: list[AblationRecord], field: str) -> dict[int, Figure]:
    return {r.seed: getattr(r, field) for r in records if getattr(r, field)}


def _spread(figures: dict[int, Figure]) -> tuple[float, float, int]:
    """(mean %, std %, models) over seeds; over evaluation models when there is one seed."""
    means = np.array([f.mean for f in figures.values()]) * 100
    models = sum(f.models or len(f.per_model or []) for f in figures.values())
    if len(means) >= 2:
        return float(means.mean()), float(means.std(ddof=1)), models
    per_model = next(iter(figures.values())).per_model
    std = float((np.array(per_model) * 100).std()) if per_model else math.nan
    return float(means[0]), std, models


def paired_difference(row: dict[int, Figure], base: dict[int, Figure]) -> tuple[float, float, int]:
    """(Δ %, its standard error, paired seeds): row minus base over the seeds both have."""
    seeds = sorted(set(row) & set(base))
    if not seeds:
        return math.nan, math.nan, 0
    diffs = np.array([row[s].mean - base[s].mean for s in seeds]) * 100
    if len(seeds) >= 2:
        return float(diffs.mean()), float(diffs.std(ddof=1) / math.sqrt(len(seeds))), len(seeds)
    _, row_std, row_n = _spread({seeds[0]: row[seeds[0]]})
    _, base_std, base_n = _spread({seeds[0]: base[seeds[0]]})
    return float(diffs[0]), math.sqrt(row_std**2 / max(1, row_n) + base_std**2 / max(1, base_n)), 1


# Two-sided 95 % quantiles of Student's t for 1..10 degrees of freedom; beyond, a Cornish-Fisher
# expansion around the normal quantile (within 0.001 of the exact value from 11 on).
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def t95(df: int) -> float:
    if df <= len(T95):
        return T95[df - 1]
    z = 1.959964
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


def reading(delta: float, se: float, paired: int) -> str:
    """Gain or loss only when the 95 % t-interval of ≥ 2 paired seeds leaves out zero."""
    if paired == 0:
        return "no base seed"
    if paired == 1:
        return "one seed"
    if abs(delta) > t95(paired - 1) * se:
        return "gain" if delta > 0 else "loss"
    return "within noise"


def ablation_table(records: list[AblationRecord]) -> str:
    """Markdown, one line per (dataset, method, row), rows in the order they were run."""
    lines = list(HEADER)
    groups: dict[tuple[str, str], dict[str, list[AblationRecord]]] = {}
    for r in records:
        groups.setdefault((r.dataset, r.method), {}).setdefault(r.row, []).append(r)
    for (dataset, method), rows in sorted(groups.items()):
        base = _per_seed(rows.get("base", []), "accuracy")
        for row, items in rows.items():
            accuracy = _per_seed(items, "accuracy")
            mean, std, n = _spread(accuracy)
            if row == "base":
                delta_text, read = "—", "—"
            else:
                delta, se, paired = paired_difference(accuracy, base)
                delta_text = "—" if paired == 0 else f"{delta:+.2f} ± {se:.2f}"
                read = reading(delta, se, paired)
            fused = _per_seed(items, "image_caption")
            fused_text = "—"
            if fused:
                fused_mean, fused_std, _ = _spread(fused)
                fused_text = f"{fused_mean:.2f} ± {fused_std:.2f}"
            lines.append(f"| {dataset} | {method} | {row} | {len(accuracy)} | {mean:.2f} ± {std:.2f} | {delta_text} "
                         f"| {read} | {fused_text} | {n} |")
    return "\n".join(lines)
