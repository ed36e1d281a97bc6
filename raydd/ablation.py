"""The ablation: base method, each enhancement alone, and all together, under one protocol.

Each (dataset, method, row, seed) is its own run directory under the work directory; finished runs are
reused, so an ablation can be stopped and continued. The table reports mean ± std over seeds x
evaluation models and the difference to the base row with its standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from raydd.config import available_recipes, build_config, recipe_dict
from raydd.distill import run_distillation
from raydd.errors import ConfigError
from raydd.rundir import RunDir
from raydd.workflows import evaluate_run

CAPTION_ROWS = {"+cc": {"cc": True}, "+cm": {"cm": True}}
MASK_ROWS = {"dm": {"+mfa": {"mfa": True}}, "dsa": {"+mgm": {"mgm": True}}, "dc": {"+mgm": {"mgm": True}}}
INIT_ROW = {"+mask_init": {"mask_init": True}}


def rows_for(method: str, has_captions: bool) -> dict[str, dict[str, bool]]:
    """Row name -> mm switches. Datasets without captions get the mask rows only."""
    rows: dict[str, dict[str, bool]] = {"base": {}}
    if has_captions:
        rows.update(CAPTION_ROWS)
    rows.update(MASK_ROWS[method])
    rows.update(INIT_ROW)
    combined: dict[str, bool] = {}
    for switches in list(rows.values())[1:]:
        combined.update(switches)
    rows["+all"] = combined
    recipe = f"{method}+mm"
    if has_captions and recipe in available_recipes():
        rows[recipe] = dict(recipe_dict(recipe).get("mm", {}))  # the shipped recipe, under the same protocol
    return rows


def sets_for(sets: list[str] | None, method: str, methods: list[str]) -> list[str]:
    """The ``--set`` items that apply to one method's rows: plain ``key=value`` items, and
    ``METHOD:key=value`` items of that method (so one command can give DM and DSA different budgets)."""
    chosen = []
    for item in sets or []:
        prefix, scoped, rest = item.partition(":")
        if not scoped or "=" in prefix:  # plain (a value may itself contain ':')
            chosen.append(item)
            continue
        if prefix not in methods:
            raise ConfigError(f"--set {item!r}: {prefix!r} is not one of the ablation's methods "
                              f"({', '.join(methods)})")
        if prefix == method:
            chosen.append(rest)
    return chosen


@dataclass
class AblationSpec:
    datasets: list[str]
    methods: list[str]
    ipc: int
    seeds: list[int]
    preset: str = "quick"
    sets: list[str] | None = None  # key=value for every row, METHOD:key=value for that method's rows
    rows: list[str] | None = None  # only these rows (e.g. base, dm+mm); None: every row


def run_ablation(spec: AblationSpec, work_dir: str, *, runner: Callable | None = None,
                 log: Callable[[str], None] = print, table_only: bool = False) -> list[dict[str, Any]]:
    """Run every missing (row, seed) and collect all; ``table_only`` collects the finished ones only."""
    known = list(dict.fromkeys(row for method in spec.methods for row in rows_for(method, True)))
    unknown = [row for row in spec.rows or [] if row not in known]
    if unknown:
        raise ConfigError(f"unknown ablation row(s) {', '.join(unknown)}; rows: {', '.join(known)}")
    per_method = {method: sets_for(spec.sets, method, spec.methods) for method in spec.methods}
    results = []
    for dataset in spec.datasets:
        has_captions = dataset.startswith("cluttered") or dataset.startswith("parquet:") or "/" in dataset
        for method in spec.methods:
            for row, switches in rows_for(method, has_captions).items():
                if spec.rows is not None and row not in spec.rows:
                    continue
                for seed in spec.seeds:
                    name = f"{Path(dataset.rstrip('/')).name}-{method}-{row.strip('+')}-ipc{spec.ipc}-seed{seed}"
                    out = Path(work_dir) / name
                    run = RunDir(str(out))
                    if table_only and not run.has("eval.json"):
                        continue
                    if not run.has("eval.json"):
                        overrides = {"seed": seed, "data": {"name": dataset},
                                     "distill": {"method": method, "ipc": spec.ipc}, "mm": dict(switches)}
                        cfg = build_config(spec.preset, overrides=overrides, sets=per_method[method])
                        run_distillation(cfg, str(out), resume=run.has("config.yaml"), show_progress=False)
                        evaluate_run(str(out), cfg, runner=runner, show_progress=False)
                    ev = run.read_json("eval.json")
                    log(f"{dataset} {method} {row} seed {seed}: {100 * ev['accuracy']['mean']:.2f}")
                    results.append({"dataset": dataset, "method": method, "row": row, "seed": seed, "eval": ev})
    return results


def _stats(values: list[float]) -> tuple[float, float, int]:
    arr = np.array(values) * 100
    return float(arr.mean()), float(arr.std()), len(arr)


def ablation_table(results: list[dict[str, Any]]) -> str:
    """Markdown: image-only accuracy (and image+caption where present), difference to base ± its s.e."""
    lines = ["| dataset | method | row | accuracy % | Δ vs base | image+caption % | n |", "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["dataset"], r["method"]) for r in results})
    for dataset, method in keys:
        group = [r for r in results if r["dataset"] == dataset and r["method"] == method]
        per_row: dict[str, list[float]] = {}
        fused: dict[str, list[float]] = {}
        for r in group:
            per_row.setdefault(r["row"], []).extend(r["eval"]["accuracy"]["per_model"])
            if r["eval"].get("accuracy_image_caption"):
                fused.setdefault(r["row"], []).extend(r["eval"]["accuracy_image_caption"]["per_model"])
        base_mean, base_std, base_n = _stats(per_row.get("base", [float("nan")]))
        for row, values in per_row.items():
            mean, std, n = _stats(values)
            if row == "base":
                delta = "—"
            else:
                se = math.sqrt(std**2 / n + base_std**2 / base_n)
                delta = f"{mean - base_mean:+.2f} ± {se:.2f}"
            fused_text = "—"
            if row in fused:
                fm, fs, _ = _stats(fused[row])
                fused_text = f"{fm:.2f} ± {fs:.2f}"
            lines.append(f"| {dataset} | {method} | {row} | {mean:.2f} ± {std:.2f} | {delta} | {fused_text} | {n} |")
    return "\n".join(lines)
