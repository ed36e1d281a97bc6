"""The dataset splits as Arrow rows: the tables the driver builds, the blocks it cuts them into, and
the one schema every written block is given (so every file has the same columns and types).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from raydd.data import DatasetSplits, ImageData
from raydd.data import parquet as schema

BATCHES_PER_BLOCK = 4  # a block is a few batches: fewer blocks cost less scheduling, more keep actors busy


def split_table(data: ImageData, split: str, with_masks: bool) -> pa.Table:
    """One split as Arrow rows, ordered by label so that blocks (and files) hold few partitions."""
    order = np.argsort(data.labels.numpy(), kind="stable")
    labels = data.labels.numpy()[order]
    images = data.images.numpy()[order].transpose(0, 2, 3, 1)  # [N, C, H, W] -> [N, H, W, C]
    captions = data.captions if data.captions is not None else [None] * len(data)
    columns: dict[str, pa.Array] = {
        "id": pa.array([data.ids[i] for i in order], pa.string()),
        "split": pa.array([split] * len(data), pa.string()),
        "label": pa.array(labels, pa.int64()),
        "class_name": pa.array([data.class_names[k] for k in labels], pa.string()),
        "image": schema.tensor_array(images),
        "caption": pa.array([captions[i] for i in order], pa.string()),
    }
    if with_masks:
        columns["mask"] = schema.tensor_array(data.masks.numpy()[order, 0])
    return pa.table(columns)


def cut_blocks(table: pa.Table, actors: int, batch_size: int) -> list[pa.Table]:
    """Contiguous slices: at least two per actor, each a few batches long.

    Cutting on the driver does what ``repartition`` would, without an all-to-all step that needs CPUs.
    """
    rows = table.num_rows
    count = max(2 * actors, math.ceil(rows / (BATCHES_PER_BLOCK * batch_size)))
    count = max(1, min(count, rows))
    bounds = np.linspace(0, rows, count + 1).round().astype(int)
    return [table.slice(start, stop - start) for start, stop in zip(bounds[:-1], bounds[1:]) if stop > start]


def _as_tensor_column(column: pa.ChunkedArray, value_type: pa.DataType,
                      shape: Sequence[int] | None = None) -> pa.ChunkedArray:
    """Re-label a tensor column with the canonical type (the same in every file, whatever produced it).

    ``shape`` None: keep the column's own (the embedding width is only known to the encoder).
    """
    if shape is None:
        shape = getattr(column.type, "shape", None)
        if shape is None:
            shape = np.asarray(column.chunk(0).to_numpy(zero_copy_only=False)[0]).shape
    kind = schema.tensor_type(value_type, shape)
    chunks = []
    for chunk in column.chunks:
        if isinstance(chunk, pa.ExtensionArray) and isinstance(chunk.storage, pa.FixedSizeListArray):
            storage = chunk.storage.cast(kind.storage_type)
        else:  # anything list-like (Ray's own tensor types): go through numpy
            values = np.stack(chunk.to_numpy(zero_copy_only=False)).astype(value_type.to_pandas_dtype())
            storage = schema.tensor_array(values.reshape(len(chunk), *shape)).storage
        chunks.append(pa.ExtensionArray.from_storage(kind, storage))
    return pa.chunked_array(chunks, type=kind)


def conform(table: pa.Table, image_shape: Sequence[int]) -> pa.Table:
    """Give a block exactly the documented columns and types, filling absent ones with nulls."""
    rows = table.num_rows
    height, width = image_shape[:2]
    out = {
        "id": table.column("id").cast(pa.string()),
        "split": table.column("split").cast(pa.string()),
        "label": table.column("label").cast(pa.int64()),
        "class_name": table.column("class_name").cast(pa.string()),
        "image": _as_tensor_column(table.column("image"), pa.uint8(), image_shape),
        "caption": table.column("caption").cast(pa.string()),
    }
    if "caption_emb" in table.column_names:
        out["caption_emb"] = _as_tensor_column(table.column("caption_emb"), pa.float32())
    else:
        out["caption_emb"] = pa.chunked_array([schema.null_tensor_array(pa.float32(), (0,), rows)])
    if "mask" in table.column_names:
        out["mask"] = _as_tensor_column(table.column("mask"), pa.uint8(), (height, width))
    else:
        out["mask"] = pa.chunked_array([schema.null_tensor_array(pa.uint8(), (height, width), rows)])
    return pa.table({name: out[name] for name in schema.COLUMNS})


def select_parts(splits: DatasetSplits, names: Sequence[str]) -> dict[str, ImageData]:
    return {name: getattr(splits, name) for name in names}


def has_masks(parts: dict[str, ImageData]) -> bool:
    return all(data.masks is not None for data in parts.values())


def has_any_caption(parts: dict[str, ImageData]) -> bool:
    return any(c is not None for data in parts.values() for c in (data.captions or []))


def first_missing_caption(parts: dict[str, ImageData]) -> str | None:
    for data in parts.values():
        captions = data.captions if data.captions is not None else [None] * len(data)
        for image_id, caption in zip(data.ids, captions):
            if caption is None or not caption.strip():
                return image_id
    return None


def row_counts(parts: dict[str, ImageData], num_classes: int) -> dict[str, dict[str, Any]]:
    counts = {}
    for name, data in parts.items():
        per_class = np.bincount(data.labels.numpy(), minlength=num_classes) if len(data) else np.zeros(num_classes, int)
        counts[name] = {"total": len(data), "per_class": [int(n) for n in per_class]}
    return counts
