"""The ablation table: each row against base, over distillation seeds.

A row's accuracy is the mean over seeds of each seed's mean over its evaluation models, ± the sample
standard deviation over seeds. The difference to base is paired by seed (real init draws the same real
images for every row of a seed, so pairing removes that part of the variance), ± its standard error
over seeds. With one seed the spreads fall back to the evaluation models, which understate run-to-run
variance, and the row says so instead of reading the difference. Each row's difference gets the p of
a paired t-test over seeds; it reads as a gain or a loss only when it stands under Holm's correction
over all the rows compared with the same base, so that a table of six rows does not find a gain by
chance one time in four. With three seeds and one row that takes more than 4.3 standard errors, with
six rows more than 10.9 for the smallest p.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from raydd.ablation.records import AblationRecord, Figure

HEADER = ["| dataset | method | row | seeds | accuracy % | Δ vs base | p | reads as | image+caption % | n |",
          "|---|---|---|---|---|---|---|---|---|---|"]
ALPHA = 0.05


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


def p_value(delta: float, se: float, paired: int) -> float:
    """Two-sided p of the paired t-test over ``paired`` seeds (nan below two seeds)."""
    if paired < 2 or math.isnan(delta):
        return math.nan
    if se == 0:
        return 0.0 if delta != 0 else 1.0
    return float(2 * stats.t.sf(abs(delta) / se, paired - 1))


def holm(p_values: dict[str, float], alpha: float = ALPHA) -> set[str]:
    """The rows whose difference stands under Holm's step-down correction over the rows tested together.

    Holm keeps the chance of reading any difference into a set of rows that has none at ``alpha``, as
    Bonferroni does, and is never less sensitive than it.
    """
    tested = sorted((p, row) for row, p in p_values.items() if not math.isnan(p))
    standing = set()
    for i, (p, row) in enumerate(tested):
        if p > alpha / (len(tested) - i):
            break
        standing.add(row)
    return standing


def reading(delta: float, paired: int, stands: bool) -> str:
    """Gain or loss only when the difference stands after the correction; none below two seeds."""
    if paired == 0:
        return "no base seed"
    if paired == 1:
        return "one seed"
    if stands:
        return "gain" if delta > 0 else "loss"
    return "within noise"


def ablation_table(records: list[AblationRecord]) -> str:
    """Markdown, one line per (dataset, method, row), rows in the order they were run."""
    lines = list(HEADER)
    groups: dict[tuple[str, str], dict[str, list[AblationRecord]]] = {}
    for r in records:
        groups.setdefault((r.dataset, r.method), {}).setdefault(r.row, []).append(r)
    tested = 0
    for (dataset, method), rows in sorted(groups.items()):
        base = _per_seed(rows.get("base", []), "accuracy")
        differences = {row: paired_difference(_per_seed(items, "accuracy"), base)
                       for row, items in rows.items() if row != "base"}
        p_values = {row: p_value(*difference) for row, difference in differences.items()}
        tested = max(tested, sum(not math.isnan(p) for p in p_values.values()))
        standing = holm(p_values)
        for row, items in rows.items():
            accuracy = _per_seed(items, "accuracy")
            mean, std, n = _spread(accuracy)
            if row == "base":
                delta_text, p_text, read = "—", "—", "—"
            else:
                delta, se, paired = differences[row]
                delta_text = "—" if paired == 0 else f"{delta:+.2f} ± {se:.2f}"
                p_text = "—" if math.isnan(p_values[row]) else f"{p_values[row]:.3f}"
                read = reading(delta, paired, row in standing)
            fused = _per_seed(items, "image_caption")
            fused_text = "—"
            if fused:
                fused_mean, fused_std, _ = _spread(fused)
                fused_text = f"{fused_mean:.2f} ± {fused_std:.2f}"
            lines.append(f"| {dataset} | {method} | {row} | {len(accuracy)} | {mean:.2f} ± {std:.2f} | {delta_text} "
                         f"| {p_text} | {read} | {fused_text} | {n} |")
    if tested:
        lines += ["", f"p: paired t-test over seeds, uncorrected. Reads as: Holm's correction over the rows tested "
                      f"against base in each dataset and method (up to {tested} here), family-wise 5 %."]
    return "\n".join(lines)
