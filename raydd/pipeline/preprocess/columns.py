"""``check_rows`` on columns: the driver's checks of labels and masks without one Python object per row.

A split folder's rows come as Arrow/numpy columns: ``label`` (the label as JSON: ``"cat"`` or ``3``),
``has_mask`` (bool). The checks run in the order ``check_rows`` runs them and raise the same message for
the same first row; ``where(folder, i)`` names the i-th row of a folder as the messages do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raydd.data.imagefolder.classes import CLASSES_FILE
from raydd.data.imagefolder.metadata import METADATA_FILE
from raydd.errors import DataError


@dataclass(frozen=True)
class ColumnPlan:
    class_names: list[str]
    labels: dict[str, np.ndarray]  # folder -> class index of each row (int64)
    names_are_labels: bool  # labels are class names (else indices)
    masks: bool


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def encode_labels(labels: dict[str, pa.Array | pa.ChunkedArray]) -> tuple[dict[str, np.ndarray], list]:
    """Each folder's labels (JSON text) as codes into one list of distinct label values."""
    folders = list(labels)
    chunks = [c for f in folders for c in (labels[f].chunks if isinstance(labels[f], pa.ChunkedArray) else [labels[f]])]
    encoded = pc.dictionary_encode(pa.chunked_array(chunks, pa.string())).combine_chunks()
    values = [json.loads(v) for v in encoded.dictionary.to_pylist()]  # distinct labels: few
    codes_all = pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False).astype(np.int32)  # null: unused
    bounds = np.cumsum([0, *(len(labels[f]) for f in folders)])
    return {f: codes_all[bounds[i]:bounds[i + 1]] for i, f in enumerate(folders)}, values


def check_label_columns(codes: dict[str, np.ndarray], values: list, has_mask: dict[str, np.ndarray],
                        listed: list[str] | None, where: Callable[[str, int], str], mask_field: str) -> ColumnPlan:
    """``codes``: each folder's labels as indices into ``values`` (the distinct labels), train first."""
    folders = list(codes)
    train = codes["train"]

    # All labels names, or all integers.
    is_name = np.array([isinstance(v, str) for v in values], dtype=bool)
    kind_name = bool(is_name[train[0]])
    for folder in folders:
        at = _first(is_name[codes[folder]] != kind_name)
        if at is not None:
            expected = "class names (strings)" if kind_name else "integers"
            label = values[codes[folder][at]]
            raise DataError(f"{where(folder, at)}: label {label!r} but {where('train', 0)} makes labels {expected}")

    train_values = np.unique(train)
    if listed is not None:
        if kind_name:
            bad = np.array([v not in listed for v in values], dtype=bool)
        else:
            bad = np.array([isinstance(v, int) and v >= len(listed) for v in values], dtype=bool)
        at = _first(bad[train])
        if at is not None:
            label = values[train[at]]
            if kind_name:
                raise DataError(f"{where('train', at)}: label {label!r} is not listed in {CLASSES_FILE}")
            raise DataError(f"{where('train', at)}: label {label} is out of range for the {len(listed)} names in "
                            f"{CLASSES_FILE}")
        names = list(listed)
    elif kind_name:
        names = sorted({values[c] for c in train_values})
    else:
        names = [str(i) for i in range(max(values[c] for c in train_values) + 1)]

    seen = {values[c] for c in train_values}
    for index, name in enumerate(names):
        if (name if kind_name else index) not in seen:
            raise DataError(f"train/{METADATA_FILE}: class {name!r} has no train images; every class needs at least one")

    index_of = {name: i for i, name in enumerate(names)}
    known = np.array([v in seen for v in values], dtype=bool)
    index = np.array([(index_of[v] if isinstance(v, str) else v) if v in seen else -1 for v in values], dtype=np.int32)
    out = {}
    for folder in folders:
        at = _first(~known[codes[folder]])
        if at is not None:
            label = values[codes[folder][at]]
            raise DataError(f"{where(folder, at)}: unknown label {label!r}, not seen in the train split")
        out[folder] = index[codes[folder]]

    # Masks: all or nothing.
    with_mask = next(((f, at) for f in folders if (at := _first(has_mask[f])) is not None), None)
    masks = with_mask is not None
    if masks:
        for folder in folders:
            at = _first(~has_mask[folder])
            if at is not None:
                raise DataError(f"{where(folder, at)}: row has no {mask_field} but other rows do "
                                f"(e.g. {where(*with_mask)})")
    return ColumnPlan(names, out, kind_name, masks)


__all__ = ["ColumnPlan", "check_label_columns", "encode_labels"]
