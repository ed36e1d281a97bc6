"""The several-runs report: one row per run, the best value of each column highlighted, and each set's picture.

"Best" follows the direction that is good for a user: higher accuracy; lower attack AUC and TPR (less
leakage); less time. A column shows only when at least one run has a value for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from raydd.report import markup as h
from raydd.report.audit_view import attack_row, auc, read_audit, tpr_at
from raydd.report.rundata import RunArtifacts
from raydd.report.run_page import Rendered, run_title, synthetic_grid
from raydd.report.summaries import Accuracy, distill_seconds, duration, eval_seconds, headline, percent

THUMB_PER_CLASS = 6


@dataclass
class Column:
    heading: str
    value: Callable[[RunArtifacts], float | None]  # what "best" compares
    text: Callable[[RunArtifacts, float | None], str]
    better: str | None = None  # "high", "low" or None (not compared)


def _accuracy(kind: str) -> Callable[[RunArtifacts], Accuracy | None]:
    return lambda run: headline(run.evaluation, kind)


def _mean(get: Callable[[RunArtifacts], Accuracy | None]) -> Callable[[RunArtifacts], float | None]:
    return lambda run: (acc.mean if (acc := get(run)) is not None else None)


def _attack(attack: str, figure: str) -> Callable[[RunArtifacts], float | None]:
    def value(run: RunArtifacts) -> float | None:
        row = attack_row(read_audit(run.audit), attack)
        return auc(row) if figure == "auc" else tpr_at(row, 0.01)

    return value


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def columns() -> list[Column]:
    image, with_caption = _accuracy("image"), _accuracy("image+caption")
    return [
        Column("method", lambda r: None, lambda r, _: str(r.method or "–")),
        Column("dataset", lambda r: None, lambda r, _: str(r.dataset or "–")),
        Column("IPC", lambda r: None, lambda r, _: str(r.ipc if r.ipc is not None else "–")),
        Column("accuracy, image only", _mean(image), lambda r, _: percent(image(r)), "high"),
        Column("accuracy, image + caption", _mean(with_caption), lambda r, _: percent(with_caption(r)), "high"),
        Column("loss attack AUC", _attack("loss", "auc"), lambda r, v: _number(v), "low"),
        Column("LiRA AUC", _attack("lira", "auc"), lambda r, v: _number(v), "low"),
        Column("loss TPR@1%FPR", _attack("loss", "tpr"), lambda r, v: _number(v), "low"),
        Column("LiRA TPR@1%FPR", _attack("lira", "tpr"), lambda r, v: _number(v), "low"),
        Column("distill time", lambda r: distill_seconds(r.metrics), lambda r, v: duration(v), "low"),
        Column("eval time", lambda r: eval_seconds(r.evaluation), lambda r, v: duration(v), "low"),
    ]


def _labels(runs: list[RunArtifacts]) -> list[str]:
    """Run directory names, with their parent folder where two runs share a name."""
    names = [r.name for r in runs]
    return [r.path.rstrip("/").rsplit("/", 2)[-2] + "/" + r.name if names.count(r.name) > 1 and "/" in r.path
            else r.name for r in runs]


def comparison_table(runs: list[RunArtifacts]) -> str:
    labels = _labels(runs)
    shown = []
    for col in columns():
        values = [col.value(r) for r in runs]
        texts = [col.text(r, v) for r, v in zip(runs, values)]
        if col.better is not None and all(v is None for v in values):
            continue  # no run has this figure (no captions, no audit): the column would be all dashes
        scored = [v for v in values if v is not None]
        best = None
        if col.better and len(set(scored)) > 1:  # all equal: nothing to point at
            best = max(scored) if col.better == "high" else min(scored)
        shown.append((col, values, texts, best))
    headers = ["run"] + [c.heading + {"high": " ↑", "low": " ↓"}.get(c.better or "", "") for c, *_ in shown]
    rows = []
    for i, label in enumerate(labels):
        row: list = [label]
        for col, values, texts, best in shown:
            row.append(h.Cell(texts[i], numeric=col.better is not None,
                              best=best is not None and values[i] is not None and values[i] == best))
        rows.append(row)
    return h.table(headers, rows, css_id="comparison-table")


def render_comparison(runs: list[RunArtifacts]) -> Rendered:
    figures: dict[str, bytes] = {}
    thumbs = []
    for i, (run, label) in enumerate(zip(runs, _labels(runs))):
        grid = synthetic_grid(run, per_class=THUMB_PER_CLASS)
        if grid is None:
            thumbs.append(h.note(f"{label}: no synthetic set"))
            continue
        figures[f"thumb{i + 1}.png"] = grid
        thumbs.append(h.image(grid, f"synthetic grid of {label}", caption=f"{label}: {run_title(run)}"))
    problems = [(r.name, p) for r in runs for p in r.problems]
    sections = [
        ("comparison", "Comparison",
         "Which run gives the most accuracy for the least leakage and time? Best per column highlighted "
         "(↑ higher is better, ↓ lower is better; attack figures are against the model trained on the synthetic set).",
         comparison_table(runs)
         + h.table(["run", "directory"], [(label, r.path) for label, r in zip(_labels(runs), runs)],
                   css_id="run-paths")),
        ("grids", "Synthetic sets", "What does each run's set look like? (first images of each class)",
         f'<div class="thumbs">{"".join(thumbs)}</div>'),
    ]
    if problems:
        sections.append(("problems", "Unreadable artifacts", "Files present but not shown, and why.",
                         h.table(["run", "problem"], problems)))
    page = h.page(f"raydd comparison of {len(runs)} runs", ", ".join(_labels(runs)), sections)
    return Rendered(page, figures)
