"""Everything a report shows about one run directory, read once and defensively.

A report is often written for a run that is half done (no eval.json yet), from an older version (no
synthetic_init.png), or next to files another layer is still learning to write (audit.json). Missing
artifacts become ``None``; unreadable ones become a note the page shows, never an exception, except
when the directory is not a run at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml

from raydd.artifacts import AUDIT, CAPTIONS, CONFIG, EVAL, GRID, INIT_GRID, METADATA, METRICS, NN_PAIRS_PNG, SYNTHETIC
from raydd.errors import RayddError, RunDirError
from raydd.results import AuditResult, EvalResult
from raydd.storage import exists, read_bytes
from raydd.synthetic import SyntheticSet


@dataclass
class RunArtifacts:
    path: str
    config_text: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None  # eval.json as EvalResult writes it
    audit: dict[str, Any] | None = None  # audit.json as AuditResult writes it
    synthetic: SyntheticSet | None = None
    synthetic_png: bytes | None = None
    init_png: bytes | None = None
    nn_pairs_png: bytes | None = None
    caption_bank: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return PurePosixPath(self.path.rstrip("/")).name or self.path

    @property
    def meta(self) -> dict[str, Any]:
        return self.synthetic.meta if self.synthetic is not None else {}

    @property
    def method(self) -> str | None:
        ev = self.evaluation or {}
        return self.meta.get("method") or ev.get("method") or self.setting("distill", "method")

    @property
    def dataset(self) -> str | None:
        ev = self.evaluation or {}
        return self.meta.get("dataset") or ev.get("dataset") or self.setting("data", "name")

    @property
    def ipc(self) -> int | str | None:
        """Images per class; "all" for the full-training-set baseline, which has no IPC."""
        if self.synthetic is not None:
            return self.synthetic.ipc
        ev = self.evaluation or {}
        if ev.get("ipc") is not None:
            return ev["ipc"]
        if "full" in (ev.get("baseline"), ev.get("method")):
            return "all"
        return self.setting("distill", "ipc")

    def setting(self, *keys: str) -> Any:
        """A value by its dotted path in config.yaml (``setting("distill", "ipc")``), else None."""
        node: Any = self.config
        for key in keys:
            if not isinstance(node, dict):
                return None
            node = node.get(key)
        return node


def _file(run_dir: str, name: str) -> str:
    return f"{run_dir}/{name}"


def _optional_bytes(run_dir: str, name: str, problems: list[str]) -> bytes | None:
    path = _file(run_dir, name)
    try:
        return read_bytes(path) if exists(path) else None
    except OSError as exc:
        problems.append(f"{name}: unreadable ({exc})")
        return None


def _optional_json(run_dir: str, name: str, problems: list[str]) -> Any:
    blob = _optional_bytes(run_dir, name, problems)
    if blob is None:
        return None
    try:
        return json.loads(blob)
    except (ValueError, UnicodeDecodeError) as exc:
        problems.append(f"{name}: not valid JSON ({exc})")
        return None


def _result(run_dir: str, name: str, kind: type[EvalResult] | type[AuditResult],
            problems: list[str]) -> dict[str, Any] | None:
    """eval.json / audit.json read through its record type (older files upgraded); unreadable: a note."""
    blob = _optional_bytes(run_dir, name, problems)
    if blob is None:
        return None
    try:
        return kind.from_json(blob, name).to_json()
    except RunDirError as exc:
        problems.append(str(exc))
        return None


def _json_object(value: Any, name: str, problems: list[str]) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    problems.append(f"{name}: expected a JSON object, found {type(value).__name__}")
    return None


def read_metrics(run_dir: str, problems: list[str]) -> list[dict[str, Any]]:
    """metrics.jsonl rows; a torn last line (a killed run) is skipped, not fatal."""
    blob = _optional_bytes(run_dir, METRICS, problems)
    rows = []
    for number, line in enumerate((blob or b"").decode(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            problems.append(f"{METRICS} line {number}: not JSON, skipped")
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_caption_bank(run_dir: str, problems: list[str]) -> dict[str, Any] | None:
    """``captions.json``: ``{"captions": [text, ...], "caption_emb": [[float, ...], ...]}`` (same order).

    The real captions a synthetic caption embedding can be compared with; written by whoever has the
    captions at hand (the distillation, a preprocessing job). Without embeddings the texts cannot be
    matched, so the bank counts as absent.
    """
    bank = _json_object(_optional_json(run_dir, CAPTIONS, problems), CAPTIONS, problems)
    if bank is None:
        return None
    texts = bank.get("captions")
    embeddings = bank.get("caption_emb", bank.get("embeddings"))
    if not isinstance(texts, list) or not isinstance(embeddings, list) or len(texts) != len(embeddings) or not texts:
        problems.append(f"{CAPTIONS}: needs equally long, non-empty 'captions' and 'caption_emb' lists")
        return None
    return {"captions": [str(t) for t in texts], "caption_emb": embeddings}


def load_run(run_dir: str) -> RunArtifacts:
    """Read a run directory for reporting; raise only when it is not a run directory."""
    run_dir = str(run_dir).rstrip("/")
    if not exists(_file(run_dir, CONFIG)) and not exists(_file(run_dir, METADATA)):
        raise RunDirError(f"{run_dir}: not a raydd run directory (neither config.yaml nor metadata.json)")
    run = RunArtifacts(path=run_dir)
    problems = run.problems
    config_blob = _optional_bytes(run_dir, CONFIG, problems)
    if config_blob is not None:
        run.config_text = config_blob.decode(errors="replace")
        try:
            loaded = yaml.safe_load(run.config_text)
            run.config = loaded if isinstance(loaded, dict) else {}
        except yaml.YAMLError as exc:
            problems.append(f"{CONFIG}: not valid YAML ({exc})")
    run.metrics = read_metrics(run_dir, problems)
    run.evaluation = _result(run_dir, EVAL, EvalResult, problems)
    run.audit = _result(run_dir, AUDIT, AuditResult, problems)
    if exists(_file(run_dir, SYNTHETIC)):
        try:
            run.synthetic = SyntheticSet.load(run_dir)
        except (RayddError, KeyError, ValueError, OSError) as exc:
            problems.append(f"synthetic set: unreadable ({exc})")
    run.synthetic_png = _optional_bytes(run_dir, GRID, problems)
    run.init_png = _optional_bytes(run_dir, INIT_GRID, problems)
    run.nn_pairs_png = _optional_bytes(run_dir, NN_PAIRS_PNG, problems)
    run.caption_bank = read_caption_bank(run_dir, problems)
    return run

