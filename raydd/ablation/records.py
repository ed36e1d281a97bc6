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
from typing import Any

from filelock import FileLock

from raydd.errors import ConfigError
from raydd.storage import exists, is_local, read_text, write_text_atomic

KEY_FIELDS = ("dataset", "method", "row", "ipc", "seed", "protocol")


def protocol_label(preset: str, sets: list[str]) -> str:
    """What makes two rows comparable: the preset and the config fields set on top of it."""
    return " ".join([preset, *sorted(sets)])


def record_key(record: dict[str, Any]) -> tuple:
    return tuple(record[field] for field in KEY_FIELDS)


def _figure(block: dict[str, Any] | None) -> dict[str, Any] | None:
    if not block:
        return None
    per_model = [float(a) for a in block.get("per_model") or []] or None
    return {"mean": float(block["mean"]), "per_model": per_model,
            "models": len(per_model) if per_model else block.get("models", block.get("n"))}


def record_from_eval(ev: dict[str, Any], *, dataset: str, method: str, row: str, ipc: int, seed: int,
                     protocol: str, run: str) -> dict[str, Any]:
    """The figures of one eval.json that an ablation table needs."""
    caption_only = (ev.get("caption_only") or {}).get("accuracy")
    return {"dataset": dataset, "method": method, "row": row, "ipc": ipc, "seed": seed, "protocol": protocol,
            "accuracy": _figure(ev["accuracy"]), "image_caption": _figure(ev.get("accuracy_image_caption")),
            "caption_only": caption_only, "source": f"run {run}",
            **({"devices": ev["devices"]} if ev.get("devices") else {})}


def load_records(path: str) -> dict[tuple, dict[str, Any]]:
    """Records by key; a missing file is an empty ablation, a malformed line names its line number."""
    if not exists(path):
        return {}
    records: dict[tuple, dict[str, Any]] = {}
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records[record_key(record)] = record
            if not isinstance(record["accuracy"]["mean"], (int, float)):
                raise TypeError("accuracy.mean is not a number")
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{path}, line {number}: not an ablation record ({err})") from None
    return records


def save_records(path: str, records: dict[tuple, dict[str, Any]]) -> None:
    """All records, sorted by key, written whole (never a half-written file)."""
    lines = [json.dumps(records[key], sort_keys=True) for key in sorted(records, key=_sort_key)]
    write_text_atomic(path, "\n".join(lines) + "\n")


def add_record(path: str, record: dict[str, Any]) -> dict[tuple, dict[str, Any]]:
    """Add one record and return the file's records, keeping lines other ablations wrote meanwhile.

    Several ablation processes may share one records file (a machine runs two or three rows at a
    time); each addition re-reads the file under a lock, so no process overwrites another's rows.
    """
    with _records_lock(path):
        records = load_records(path)
        records[record_key(record)] = record
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
