"""The tune report: how the validation objective moved with each searched setting, and which trial won.

Reads a search directory's trials.json (the summary object ``{"metric", "best", "trials": [...]}``, or
a bare list of trials) and best.yaml. Every figure here is on the *validation* split: the search never
sees test data, so nothing on this page is a final accuracy.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from raydd.artifacts import BEST, SEARCH, TRIALS
from raydd.errors import RunDirError
from raydd.report import markup as h
from raydd.report.plots import objective_scatter_png
from raydd.report.run_page import Rendered
from raydd.report.summaries import is_number
from raydd.storage import exists, read_text

DEFAULT_METRIC = "val_accuracy"


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"distill": {"lr_img": 1}}`` -> ``{"distill.lr_img": 1}`` (how trials name their params)."""
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return out


def read_search(tune_dir: str) -> tuple[dict[str, Any], list[dict[str, Any]], str | None, dict[str, Any]]:
    """(summary, trials, best.yaml text, best.yaml values flattened) of a search directory."""
    tune_dir = tune_dir.rstrip("/")
    path = f"{tune_dir}/{TRIALS}"
    if not exists(path):
        raise RunDirError(f"{tune_dir}: not a tune output directory ({TRIALS} is missing)")
    try:
        data = json.loads(read_text(path))
    except ValueError as exc:
        raise RunDirError(f"{path}: not valid JSON ({exc})") from None
    summary = data if isinstance(data, dict) else {}
    raw = data.get("trials", []) if isinstance(data, dict) else data
    trials = [t for t in raw if isinstance(t, dict)] if isinstance(raw, list) else []
    for t in trials:
        if not isinstance(t.get("params"), dict):
            t["params"] = {}
    best_text = read_text(f"{tune_dir}/{BEST}") if exists(f"{tune_dir}/{BEST}") else None
    best_values: dict[str, Any] = {}
    if best_text is not None:
        try:
            best_values = _flatten(yaml.safe_load(best_text) or {})
        except yaml.YAMLError:
            best_values = {}
    return summary, trials, best_text, best_values


def search_settings(tune_dir: str) -> dict[str, Any]:
    """The search's saved settings (search.json), or {} where there are none or they do not parse."""
    path = f"{tune_dir.rstrip('/')}/{SEARCH}"
    try:
        data = json.loads(read_text(path)) if exists(path) else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def log_scaled(settings: dict[str, Any]) -> frozenset[str]:
    """Parameters the search sampled log-uniformly (search.json's space), to plot them on a log axis."""
    space = settings.get("space")
    if not isinstance(space, dict):
        return frozenset()
    return frozenset(k for k, spec in space.items() if isinstance(spec, dict) and "loguniform" in spec)


def searcher_text(settings: dict[str, Any], summary: dict[str, Any]) -> str | None:
    """Which searcher picked the trials' values: ``optuna (TPE, seed 0; first 4 trials random)``."""
    name = settings.get("searcher") or summary.get("searcher")
    if name is None:
        return "random" if settings else None  # searches saved before the choice existed were random
    if name != "optuna":
        return str(name)
    base = settings.get("base")
    seed = base.get("seed") if isinstance(base, dict) else None
    details = [f"seed {seed}"] if seed is not None else []
    if is_number(settings.get("startup_trials")):
        details.append(f"first {settings['startup_trials']} trials random")
    return "optuna (TPE" + (", " + "; ".join(details) if details else "") + ")"


def best_trial_index(trials: list[dict[str, Any]], summary: dict[str, Any], best_values: dict[str, Any],
                     metric: str) -> int | None:
    """The search's own pick (trials.json ``best``), else the trial best.yaml describes, else the top score."""
    chosen = summary.get("best")
    if isinstance(chosen, dict) and chosen.get("trial_id") is not None:
        for i, t in enumerate(trials):
            if t.get("trial_id") == chosen["trial_id"]:
                return i
    if best_values:
        for i, t in enumerate(trials):
            if t["params"] and all(best_values.get(k) == v for k, v in t["params"].items()):
                return i
    scored = [i for i, t in enumerate(trials) if is_number(t.get(metric))]
    return max(scored, key=lambda i: trials[i][metric]) if scored else None


def _param_keys(trials: list[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for t in trials:
        keys.update(dict.fromkeys(t["params"]))
    return list(keys)


def _score_text(trial: dict[str, Any], metric: str) -> str:
    value = trial.get(metric)
    if not is_number(value):
        return "–"
    std = trial.get(f"{metric}_std")
    return f"{100 * value:.2f}" + (f" ± {100 * std:.2f}" if is_number(std) else "")


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "–" if value is None else str(value)


def trials_table(trials: list[dict[str, Any]], params: list[str], metric: str, best: int | None) -> str:
    """Trials by objective, best first; trials with no score at the bottom."""
    order = sorted(range(len(trials)), key=lambda i: (not is_number(trials[i].get(metric)),
                                                      -(trials[i].get(metric) or 0) if is_number(trials[i].get(metric)) else 0))
    has_error = any(t.get("error") for t in trials)
    headers = ["rank", "trial", "status", f"{metric} (%)", "iterations", "seconds", *params] + (["error"] if has_error else [])
    rows, classes = [], []
    for rank, i in enumerate(order, start=1):
        t = trials[i]
        row = [rank, t.get("trial_id", f"#{i + 1}"), t.get("status", "–"), h.Cell(_score_text(t, metric), numeric=True),
               h.Cell(_show(t.get("iterations")), numeric=True), h.Cell(_show(t.get("seconds")), numeric=True),
               *[h.Cell(_show(t["params"].get(p)), numeric=is_number(t["params"].get(p))) for p in params]]
        if has_error:
            row.append(t.get("error") or "")
        rows.append(row)
        classes.append("best" if i == best else None)
    return h.table(headers, rows, css_id="trials-table", row_classes=classes)


def render_tune(tune_dir: str) -> Rendered:
    summary, trials, best_text, best_values = read_search(tune_dir)
    settings = search_settings(tune_dir)
    metric = str(summary.get("metric") or DEFAULT_METRIC)
    params = _param_keys(trials)
    best = best_trial_index(trials, summary, best_values, metric)
    figures: dict[str, bytes] = {}
    if params and any(is_number(t.get(metric)) for t in trials):
        figures["objective.png"] = objective_scatter_png(params, trials, metric, best, log_scaled(settings))
        scatter = h.image(figures["objective.png"], f"{metric} against each searched parameter",
                          caption="filled: ran to the end; hollow: stopped early by the scheduler; star: best")
    else:
        scatter = h.note("No trial reported a score yet, or no parameter was searched.")
    if best is not None:
        b = trials[best]
        chosen = h.table(["parameter", "value"], [(k, _show(v)) for k, v in b["params"].items()], css_id="best-params")
        lead = h.note(f"Trial {b.get('trial_id', best + 1)}: {metric} {_score_text(b, metric)} % after "
                      f"{_show(b.get('iterations'))} iterations ({b.get('status', '?')}).")
    else:
        chosen, lead = "", h.note("No best trial: none reported a score.")
    best_body = lead + chosen + (h.pre(best_text) if best_text else h.note("best.yaml is missing."))
    split = summary.get("split", "val")
    sections = [
        ("best", "Best configuration",
         f"Which settings won on the {split} split? Use best.yaml with `raydd run --config best.yaml`.", best_body),
        ("objective", "Objective vs parameters",
         "How sensitive is the result to each searched setting, and is the best value at the edge of the range?",
         scatter),
        ("trials", "Trials", "Every trial, best objective first; the highlighted row is the one chosen.",
         trials_table(trials, params, metric, best) if trials else h.note("trials.json lists no trials.")),
    ]
    fact_items = [("trials", len(trials)), ("objective", f"{metric} (max, {split} split)"),
                  ("searcher", searcher_text(settings, summary)), ("scheduler", settings.get("scheduler")),
                  ("iterations per trial", summary.get("total_iterations")),
                  ("completed", sum(t.get("status") == "completed" for t in trials) if trials else None)]
    page = h.page("raydd tune report", tune_dir, sections, fact_items=fact_items)
    return Rendered(page, figures)
