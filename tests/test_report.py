"""Reports: a real tiny run rendered to HTML, read back as a browser and a parser would, plus the
comparison and tune pages and the TensorBoard mirror. One distillation for the whole module (~10 s)."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from raydd.errors import RayddError, RunDirError
from raydd.report import write_report, write_tune_report
from raydd.report.audit_view import attack_row, auc, fpr_level, read_audit, tpr_at
from raydd.report.screenshot import find_browser, looks_blank, render_png
from raydd.rundir import RunDir
from raydd.synthetic import SyntheticSet
from tests.helpers import installed

PLACEHOLDER = re.compile(r"\$\{?[A-Za-z_]\w*\}?|\{\{|\}\}")

AUDIT = {
    "attacks": {
        "loss": {"synthetic": {"auc": 0.53, "tpr_at_1pct_fpr": 0.012, "tpr_at_0.1pct_fpr": 0.001},
                 "real_members": {"auc": 0.71, "tpr_at_1pct_fpr": 0.09}},
        "lira": {"synthetic": {"auc": 0.55, "tpr_at_1pct_fpr": 0.02}},
    },
    "nn_distance": {"pixel_l2": {"mean": 4.2, "min": 1.5}, "feature_cosine": {"mean": 0.81, "max": 0.97}},
    "members": 36,
}


class Page(HTMLParser):
    """What a test needs from a page: images, table cells by table id, every attribute and text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.tables: dict[str, list[list[tuple[str, str]]]] = {}  # id -> rows of (text, class)
        self.attributes: list[str] = []
        self.text: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._cell_class = ""
        self._row_class = ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.attributes += [v for _, v in attrs if v]
        if tag == "img":
            self.images.append(a)
        elif tag == "table":
            self._table = a.get("id", f"table{len(self.tables)}")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row_class = a.get("class", "")
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell, self._cell_class = [], " ".join([a.get("class", ""), self._row_class]).strip()

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append(("".join(self._cell).strip(), self._cell_class))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def column(self, table: str, heading: str) -> list[tuple[str, str]]:
        rows = self.tables[table]
        index = [text for text, _ in rows[0]].index(heading)
        return [row[index] for row in rows[1:]]


def tiny_config(**distill):
    from raydd.config import build_config

    return build_config("quick", overrides={"device": "cpu", "distill": {"ipc": 2, "iterations": 4, "batch_real": 8,
                                                                       "checkpoint_every": 2, "log_every": 1, **distill},
                                           "eval": {"models": 2, "epochs": 2}})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real run directory: distilled, evaluated, eval.json written through RunDir."""
    from raydd.distill import run_distillation
    from raydd.workflows import evaluate_set
    from tests.helpers import tiny_splits

    out = str(tmp_path_factory.mktemp("report") / "dm-tiny")
    splits = tiny_splits()
    cfg = tiny_config()
    syn = run_distillation(cfg, out, splits=splits, show_progress=False)
    RunDir(out).write_json("eval.json", evaluate_set(syn, splits, cfg, show_progress=False).to_json())
    return out


def copy_run(src: str, dst) -> str:
    shutil.copytree(src, dst)
    for page in dst.glob("report*"):
        page.unlink()
    return str(dst)


def enrich(run_dir: str, *, accuracy: float = 0.9, lira_auc: float = 0.55) -> None:
    """What later layers add: more loss terms, caption embeddings with real captions, caption-aware and
    cross-architecture figures, an audit with its nearest-neighbour picture."""
    run = RunDir(run_dir)
    rows = run.read_metrics()
    Path(run_dir, "metrics.jsonl").write_text("".join(
        json.dumps({**r, "loss_dm": r["loss"] * 0.8, "loss_cm": 0.1 / r["iteration"]}) + "\n" for r in rows))
    syn = SyntheticSet.load(run_dir)
    syn.caption_emb = torch.eye(syn.images.shape[0], 8)
    syn.save(run_dir)
    captions = [f"a bright square of kind {i} & <friends>" for i in range(8)]
    run.write_json("captions.json", {"captions": captions, "caption_emb": torch.eye(8).tolist()})
    ev = run.read_json("eval.json")
    ev["accuracy"] = {"mean": accuracy, "std": 0.01, "per_model": [accuracy - 0.01, accuracy + 0.01], "n": 2}
    ev["cross_arch"] = {"alexnet": {"mean": 0.6, "std": 0.05, "per_model": [0.55, 0.65], "n": 2}}
    ev["accuracy_image_caption"] = {"mean": accuracy + 0.05, "std": 0.02, "per_model": [0.93, 0.97], "n": 2}
    ev["caption_only"] = {"mean": 0.4, "std": 0.0, "per_model": [0.4], "n": 1}
    run.write_json("eval.json", ev)
    audit = json.loads(json.dumps(AUDIT))
    audit["attacks"]["lira"]["synthetic"]["auc"] = lira_auc
    run.write_json("audit.json", audit)
    shutil.copy(Path(run_dir, "synthetic.png"), Path(run_dir, "nn_pairs.png"))


def assert_self_contained(text: str, page: Page) -> None:
    assert "http://" not in text and "https://" not in text
    assert all(src.startswith("data:image/png;base64,") for src in (i["src"] for i in page.images))
    assert not any(a.startswith(("http:", "https:", "//")) for a in page.attributes)
    assert not PLACEHOLDER.search(text), PLACEHOLDER.search(text)


def test_single_run_report_is_self_contained(tiny_run, tmp_path):
    path = write_report([tiny_run], out=str(tmp_path / "page.html"))
    text = open(path).read()
    page = Page(text)
    assert_self_contained(text, page)
    alts = [i["alt"] for i in page.images]
    assert "synthetic images, one row per class" in alts
    assert "initial synthetic images" in alts and "distillation loss curves per term" in alts
    assert page.column("accuracy-table", "model / input")[0][0] == "convnet3 (image only)"
    assert page.column("accuracy-table", "accuracy (mean ± std)")[0][0].endswith("%")
    assert "batch_real: 8" in text and "class0" in text  # the config as written, the class names
    protocol = dict(r[0][0:1] + r[1][0:1] for r in page.tables["protocol-table"][1:])
    assert protocol["accuracy_at"] == "last epoch" and protocol["trained on"].startswith("cpu, ")
    assert "No privacy audit yet" in text
    for figure in ("page_grid.png", "page_loss.png", "page_accuracy.png"):
        assert (tmp_path / figure).read_bytes()[:4] == b"\x89PNG"


@installed(find_browser() is not None, "Chromium (for rendering reports)")
def test_report_renders_in_headless_chromium(tiny_run, tmp_path):
    from jobs.render_report import main

    path = write_report([tiny_run], out=str(tmp_path / "report.html"))
    shot = tmp_path / "report.png"
    assert main([path, str(shot), "--height", "1600"]) == 0
    png = shot.read_bytes()
    assert png[:4] == b"\x89PNG" and not looks_blank(png)
    from PIL import Image

    assert Image.open(shot).size == (1280, 1600)


def test_looks_blank_tells_a_flat_picture(tmp_path):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buf, format="PNG")
    assert looks_blank(buf.getvalue())


def test_rich_run_shows_terms_captions_caption_figures_and_audit(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path / "rich")
    enrich(run_dir)
    text = open(write_report([run_dir])).read()
    page = Page(text)
    assert_self_contained(text, page)
    terms = [row[0][0] for row in page.tables["loss-table"][1:]]
    assert terms == ["loss", "loss_dm", "loss_cm"]
    labels = [c for c, _ in page.column("accuracy-table", "model / input")]
    assert labels == ["convnet3 (image only)", "alexnet (cross-arch)", "convnet3 (image + caption)",
                      "caption-only baseline"]
    assert "a bright square of kind 0 &amp; &lt;friends&gt;" in text  # nearest caption, escaped
    assert sum(i["alt"].startswith("class1 synthetic image") for i in page.images) == 2
    attacks = {row[0][0]: row for row in page.tables["audit-table"][1:]}
    assert "attacks / lira / synthetic" in attacks and "attacks / loss / real_members" in attacks
    assert ("nn_distance / pixel_l2 / mean", "") in page.column("audit-other", "what")
    assert any(i["alt"].startswith("synthetic images next to their nearest") for i in page.images)


def test_comparison_highlights_the_best_value_of_each_column(tiny_run, tmp_path):
    a = copy_run(tiny_run, tmp_path / "runs" / "a")
    b = copy_run(tiny_run, tmp_path / "runs" / "b")
    enrich(a, accuracy=0.9, lira_auc=0.60)
    enrich(b, accuracy=0.8, lira_auc=0.52)
    path = write_report([a, b])
    assert path == str(tmp_path / "runs" / "comparison" / "report.html")
    text = open(path).read()
    page = Page(text)
    assert_self_contained(text, page)
    acc = page.column("comparison-table", "accuracy, image only ↑")
    assert ["best" in cls for _, cls in acc] == [True, False]
    lira = page.column("comparison-table", "LiRA AUC ↓")
    assert [t for t, _ in lira] == ["0.600", "0.520"] and ["best" in c for _, c in lira] == [False, True]
    loss_tpr = page.column("comparison-table", "loss TPR@1%FPR ↓")
    assert [t for t, _ in loss_tpr] == ["0.012", "0.012"] and not any("best" in c for _, c in loss_tpr)  # all equal
    assert "accuracy, image + caption ↑" in [t for t, _ in page.tables["comparison-table"][0]]
    assert sum(i["alt"].startswith("synthetic grid of") for i in page.images) == 2


def test_comparison_drops_columns_no_run_has(tiny_run, tmp_path):
    a = copy_run(tiny_run, tmp_path / "x" / "run")
    b = copy_run(tiny_run, tmp_path / "y" / "run")
    page = Page(open(write_report([a, b], out=str(tmp_path / "cmp"))).read())
    headings = [t for t, _ in page.tables["comparison-table"][0]]
    assert "LiRA AUC ↓" not in headings and "accuracy, image + caption ↑" not in headings
    assert [r[0][0] for r in page.tables["comparison-table"][1:]] == ["x/run", "y/run"]  # same names told apart


def test_a_full_data_baseline_sits_in_the_comparison(tiny_run, tmp_path):
    full = tmp_path / "baseline-full"
    full.mkdir()
    shutil.copy(Path(tiny_run, "config.yaml"), full / "config.yaml")
    ev = json.loads(Path(tiny_run, "eval.json").read_text())
    RunDir(str(full)).write_json("eval.json", {**ev, "method": "full", "ipc": None, "baseline": "full"})
    page = Page(open(write_report([tiny_run, str(full)], out=str(tmp_path / "cmp.html"))).read())
    assert [(r[1][0], r[3][0]) for r in page.tables["comparison-table"][1:]] == [("dm", "2"), ("full", "all")]
    assert "baseline-full: no synthetic set" in "".join(page.text)


def test_missing_artifacts_are_skipped_with_a_note(tmp_path):
    run = tmp_path / "bare"
    run.mkdir()
    (run / "config.yaml").write_text("preset: quick\ndistill: {method: dm, ipc: 3}\n")
    (run / "metrics.jsonl").write_text('{"iteration": 1, "loss": 2.0}\n{"iteration": 2, "lo')  # torn last line
    (run / "audit.json").write_text("[1, 2]")
    text = open(write_report([str(run)])).read()
    assert "No synthetic set yet" in text and "No evaluation yet" in text
    assert "audit.json: expected a JSON object" in text and "metrics.jsonl line 2" in text
    with pytest.raises(RunDirError, match="not a raydd run directory"):
        write_report([str(tmp_path / "nothing")])


def tune_trials() -> list[dict]:
    def trial(tid, lr, init, acc, status="completed", iterations=8):
        return {"trial_id": tid, "status": status, "val_accuracy": acc, "val_accuracy_std": 0.01,
                "iterations": iterations, "seconds": 3.5, "params": {"distill.lr_img": lr, "distill.init": init},
                "run_dir": f"/x/trials/{tid}", "error": None}

    return [trial("t1", 0.5, "real", 0.70), trial("t2", 5.0, "noise", 0.82), trial("t3", 50.0, "real", 0.40,
                                                                                  "stopped_early", 2),
            {**trial("t4", 1.0, "real", None, "error", 0), "error": "RuntimeError: boom"}]


def test_tune_report_sorts_trials_and_marks_the_best(tmp_path):
    trials = tune_trials()
    (tmp_path / "trials.json").write_text(json.dumps({"metric": "val_accuracy", "mode": "max", "split": "val",
                                                      "best": trials[1], "trials": trials, "total_iterations": 8}))
    (tmp_path / "best.yaml").write_text("# best of 4\ndistill:\n  lr_img: 5.0\n  init: noise\n")
    path = write_tune_report(str(tmp_path))
    text = open(path).read()
    page = Page(text)
    assert_self_contained(text, page)
    rows = page.tables["trials-table"][1:]
    assert [r[1][0] for r in rows] == ["t2", "t1", "t3", "t4"]
    assert all("best" in cls for _, cls in rows[0]) and not any("best" in cls for _, cls in rows[1])
    assert "RuntimeError: boom" in text and "lr_img: 5.0" in text
    assert any(i["alt"].startswith("val_accuracy against each searched parameter") for i in page.images)
    assert (tmp_path / "report_objective.png").exists()


def test_tune_report_names_the_searcher(tmp_path):
    trials = tune_trials()
    (tmp_path / "trials.json").write_text(json.dumps({"metric": "val_accuracy", "split": "val", "searcher": "optuna",
                                                      "trials": trials}))
    settings = {"searcher": "optuna", "scheduler": "asha", "startup_trials": 4, "base": {"seed": 3},
                "space": {"distill.lr_img": {"loguniform": [0.1, 100]}, "distill.init": {"choice": ["real", "noise"]}}}
    (tmp_path / "search.json").write_text(json.dumps(settings))
    page = Page(open(write_tune_report(str(tmp_path))).read())
    assert "optuna (TPE, seed 3; first 4 trials random)" in page.text and "asha" in page.text
    assert len(page.tables["trials-table"]) == 1 + len(trials)
    # a search saved before the searcher could be chosen was a random one
    (tmp_path / "search.json").write_text(json.dumps({k: v for k, v in settings.items() if k != "searcher"}))
    (tmp_path / "trials.json").write_text(json.dumps({"trials": trials}))
    old = Page(open(write_tune_report(str(tmp_path))).read())
    assert "random" in old.text and "optuna (TPE" not in " ".join(old.text)


def test_tune_report_reads_a_bare_list_of_trials(tmp_path):
    (tmp_path / "trials.json").write_text(json.dumps(tune_trials()[:2]))
    rows = Page(open(write_tune_report(str(tmp_path))).read()).tables["trials-table"][1:]
    assert rows[0][1][0] == "t2" and "best" in rows[0][0][1]
    with pytest.raises(RunDirError, match="trials.json is missing"):
        write_tune_report(str(tmp_path / "none"))


@pytest.mark.parametrize("key, level", [("tpr_at_1pct_fpr", 0.01), ("tpr@0.1%fpr", 0.001), ("tpr_at_0_1pct_fpr", 0.001),
                                        ("tpr_at_fpr.0.01", 0.01), ("TPR_1e-3", 0.001), ("auc", None)])
def test_fpr_level_reads_common_key_spellings(key, level):
    assert fpr_level(key) == pytest.approx(level) if level else fpr_level(key) is None


def test_audit_as_a_list_of_records():
    view = read_audit({"results": [{"attack": "lira", "target": "real members", "auc": 0.8, "tpr@1%fpr": 0.2},
                                   {"attack": "lira", "target": "synthetic", "auc": 0.51, "tpr@1%fpr": 0.011}]})
    row = attack_row(view, "lira")
    assert auc(row) == 0.51 and tpr_at(row, 0.01) == 0.011
    assert attack_row(view, "loss") is None


def test_tensorboard_mirror_names_the_package_when_missing(tiny_run, tmp_path, monkeypatch):
    import builtins

    from raydd.report.tensorboard import mirror_metrics

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.split(".")[0] in ("tensorboard", "tensorboardX") or name == "torch.utils.tensorboard":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(RayddError, match="pip install tensorboard"):
        mirror_metrics(tiny_run, str(tmp_path / "tb"))


def test_tensorboard_mirror_writes_every_term(tiny_run, tmp_path):
    pytest.importorskip("tensorboard", reason="optional: pip install tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from raydd.report.tensorboard import mirror_metrics

    logdir = mirror_metrics(tiny_run, str(tmp_path / "tb"))
    events = EventAccumulator(logdir)
    events.Reload()
    assert [e.step for e in events.Scalars("distill/loss")] == [1, 2, 3, 4]


def test_render_png_refuses_a_missing_file(tmp_path):
    if find_browser() is None:
        with pytest.raises(RayddError, match="apt-get install -y chromium"):
            render_png(tmp_path / "x.html", tmp_path / "x.png")
    else:
        with pytest.raises(RayddError, match="no such report file"):
            render_png(tmp_path / "x.html", tmp_path / "x.png")


def test_emit_table_prints_and_writes_the_whole_table(tmp_path, capsys):
    from raydd.report.tables import emit_table

    target = tmp_path / "deep" / "table.md"
    emit_table("| a |\n|---|", str(target))
    assert capsys.readouterr().out == "| a |\n|---|\n"
    assert target.read_text() == "| a |\n|---|\n"


def test_importing_raydd_and_drawing_leave_the_callers_matplotlib_backend_alone():
    # A notebook's interactive backend must survive `import raydd.distill` and a synthetic-set picture.
    import subprocess
    import sys

    script = (
        "import matplotlib; matplotlib.use('pdf')\n"
        "import torch, raydd.distill, raydd.report.plots, raydd.audit.nearest\n"
        "from raydd.grid import grid_png\n"
        "from raydd.report.grid import grid_png as old_path\n"
        "assert old_path is grid_png and 'matplotlib.figure' not in __import__('sys').modules\n"
        "png = grid_png(torch.rand(4, 1, 8, 8), torch.tensor([0, 0, 1, 1]), ['a', 'b'])\n"
        "import matplotlib.pyplot as plt\n"
        "print(matplotlib.get_backend(), png[:4] == b'\\x89PNG', plt.get_fignums())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["pdf", "True", "[]"]


def test_a_run_written_before_the_fusion_components_and_gradmatch_sections_still_reports(tiny_run, tmp_path):
    """metadata.json's ``multimodal`` held the fusion and component fields, config.yaml the old sections."""
    run_dir = copy_run(tiny_run, tmp_path / "old")
    meta_path = Path(run_dir, "metadata.json")
    meta = json.loads(meta_path.read_text())
    fusion = meta.pop("fusion")
    meta["multimodal"] = {"text_encoder": "minilm", "segmenter": "auto", **meta["multimodal"], "cc_dim": 128,
                          "cc_gain": fusion["caption_gain"], "cc_norm": fusion["caption_norm"],
                          "caption_dropout": fusion["caption_dropout"]}
    meta_path.write_text(json.dumps(meta))
    old_config = Path(__file__).parent / "data" / "rundir-config-quick-dm.yaml"
    shutil.copy(old_config, Path(run_dir, "config.yaml"))
    text = open(write_report([run_dir], out=str(tmp_path / "page.html"))).read()
    assert "real_chunk: 512" in text and "synthetic images, one row per class" in text  # the file as written
    assert SyntheticSet.load(run_dir).meta["multimodal"]["cc_dim"] == 128
    assert RunDir(run_dir).read_config().dm.real_chunk == 512


def test_the_command_writes_the_page_names_an_unreadable_artifact_and_exits_1(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from raydd.cli import app

    run = copy_run(tiny_run, tmp_path / "cut")
    text = Path(run, "eval.json").read_text()
    Path(run, "eval.json").write_text(text[: len(text) // 2])  # a write cut short
    result = CliRunner().invoke(app, ["report", run])
    assert result.exit_code == 1
    assert "report: not shown:" in result.stderr and "eval.json" in result.stderr
    assert Path(run, "report.html").exists()
    assert CliRunner().invoke(app, ["report", tiny_run, "--out", str(tmp_path / "ok.html")]).exit_code == 0
