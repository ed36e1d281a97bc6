"""The plan: what the driver decides about a folder source from the check records alone.

The first problem (``fail``) or the rejected rows (``skip``), the class list, the common image size, the
colour mode, the validation carve, the counts and mean/std -- exactly what ``load_dataset`` decides in
one process, on the same rows in the same order, so both give the same dataset. The plan also carries
what the decode tasks need (``decode.py``), so nothing is left on the source object between the passes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raydd.data.imagefolder.loader import VALIDATION_SPLIT, Reference, size_problem
from raydd.data.loader import IMAGEFOLDER
from raydd.data.splits import validation_positions
from raydd.data.stats import mean_std_from_sums
from raydd.errors import DataError

from .columns import check_label_columns, encode_labels
from .scan import scanned_ids, shard_member_id

if TYPE_CHECKING:
    from .ingest import FolderSource

OUT_SPLIT = {"train": "train", VALIDATION_SPLIT: "val", "test": "test"}  # source folder -> written split
ROW_INDEX = np.int32  # row positions in the plan (a source of up to 2**31 rows); half of int64's memory per row


@dataclass
class SourcePlan:
    """Everything the driver decided, from the check records alone; the decode tasks read it too."""

    kind: str  # imagefolder | webdataset | image-parquet
    name: str  # DatasetSplits.name of the same data loaded in-process
    shown: str  # how messages name the dataset: "webdataset /data/shards"
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_shape: tuple[int, int, int]
    has_masks: bool
    labels: dict[str, np.ndarray]  # written split -> class index of each row (int64), in dataset order
    rejected: list[dict[str, str]] = field(default_factory=list)  # only the rejected rows
    rejected_by_split: dict[str, int] = field(default_factory=dict)
    any_caption: bool = False  # some row of the written splits has a caption
    missing_caption: str | None = None  # the first row (written splits, in order) without a real caption
    flip_ok: bool = True
    num_classes: int = 0
    # What the decode tasks need beside the above.
    colour: bool = False  # decode as RGB (some train image has colour) or as one grey channel
    splits: tuple[str, ...] = ()  # the written splits
    label_index: dict[str, int] = field(default_factory=dict)  # a row's label (JSON text) -> class index
    val_ids: pa.Array | None = None  # ids of the train rows carved into the validation split
    rejected_ids: pa.Array | None = None  # ids of the rejected rows (skipped by the decode)

    def __post_init__(self) -> None:
        self.num_classes = len(self.class_names)


def _order(source: FolderSource, scanned: pa.Table) -> np.ndarray:
    """Positions of the scanned rows in dataset order: an imagefolder's listing; a WebDataset's folder, shard,
    key; image Parquet's split, file, row."""
    if source.kind == IMAGEFOLDER:
        return np.argsort(_ints(scanned.column("order")), kind="stable").astype(ROW_INDEX)
    keys = pa.table({"rank": _codes(scanned.column("split"), source.folders, missing=len(source.folders)),
                     "shard": scanned.column("shard"), "key": scanned.column("key")})
    order = pc.sort_indices(keys, sort_keys=[("rank", "ascending"), ("shard", "ascending"),
                                             ("key", "ascending")])
    return order.to_numpy(zero_copy_only=False).astype(ROW_INDEX)


def _reject(on_bad_row: str, rejected: list[dict[str, str]], split: str, row_id: str, file: str, problem: str) -> None:
    if on_bad_row == "fail":
        raise DataError(problem)
    # Every problem message starts with the file it is about (an image, a mask, a shard member).
    named, _, reason = problem.partition(": ")
    if not reason:
        named, reason = file, problem
    rejected.append({"id": row_id, "split": split, "file": named, "reason": reason})


def plan_source(source: FolderSource, scanned: pa.Table, splits: Sequence[str]) -> SourcePlan:
    """The plan of ``source`` from its check records (``scan.scan``), for the written ``splits``."""
    rejected: list[dict[str, str]] = []
    if not scanned.num_rows:
        raise DataError("train/: no usable images")
    # Columns stay in scan order; ``order`` maps a dataset position to its scanned row.
    order = _order(source, scanned)

    def text(name: str, i: int) -> str | None:
        return scanned.column(name)[int(order[i])].as_py()

    def row_id(i: int) -> str:
        return text("id", i) or shard_member_id(text("shard", i), text("key", i))

    def image_name(i: int) -> str:
        return text("image_name", i) or row_id(i) + (text("image_suffix", i) or "")

    def column(values: np.ndarray) -> np.ndarray:
        return values[order]

    kept = ~column(_bools(pc.is_valid(scanned.column("problem"))))
    for i in np.flatnonzero(~kept):
        _reject(source.on_bad_row, rejected, text("split", i), row_id(i), image_name(i), text("problem", i))
    folder_of = column(_codes(scanned.column("split"), source.folders))
    is_train = folder_of == 0

    # One size for all, unless resizing: the reference is the first train image, as in-process.
    size = source.request.image_size
    first_train = np.flatnonzero(kept & is_train)
    if not len(first_train):
        raise DataError("train/: no usable images" + (f" ({len(rejected)} rejected)" if rejected else ""))
    widths, heights = column(_ints(scanned.column("width"))), column(_ints(scanned.column("height")))
    if size is None:
        first = int(first_train[0])
        reference = Reference((int(widths[first]), int(heights[first])), image_name(first))
        odd = kept & ((widths != reference.size[0]) | (heights != reference.size[1]))
        for i in np.flatnonzero(odd):
            problem = size_problem(image_name(i), (int(widths[i]), int(heights[i])), reference)
            _reject(source.on_bad_row, rejected, text("split", i), row_id(i), image_name(i), problem)
        kept &= ~odd
        height, width = reference.size[1], reference.size[0]
    else:
        height = width = size

    positions = {folder: np.flatnonzero(kept & (folder_of == k)) for k, folder in enumerate(source.folders)}
    if not len(positions["train"]):
        raise DataError("train/: no usable images")
    has_mask = column(_bools(scanned.column("has_mask").fill_null(False)))
    label_codes, label_values = encode_labels({"all": scanned.column("label")})
    label_codes = column(label_codes["all"])
    plan = check_label_columns({f: label_codes[p] for f, p in positions.items()}, label_values,
                               {f: has_mask[p] for f, p in positions.items()}, source.listed,
                               lambda folder, i: row_id(positions[folder][i]), "mask")
    grey = column(_bools(scanned.column("grey").fill_null(False)))
    colour = not bool(grey[positions["train"]].all())
    channels = 3 if colour else 1

    labels = plan.labels
    is_val = np.zeros(len(positions["train"]), dtype=bool)
    if VALIDATION_SPLIT not in positions:
        is_val[validation_positions(labels["train"], len(plan.class_names), source.request.val_fraction,
                                    source.request.seed)] = True
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "val": [], "test": []}
    for folder in source.folders:
        if folder == "train":
            parts["train"].append((positions[folder][~is_val], labels[folder][~is_val]))
            parts["val"].append((positions[folder][is_val], labels[folder][is_val]))
        else:
            parts[OUT_SPLIT[folder]].append((positions[folder], labels[folder]))
    out_positions = {split: np.concatenate([p for p, _ in parts[split]] or [np.zeros(0, np.int64)])
                     for split in parts}
    out_labels = {split: np.concatenate([k for _, k in parts[split]] or [np.zeros(0, np.int64)]).astype(np.int64)
                  for split in parts}

    # mean/std of the train split, as the model will see it (grey rows of a colour dataset as RGB).
    in_train = np.zeros(scanned.num_rows, dtype=bool)  # by scanned row: sums do not depend on order
    in_train[order[out_positions["train"]]] = True
    count = height * width * len(out_positions["train"])
    total = _channel_totals(scanned.column("sums"), in_train, channels, colour, count)
    total_sq = _channel_totals(scanned.column("squares"), in_train, channels, colour, count * 255)
    mean, std = mean_std_from_sums(total, total_sq, count)

    has_caption = column(_bools(scanned.column("has_caption").fill_null(False)))
    missing = ~has_caption | column(_bools(scanned.column("caption_empty").fill_null(True)))
    chosen = [out_positions[split] for split in splits]
    written = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    first_missing = _first(missing[written])

    rejected_by_split = {folder: sum(r["split"] == folder for r in rejected) for folder in source.folders}
    return SourcePlan(
        kind=source.kind, name=source.name, shown=source.shown, class_names=list(plan.class_names), mean=mean,
        std=std, image_shape=(height, width, channels), has_masks=plan.masks,
        labels={split: out_labels[split] for split in splits},
        rejected=rejected, rejected_by_split=rejected_by_split,
        any_caption=bool(has_caption[written].any()),
        missing_caption=None if first_missing is None else row_id(written[first_missing]),
        colour=colour, splits=tuple(splits),
        label_index=_label_index_of(plan.class_names, plan.names_are_labels),
        val_ids=scanned_ids(scanned, pa.array(order[positions["train"][is_val]], pa.int64())),
        rejected_ids=pa.array(sorted({r["id"] for r in rejected}), pa.string()),
    )


def _label_index_of(class_names: list[str], names_are_labels: bool) -> dict[str, int]:
    if names_are_labels:
        return {json.dumps(name): i for i, name in enumerate(class_names)}
    return {json.dumps(i): i for i in range(len(class_names))}


def _bools(values) -> np.ndarray:
    return np.asarray(values.to_numpy(zero_copy_only=False) if hasattr(values, "to_numpy") else values, dtype=bool)


def _ints(values) -> np.ndarray:
    """A column of small integers (sizes, listing positions) as int32: the plan holds a few per row."""
    return np.asarray(pc.fill_null(values, 0).to_numpy(zero_copy_only=False), dtype=np.int32)


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def _codes(values, names: Sequence[str], missing: int = -1) -> np.ndarray:
    """Each value's index in ``names`` (``missing``: none), without a Python object per row."""
    encoded = pc.dictionary_encode(values).combine_chunks()
    if not len(encoded):
        return np.zeros(0, np.int64)
    index = {name: i for i, name in enumerate(names)}
    codes = np.array([index.get(v, missing) for v in encoded.dictionary.to_pylist()], dtype=np.int32)
    return codes[encoded.indices.to_numpy(zero_copy_only=False)]


def _channel_totals(lists, selected: np.ndarray, channels: int, colour: bool, bound: int) -> list[int]:
    """Per-channel totals over the ``selected`` rows of per-row lists (one value per channel; a grey row of a
    colour set counts thrice), exact."""
    exact = bound * 255 < 2 ** 62  # int64 cannot overflow; else Python integers
    totals = [0] * channels
    chunks = lists.chunks if isinstance(lists, pa.ChunkedArray) else [lists]
    start = 0
    for chunk in chunks:
        rows = selected[start:start + len(chunk)]
        start += len(chunk)
        if not rows.any():
            continue
        offsets = chunk.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        lengths = np.diff(offsets)[rows]
        starts = offsets[:-1][rows]
        values = chunk.values.to_numpy(zero_copy_only=False)
        replicate = (lengths == 1) if colour else np.zeros(len(lengths), dtype=bool)
        width = np.where(replicate, 3, lengths)
        for c in range(channels):
            take = width > c
            picked = values[starts[take] + np.where(replicate[take], 0, c)]
            totals[c] += int(picked.sum(dtype=np.int64)) if exact else sum(int(v) for v in picked)
    return totals
