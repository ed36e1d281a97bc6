"""``manifest.json``: what the output holds and how it was made, so it can be used with no other input."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from raydd import __version__
from raydd.data import DatasetSplits
from raydd.data import parquet as schema

from .checks import Component


def build_manifest(data: DatasetSplits | Any, split_names: list[str], image_shape: Sequence[int], counts: dict, *,
                   val_fraction: float, seed: int, captions: bool, segmenter: Component | None,
                   captioner: Component | None, encoder: Component | None, emb_dim: int | None,
                   pipeline: dict[str, Any], rejected: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to use the output (and to know how it was made) without another input.

    ``data``: the loaded splits, or a folder source's plan (the same name, classes, mean/std, flip_ok).
    ``rejected``: rows left out by ``on_bad_row="skip"`` (folder sources only).
    """

    def component(part: Component | None) -> dict[str, str] | None:
        return None if part is None else {"spec": part.spec, "id": part.id}

    return {
        "format": schema.FORMAT,
        "format_version": schema.FORMAT_VERSION,
        "source": data.name,
        "source_options": _source_options(data.name),
        "classes": list(data.class_names),
        "image_size": list(image_shape[:2]),
        "channels": int(image_shape[2]),
        "mean": list(data.mean),
        "std": list(data.std),
        "flip_ok": bool(data.flip_ok),
        "splits": split_names,
        "val_fraction": float(val_fraction),
        "seed": int(seed),
        "counts": counts,
        "partitioning": list(schema.PARTITION_COLUMNS),
        "columns": _column_doc(image_shape),
        "captions": captions,
        "segmenter": component(segmenter),
        "captioner": component(captioner),
        "text_encoder": None if encoder is None else {**component(encoder), "dim": emb_dim},
        "raydd_version": __version__,
        "versions": _versions([segmenter, captioner, encoder]),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pipeline": pipeline,
        **({} if rejected is None else {"rejected": rejected}),
    }


def _versions(components: Sequence[Component | None]) -> dict[str, str]:
    names = ["torch", "ray", "pyarrow", "numpy", "fsspec"]
    names += [p for c in components if c is not None for p in c.packages]
    found = {"python": sys.version.split()[0]}
    for name in dict.fromkeys(names):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def _source_options(name: str) -> dict[str, str]:
    """Settings that change a source's content but are not arguments (the cluttered testbed's env)."""
    if not name.startswith("cluttered-"):
        return {}
    keys = ("RAYDD_CLUTTERED_Q", "RAYDD_CLUTTERED_LIMIT")
    return {key: os.environ[key] for key in keys if os.environ.get(key)}


def _column_doc(image_shape: Sequence[int]) -> dict[str, str]:
    height, width, channels = image_shape
    return {
        "id": "string, unique within the dataset, stable across runs",
        "split": "string partition key (directory split=<name>)",
        "label": "int64 partition key (directory label=<k>), index into classes",
        "class_name": "string",
        "image": f"fixed_shape_tensor uint8 [{height}, {width}, {channels}]",
        "caption": "string, null when the image has none",
        "caption_emb": "fixed_shape_tensor float32 [d], L2-normalised (zeros: no caption); all null without a text encoder",
        "mask": f"fixed_shape_tensor uint8 [{height}, {width}], 1 = object; all null without a segmenter",
    }
