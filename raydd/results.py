"""The evaluation and audit results (eval.json, audit.json) as typed records.

Writers build these and readers go through ``from_json``, so a key is spelled in one place and a
foreign or truncated file fails with a ``RunDirError`` naming it. On disk the JSON keeps the keys it
always had (DESIGN §3) plus ``schema_version``; files from before the version load unchanged. Keys this
version does not know are kept in ``extra`` and written back, so a round trip loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from raydd.artifacts import AUDIT, EVAL, check_schema, parse_object
from raydd.artifacts import field as get
from raydd.errors import RunDirError

SCHEMA_VERSION = 1
NUMBER = (int, float)


@dataclass
class Accuracy:
    """Mean and (population) standard deviation over the evaluation models, and each model's figure."""

    mean: float
    std: float | None = None  # absent in hand-written files
    per_model: list[float] = field(default_factory=list)
    n: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mean": self.mean}
        if self.std is not None:
            out["std"] = self.std
        out["per_model"] = list(self.per_model)
        if self.n is not None:
            out["n"] = self.n
        return out

    @classmethod
    def from_json(cls, data: Any, where: str) -> Accuracy:
        data = parse_object(data, where)
        per_model = get(data, "per_model", list, where) or []
        if not all(isinstance(a, NUMBER) and not isinstance(a, bool) for a in per_model):
            raise RunDirError(f"{where}: 'per_model' should hold numbers only")
        n = get(data, "n", int, where)
        return cls(float(get(data, "mean", NUMBER, where, required=True)), _float(get(data, "std", NUMBER, where)),
                   [float(a) for a in per_model], n)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _extra(data: dict[str, Any], cls: type) -> dict[str, Any]:
    known = {f.name for f in fields(cls)} - {"extra"}
    return {k: v for k, v in data.items() if k not in known}


@dataclass
class EvalResult:
    """One synthetic set (or baseline) under the train-from-scratch protocol: eval.json."""

    accuracy: Accuracy
    model: str | None = None
    cross_arch: dict[str, Accuracy] | None = None  # other architectures, same protocol
    seconds_per_model: float | None = None
    wall_seconds: float | None = None
    devices: list[str] | None = None  # where the models trained (files before this field lack it)
    accuracy_image_caption: Accuracy | None = None  # caption-fused networks, captions at test time
    caption_note: str | None = None  # why accuracy_image_caption is null
    caption_only: dict[str, Any] | None = None  # {"accuracy", "model"}: what captions alone explain
    caption_encoder: str | None = None
    protocol: dict[str, Any] | None = None
    preset: str | None = None
    dataset: str | None = None
    ipc: int | None = None  # null: the full-training-set baseline
    method: str | None = None
    iterations: int | None = None
    baseline: str | None = None  # "random" or "full" for the reference baselines
    total_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    # Written even when null: readers tell "no IPC" (full baseline) and "unknown" apart by them.
    ALWAYS = ("ipc", "method", "iterations")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema_version": self.schema_version, "accuracy": self.accuracy.to_json()}
        for f in fields(self):
            name, value = f.name, getattr(self, f.name)
            if name in ("schema_version", "accuracy", "extra"):
                continue
            if name == "cross_arch" and value is not None:
                value = {arch: acc.to_json() for arch, acc in value.items()}
            elif isinstance(value, Accuracy):
                value = value.to_json()
            keep_null = name in self.ALWAYS or (name == "accuracy_image_caption" and self.caption_note)
            if value is not None or keep_null:
                out[name] = value
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, source: str | bytes | dict[str, Any], where: str = EVAL) -> EvalResult:
        data = _result_object(source, where, "accuracy", "an evaluation result")
        cross = get(data, "cross_arch", dict, where)
        devices = get(data, "devices", list, where)
        fused = data.get("accuracy_image_caption")
        return cls(
            accuracy=Accuracy.from_json(data["accuracy"], f"{where}: accuracy"),
            model=get(data, "model", str, where),
            cross_arch=None if cross is None else
            {arch: Accuracy.from_json(acc, f"{where}: cross_arch.{arch}") for arch, acc in cross.items()},
            seconds_per_model=_float(get(data, "seconds_per_model", NUMBER, where)),
            wall_seconds=_float(get(data, "wall_seconds", NUMBER, where)),
            devices=None if devices is None else [str(d) for d in devices],
            accuracy_image_caption=None if fused is None else
            Accuracy.from_json(fused, f"{where}: accuracy_image_caption"),
            caption_note=get(data, "caption_note", str, where),
            caption_only=get(data, "caption_only", dict, where),
            caption_encoder=get(data, "caption_encoder", str, where),
            protocol=get(data, "protocol", dict, where),
            preset=get(data, "preset", str, where),
            dataset=get(data, "dataset", str, where),
            ipc=get(data, "ipc", int, where),
            method=get(data, "method", str, where),
            iterations=get(data, "iterations", int, where),
            baseline=get(data, "baseline", str, where),
            total_seconds=_float(get(data, "total_seconds", NUMBER, where)),
            extra=_extra(data, cls),
        )


def _result_object(source: str | bytes | dict[str, Any], where: str, key: str, what: str) -> dict[str, Any]:
    """The parsed, version-checked JSON object of a result file, which must hold ``key`` to be ``what``."""
    data = parse_object(source, where)
    check_schema(data, where, SCHEMA_VERSION)
    if key not in data:
        raise RunDirError(f"{where}: not {what} ({key!r} is missing)")
    return data


@dataclass
class AuditResult:
    """A privacy audit of one run directory: audit.json.

    ``attacks`` is {target kind: {attack: figures}}, ``models`` the facts of each kind's targets and
    shadows, ``nearest`` the memorisation figures; their inner layout belongs to ``raydd.audit``.
    """

    attacks: dict[str, Any]
    dataset: str | None = None
    method: str | None = None
    ipc: int | None = None
    models: dict[str, Any] | None = None
    nearest: dict[str, Any] | None = None
    protocol: dict[str, Any] | None = None
    seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema_version": self.schema_version}
        for name in ("dataset", "method", "ipc", "attacks", "models", "nearest", "protocol", "seconds"):
            value = getattr(self, name)
            if value is not None or name in ("method", "ipc"):
                out[name] = value
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, source: str | bytes | dict[str, Any], where: str = AUDIT) -> AuditResult:
        data = _result_object(source, where, "attacks", "an audit result")
        return cls(
            attacks=get(data, "attacks", dict, where, required=True),
            dataset=get(data, "dataset", str, where),
            method=get(data, "method", str, where),
            ipc=get(data, "ipc", int, where),
            models=get(data, "models", dict, where),
            nearest=get(data, "nearest", dict, where),
            protocol=get(data, "protocol", dict, where),
            seconds=_float(get(data, "seconds", NUMBER, where)),
            extra=_extra(data, cls),
        )
