"""Ablation records: one JSON line per (dataset, method, row, IPC, seed, protocol).

Run directories are large and local; the records are the small, durable form of an ablation's
results. A records file kept with the docs lets a later ablation add seeds or rows to a table without
re-running, or even having, the run directories behind the rows already measured.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from filelock import FileLock

from raydd.artifacts import check_schema, parse_object
from raydd.artifacts import field as get
from raydd.config import current_set_item
from raydd.errors import ConfigError, RunDirError
from raydd.results import Accuracy, EvalResult
from raydd.storage import exists, is_local, read_text, write_text_atomic

KEY_FIELDS = ("dataset", "method", "row", "ipc", "seed", "protocol")
SCHEMA_VERSION = 1


@dataclass
class Figure:
    """One accuracy of a row and seed: the mean over evaluation models, and each model's figure."""

    mean: float
    per_model: list[float] | None = None
    models: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "per_model": self.per_model, "models": self.models}

    @classmethod
    def from_json(cls, data: Any, where: str) -> Figure:
        data = parse_object(data, where)
        per_model = get(data, "per_model", list, where)
        return cls(float(get(data, "mean", (int, float), where, required=True)),
                   None if per_model is None else [float(a) for a in per_model], get(data, "models", int, where))

    @classmethod
    def from_accuracy(cls, acc: Accuracy | None) -> Figure | None:
        if acc is None:
            return None
        per_model = acc.per_model or None
        return cls(acc.mean, per_model, len(per_model) if per_model else acc.n)


@dataclass
class AblationRecord:
    """One finished (dataset, method, row, IPC, seed, protocol): one line of a records file."""

    dataset: str
    method: str
    row: str
    ipc: int
    seed: int
    protocol: str
    accuracy: Figure
    image_caption: Figure | None = None
    caption_only: float | None = None
    source: str | None = None  # where the figures came from ("run <name>")
    devices: list[str] | None = None  # where the evaluation models trained, when eval.json says
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> tuple:
        return tuple(getattr(self, name) for name in KEY_FIELDS)

    def to_json(self) -> dict[str, Any]:
        out = {"schema_version": self.schema_version, **{name: getattr(self, name) for name in KEY_FIELDS},
               "accuracy": self.accuracy.to_json(),
               "image_caption": self.image_caption.to_json() if self.image_caption else None,
               "caption_only": self.caption_only}
        if self.source is not None:
            out["source"] = self.source
        if self.devices:
            out["devices"] = self.devices
        return out

    @classmethod
    def from_json(cls, source: str | bytes | dict[str, Any], where: str) -> AblationRecord:
        data = parse_object(source, where)
        check_schema(data, where, SCHEMA_VERSION)
        missing = [name for name in (*KEY_FIELDS, "accuracy") if data.get(name) is None and name != "ipc"]
        if missing:
            raise RunDirError(f"{where}: not an ablation record (missing {', '.join(missing)})")
        keys = {name: get(data, name, int if name in ("ipc", "seed") else str, where) for name in KEY_FIELDS}
        keys["protocol"] = current_protocol(keys["protocol"])
        fused = data.get("image_caption")
        return cls(**keys, accuracy=Figure.from_json(data["accuracy"], f"{where}: accuracy"),
                   image_caption=None if fused is None else Figure.from_json(fused, f"{where}: image_caption"),
                   caption_only=get(data, "caption_only", (int, float), where),
                   source=get(data, "source", str, where), devices=get(data, "devices", list, where))


def protocol_label(preset: str, sets: list[str]) -> str:
    """What makes two rows comparable: the preset and the config fields set on top of it, each field
    spelled as today (``mm.cc_dim=64`` and ``fusion.projection_dim=64`` are one protocol)."""
    return " ".join([preset, *sorted(current_set_item(item) for item in sets)])


def current_protocol(label: str) -> str:
    """A stored protocol label with any moved key spelled as today (a label without one, unchanged)."""
    preset, *tokens = label.split(" ")
    items: list[str] = []
    for token in tokens:  # a value holding a space continues the item before it
        if "=" in token or not items:
            items.append(token)
        else:
            items[-1] += f" {token}"
    if all(current_set_item(item) == item for item in items):
        return label
    return protocol_label(preset, items)


def record_from_eval(ev: EvalResult, *, dataset: str, method: str, row: str, ipc: int, seed: int,
                     protocol: str, run: str) -> AblationRecord:
    """The figures of one eval.json that an ablation table needs."""
    caption_only = (ev.caption_only or {}).get("accuracy")
    return AblationRecord(dataset, method, row, ipc, seed, protocol, accuracy=Figure.from_accuracy(ev.accuracy),
                          image_caption=Figure.from_accuracy(ev.accuracy_image_caption), caption_only=caption_only,
                          source=f"run {run}", devices=ev.devices or None)


def load_records(path: str) -> dict[tuple, AblationRecord]:
    """Records by key; a missing file is an empty ablation, a malformed line names its line number."""
    if not exists(path):
        return {}
    records: dict[tuple, AblationRecord] = {}
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            record = AblationRecord.from_json(line, where)
        except RunDirError as err:
            detail = str(err).removeprefix(f"{where}: ").removeprefix("not an ablation record ")
            raise ConfigError(f"{where}: not an ablation record ({detail.strip('()')})") from None
        records[record.key] = record
    return records


def save_records(path: str, records: dict[tuple, AblationRecord]) -> None:
    """All records, sorted by key, written whole (never a half-written file)."""
    lines = [json.dumps(records[key].to_json(), sort_keys=True) for key in sorted(records, key=_sort_key)]
    write_text_atomic(path, "\n".join(lines) + "\n")


def add_record(path: str, record: AblationRecord) -> dict[tuple, AblationRecord]:
    """Add one record and return the file's records, keeping lines other ablations wrote meanwhile.

    Several ablation processes may share one records file (a machine runs two or three rows at a
    time); each addition re-reads the file under a lock, so no process overwrites another's rows.
    """
    with _records_lock(path):
        records = load_records(path)
        records[record.key] = record
        save_records(path, records)
    return records


def _records_lock(path: str):
    """An inter-process lock for a local records file, kept in the temp directory, not beside the file."""
    if not is_local(path):
        return contextlib.nullcontext()  # object stores: last writer wins between concurrent ablations
    digest = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]
    return FileLock(os.path.join(tempfile.gettempdir(), f"raydd-records-{digest}.lock"))


def _sort_key(key: tuple) -> tuple:
    return tuple(str(part) if not isinstance(part, int) else f"{part:08d}" for part in key)
