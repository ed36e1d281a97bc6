"""The single-run report: what the synthetic set looks like, how it was made, what it is worth, what it leaks.

Each section answers one question (its grey line says which) and, when the artifact behind it is
missing, says so and which command makes it, instead of disappearing silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raydd.report import markup as h
from raydd.report.audit_view import read_audit
from raydd.report.captions import nearest_captions
from raydd.grid import grid_png
from raydd.report.images import tensor_png
from raydd.report.plots import accuracy_png, loss_curves_png
from raydd.report.rundata import RunArtifacts
from raydd.report.summaries import (accuracy_rows, distill_seconds, duration, eval_seconds, headline, is_number,
                                    loss_terms, percent)

PER_CLASS = 10  # images per class row, as `raydd show`
GRID_DPI = 140  # sharper than synthetic.png: the page is read on high-resolution screens


@dataclass
class Rendered:
    """A page and the figures drawn for it (file suffix -> PNG), written next to the page by the caller."""

    html: str
    figures: dict[str, bytes] = field(default_factory=dict)


def run_title(run: RunArtifacts) -> str:
    return f"{run.method or 'run'} · {run.dataset or '?'} · IPC {run.ipc if run.ipc is not None else '?'}"


def synthetic_grid(run: RunArtifacts, *, per_class: int = PER_CLASS) -> bytes | None:
    """The grid drawn from the saved tensors (de-normalised), else the run's own synthetic.png."""
    syn = run.synthetic
    if syn is None:
        return run.synthetic_png
    return grid_png(syn.denormalized(), syn.labels, syn.class_names, max_per_class=per_class, dpi=GRID_DPI,
                    title=f"{syn.meta.get('method', '')} {syn.meta.get('dataset', '')} ipc={syn.ipc}".strip())


def _captioned_gallery(run: RunArtifacts) -> str:
    syn = run.synthetic
    if syn is None or syn.caption_emb is None:
        return ""
    if run.caption_bank is None:
        return h.note("This set carries caption embeddings, but the run directory has no captions.json "
                      "(real captions with their embeddings), so they are not shown as sentences.")
    matches = nearest_captions(syn.caption_emb, run.caption_bank)
    if matches is None:
        return h.note("captions.json embeddings have another dimension than the set's caption embeddings; "
                      "not matched.")
    images = syn.denormalized()
    parts = ["<h3>Nearest real caption of each synthetic caption embedding</h3>"]
    for c, name in enumerate(syn.class_names):
        rows = range(c * syn.ipc, min((c + 1) * syn.ipc, c * syn.ipc + PER_CLASS))
        cells = [
            f'<figure><img src="{h.data_uri(tensor_png(images[i]))}" alt="{h.esc(name)} synthetic image {i}">'
            f'<figcaption>{h.esc(matches[i].text)} <span class="sim">(cos {matches[i].similarity:.2f})</span>'
            "</figcaption></figure>"
            for i in rows
        ]
        parts.append(f'<p><b>{h.esc(name)}</b></p><div class="captioned">{"".join(cells)}</div>')
    return "".join(parts)


def synthetic_section(run: RunArtifacts, grid: bytes | None) -> str:
    if grid is None:
        return h.note("No synthetic set yet (synthetic.safetensors is missing): run `raydd distill` first.")
    names = ", ".join(run.synthetic.class_names) if run.synthetic is not None else ""
    caption = "one row per class, de-normalised" + (f" (rows: {names})" if names else "")
    body = h.image(grid, "synthetic images, one row per class", caption=caption)
    return body + _captioned_gallery(run)


def init_final_section(run: RunArtifacts, grid: bytes | None) -> str:
    if run.init_png is None or grid is None:
        return h.note("synthetic_init.png is not in this run directory (runs from before it was written).")
    return ('<div class="pair">'
            + h.image(run.init_png, "initial synthetic images", caption="at initialisation (synthetic_init.png)")
            + h.image(grid, "final synthetic images", caption="after distillation")
            + "</div>")


def loss_section(run: RunArtifacts, figures: dict[str, bytes]) -> str:
    curves = loss_terms(run.metrics)
    if not curves:
        return h.note("metrics.jsonl is missing or has no numeric terms.")
    figures["loss.png"] = loss_curves_png(curves)
    rows = [(name, len(ys), h.Cell(f"{ys[0]:.4g}", numeric=True), h.Cell(f"{ys[-1]:.4g}", numeric=True),
             h.Cell(f"{min(ys):.4g}", numeric=True)) for name, (_, ys) in curves.items()]
    return (h.image(figures["loss.png"], "distillation loss curves per term")
            + h.table(["term", "points", "first", "last", "min"], rows, css_id="loss-table"))


def accuracy_section(run: RunArtifacts, figures: dict[str, bytes]) -> str:
    rows = accuracy_rows(run.evaluation)
    if not rows:
        return h.note("No evaluation yet (eval.json is missing): run `raydd evaluate RUN_DIR`.")
    figures["accuracy.png"] = accuracy_png(rows)
    table = h.table(
        ["model / input", "accuracy (mean ± std)", "models", "per model (%)"],
        [(r.label, h.Cell(percent(r), numeric=True), h.Cell(len(r.per_model) or "–", numeric=True),
          " ".join(f"{100 * v:.2f}" for v in r.per_model) or "–") for r in rows],
        css_id="accuracy-table",
    )
    ev = run.evaluation or {}
    proto = ev.get("protocol") if isinstance(ev.get("protocol"), dict) else {}
    where = (f"Networks trained from scratch on the synthetic set, tested once on the {proto.get('tested_on', 'test')} "
             f"split at the {proto.get('accuracy_at', 'last epoch')}; preset {ev.get('preset', '?')}.")
    return h.image(figures["accuracy.png"], "evaluation accuracy per model") + table + h.note(where)


def audit_section(run: RunArtifacts) -> str:
    if run.audit is None and run.nn_pairs_png is None:
        return h.note("No privacy audit yet (audit.json is missing): run the audit on this run directory.")
    view = read_audit(run.audit)
    parts = []
    if view.attacks:
        columns = view.columns
        parts.append(h.table(
            ["attack / target", *columns],
            [(row.label, *[h.Cell(f"{row.values[c]:.3f}" if c in row.values else "–", numeric=True)
                           for c in columns]) for row in view.attacks],
            css_id="audit-table",
        ))
    if view.other:
        parts.append("<h3>Other audit figures</h3>" + h.table(["what", "value"], view.other, css_id="audit-other"))
    if run.audit is not None and not view.attacks and not view.other:
        parts.append(h.note("audit.json holds no figures this report can read."))
    if run.nn_pairs_png is not None:
        parts.append(h.image(run.nn_pairs_png, "synthetic images next to their nearest real training images",
                             caption="each synthetic image beside its nearest real training image (nn_pairs.png)"))
    return "".join(parts)


def protocol_section(run: RunArtifacts) -> str:
    ev = run.evaluation or {}
    proto = ev.get("protocol")
    if not isinstance(proto, dict):
        return h.note("No protocol recorded (eval.json is missing or has no 'protocol').")
    rows = [("preset", ev.get("preset", "–"))] + [(k, v) for k, v in proto.items()]
    if ev.get("devices"):  # where the models trained; older eval.json files do not say
        rows.append(("trained on", "; ".join(ev["devices"])))
    return h.table(["setting", "value"], [(k, ", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in rows],
                   css_id="protocol-table")


def config_section(run: RunArtifacts) -> str:
    if run.config_text is None:
        return h.note("config.yaml is missing.")
    return h.pre(run.config_text)


def render_run(run: RunArtifacts) -> Rendered:
    figures: dict[str, bytes] = {}
    grid = synthetic_grid(run)
    if grid is not None:
        figures["grid.png"] = grid
    ev = run.evaluation or {}
    iterations = run.meta.get("iterations") or ev.get("iterations") or run.setting("distill", "iterations")
    with_caption = headline(ev, "image+caption")
    fact_items = [
        ("accuracy (image only)", percent(headline(ev)) if ev else None),
        ("accuracy (image + caption)", percent(with_caption) if with_caption else None),
        ("method", run.method),
        ("dataset", run.dataset),
        ("IPC", run.ipc),
        ("iterations", iterations),
        ("preset", run.setting("preset") or ev.get("preset")),
        ("seed", run.setting("seed")),
        ("distill time", duration(distill_seconds(run.metrics)) if run.metrics else None),
        ("eval time", duration(eval_seconds(ev)) if is_number(eval_seconds(ev)) else None),
        ("raydd", run.setting("raydd_version")),
        ("git", (run.setting("git_sha") or "")[:10]),
    ]
    sections = [
        ("synthetic", "Synthetic set", "What did distillation produce? One row per class, in pixel space.",
         synthetic_section(run, grid)),
        ("init-final", "Initial vs final", "What did distillation change, compared with where it started?",
         init_final_section(run, grid)),
        ("loss", "Distillation loss", "Did the optimisation converge, and which loss term drives it?",
         loss_section(run, figures)),
        ("accuracy", "Evaluation accuracy",
         "What is the set worth? Accuracy of networks trained on it alone, mean ± std over independent models.",
         accuracy_section(run, figures)),
        ("audit", "Privacy audit",
         "What does the set leak about the real images it was distilled from? (AUC 0.5 = no better than chance.)",
         audit_section(run)),
        ("config", "Configuration", "Exactly what ran: the fully resolved config.yaml.", config_section(run)),
        ("protocol", "Evaluation protocol", "How the accuracy was measured.", protocol_section(run)),
    ]
    if run.problems:
        sections.insert(0, ("problems", "Unreadable artifacts", "Files present but not shown, and why.",
                            h.table(["problem"], [(p,) for p in run.problems])))
    page = h.page(f"raydd report: {run_title(run)}", run.path, sections, fact_items=fact_items)
    return Rendered(page, figures)
