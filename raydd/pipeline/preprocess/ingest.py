"""Folder sources (imagefolder, WebDataset shards) read, checked and decoded by Ray Data tasks.

The driver never decodes an image and never holds pixels: it holds the rows' metadata only.

1. **Scan.** Tasks read every sample (an imagefolder's files listed in its ``metadata.jsonl``, which
   the driver reads and checks first; a WebDataset's shards through ``ray.data.read_webdataset``),
   decode and check it, and send back one small record per row: its label and caption state, its
   size and colour kind, its pixel sums, or the problem that makes it unusable.
2. **Plan.** The driver, from those records alone: the first problem (``fail``) or the rejected rows
   (``skip``), the class list, the common image size, the colour mode, the validation carve, the counts
   and mean/std -- exactly what ``load_dataset`` decides in one process, on the same rows in the same
   order, so both give the same dataset.
3. **Decode.** Tasks read and decode the rows again into the preprocessed schema, and the pipeline
   streams them through the model stages to Parquet.

Images are decoded twice (scan and decode) so that nothing is written before every row was checked,
and so that the validation split and the counts are known before the first row is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from raydd.data.imagefolder.loader import (VALIDATION_SPLIT, Reference, check_rows, listed_classes, open_root,
                                           read_imagefolder_rows, size_problem, split_folders)
from raydd.data.imagefolder.pixels import decode_pair, grey_to_rgb
from raydd.data.imagefolder.storage import DatasetRoot
from raydd.data.registry import SourceRequest
from raydd.data.splits import validation_positions
from raydd.data.stats import mean_std_from_sums, pixel_sums
from raydd.data.webdataset import MASK_SUFFIX, SOURCE_NAME as WEBDATASET, parse_sample, shard_paths
from raydd.errors import ConfigError, DataError

ON_BAD_ROW = ("fail", "skip")
OUT_SPLIT = {"train": "train", VALIDATION_SPLIT: "val", "test": "test"}  # source folder -> written split
TASK_CPUS = 0.5  # read/scan/decode tasks: fractional, so they fit beside the actor pools
DECODE_MEMORY = 512 * 1024 * 1024  # per decode task: a worker with its libraries (~400 MB) and a block of pixels

# One sample as the tasks pass it on, whatever the source.
_SAMPLE = pa.schema([
    ("id", pa.string()), ("split", pa.string()), ("order", pa.int64()), ("shard", pa.string()), ("key", pa.string()),
    ("image_name", pa.string()), ("mask_name", pa.string()), ("image", pa.binary()), ("mask", pa.binary()),
    ("label", pa.string()), ("has_caption", pa.bool_()), ("caption", pa.string()), ("problem", pa.string()),
])
_SCANNED = ("id", "split", "order", "shard", "key", "image_name", "mask_name", "label", "has_caption",
            "caption_empty", "problem", "width", "height", "grey", "sums", "squares")


def check_on_bad_row(value: str) -> str:
    if value not in ON_BAD_ROW:
        raise ConfigError(f"on_bad_row must be one of {', '.join(ON_BAD_ROW)}, got {value!r}")
    return value


# ----------------------------------------------------------------------------- the driver's view of a row


@dataclass(frozen=True)
class Row:
    """A scanned row: metadata only. Shaped like a metadata row, so the imagefolder checks apply."""

    id: str
    split: str  # source folder: train, validation, test
    image_path: str  # how messages name the image: train/cat/0.png, train/00000.tar:000012.png
    mask_path: str | None
    label: str | int
    has_caption: bool
    caption: str | None  # "" (empty) or "." (present): the text itself stays on the cluster
    size: tuple[int, int]
    grey: bool
    sums: tuple[int, ...]
    squares: tuple[int, ...]
    MASK_FIELD = "mask"

    @property
    def where(self) -> str:
        return self.id if ":" in self.id else self.image_path


@dataclass
class SourcePlan:
    """Everything the driver decided, from metadata alone; the decode tasks get ``task_args``."""

    kind: str  # imagefolder | webdataset
    name: str  # DatasetSplits.name of the same data loaded in-process
    shown: str  # how messages name the dataset: "webdataset /data/shards"
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_shape: tuple[int, int, int]
    has_masks: bool
    rows: dict[str, list[Row]]  # written split -> its rows, in dataset order
    rejected: list[dict[str, str]] = field(default_factory=list)
    rejected_by_split: dict[str, int] = field(default_factory=dict)
    labels: dict[str, list[int]] = field(default_factory=dict)  # written split -> class index of each row
    flip_ok: bool = True
    num_classes: int = 0

    def __post_init__(self) -> None:
        self.num_classes = len(self.class_names)


# ----------------------------------------------------------------------------- the source's samples on Ray


def _imagefolder_samples(root: DatasetRoot, rows: Sequence[Any], labels: Sequence[str], orders: Sequence[int],
                         blocks: int):
    """A dataset of the listed files' metadata (small blocks, built by the driver) that tasks fill with bytes."""
    import ray.data

    table = pa.table({
        "id": pa.array([r.id for r in rows], pa.string()),
        "split": pa.array([r.split for r in rows], pa.string()),
        "order": pa.array(orders, pa.int64()),
        "image_name": pa.array([r.image_path for r in rows], pa.string()),
        "mask_name": pa.array([r.mask_path for r in rows], pa.string()),
        "label": pa.array(labels, pa.string()),
        "has_caption": pa.array([r.has_caption for r in rows], pa.bool_()),
        "caption": pa.array([r.caption for r in rows], pa.string()),
    })
    bounds = np.linspace(0, table.num_rows, max(1, min(blocks, table.num_rows)) + 1).round().astype(int)
    parts = [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    return ray.data.from_arrow(parts).map_batches(
        _read_files, fn_kwargs={"root_url": root.url}, batch_format="pyarrow", batch_size=None,
        num_cpus=TASK_CPUS, udf_modifying_row_count=False)


def _read_files(batch: pa.Table, root_url: str) -> pa.Table:
    """Task: the bytes of each row's image and mask; a missing file becomes the row's problem."""
    root = DatasetRoot(root_url)
    images, masks, problems = [], [], []
    for image_name, mask_name in zip(batch.column("image_name").to_pylist(), batch.column("mask_name").to_pylist()):
        try:
            images.append(root.read(image_name, what="image file"))
            masks.append(None if mask_name is None else root.read(mask_name, what="mask file"))
            problems.append(None)
        except DataError as error:
            images.append(None)
            masks.append(None)
            problems.append(str(error))
    columns = {name: batch.column(name) for name in batch.column_names}
    columns.update(shard=pa.nulls(batch.num_rows, pa.string()), key=pa.nulls(batch.num_rows, pa.string()),
                   image=pa.array(images, pa.binary()), mask=pa.array(masks, pa.binary()),
                   problem=pa.array(problems, pa.string()))
    return pa.table({name: columns[name] for name in _SAMPLE.names}, schema=_SAMPLE)


def _webdataset_samples(root: DatasetRoot, shards: Sequence[str]):
    import ray.data

    from .output import Output

    _, filesystem = Output.parse(root.url).ray_target()  # None locally, else pyarrow's fsspec adapter
    paths = [f"{root.path}/{shard}" for shard in shards]
    dataset = ray.data.read_webdataset(paths, filesystem=filesystem, decoder=None, num_cpus=TASK_CPUS)
    return dataset.map_batches(_shard_samples, batch_format="pandas", batch_size=None, num_cpus=TASK_CPUS,
                               udf_modifying_row_count=False)


def _present(value: Any) -> bytes | None:
    return value if isinstance(value, (bytes, bytearray)) else None


def _shard_samples(batch) -> pa.Table:
    """Task: Ray's WebDataset rows (``__key__``, ``__url__``, one column per member extension) -> samples."""
    columns: dict[str, list] = {name: [] for name in _SAMPLE.names}
    suffix_columns = [c for c in batch.columns if not str(c).startswith("__")]
    for record in batch.to_dict("records"):
        url = str(record["__url__"]).replace("\\", "/")
        shard = "/".join(url.rsplit("/", 2)[-2:])  # split folder / shard name, as listed by shard_paths
        split, key = shard.split("/", 1)[0], str(record["__key__"])
        suffixes = {c: _present(record.get(c)) for c in suffix_columns}
        values = dict(id=f"{shard}:{key}", split=split, order=None, shard=shard, key=key, label=None,
                      has_caption=False, caption=None, image=None, mask=None, problem=None,
                      image_name=f"{shard}:{key}", mask_name=None)
        try:
            row = parse_sample(split, shard, key, suffixes)
            values.update(image_name=row.image_path, mask_name=row.mask_path, label=json.dumps(row.label),
                          has_caption=row.has_caption, caption=row.caption, image=suffixes[row.image_suffix],
                          mask=suffixes.get(MASK_SUFFIX))
        except DataError as error:
            values["problem"] = str(error)
        for name in _SAMPLE.names:
            columns[name].append(values[name])
    return pa.table({name: pa.array(columns[name], _SAMPLE.field(name).type) for name in _SAMPLE.names},
                    schema=_SAMPLE)


# ----------------------------------------------------------------------------- pass 1: scan


def _scan(batch: pa.Table, image_size: int | None) -> pa.Table:
    """Task: decode and check each sample; keep only what the driver needs to decide."""
    out: dict[str, list] = {name: [] for name in _SCANNED}
    data = batch.to_pydict()
    for i in range(batch.num_rows):
        problem, size, grey, sums, squares = data["problem"][i], None, None, None, None
        if problem is None:
            try:
                decoded = decode_pair(data["image"][i], data["image_name"][i], data["mask"][i], data["mask_name"][i],
                                      None, image_size)
                size, grey = decoded.size, decoded.grey
                sums, squares = pixel_sums(decoded.pixels)
            except DataError as error:
                problem = str(error)
        caption = data["caption"][i]
        for name in ("id", "split", "order", "shard", "key", "image_name", "mask_name", "label", "has_caption"):
            out[name].append(data[name][i])
        out["caption_empty"].append(caption is None or not caption.strip())
        out["problem"].append(problem)
        out["width"].append(None if size is None else size[0])
        out["height"].append(None if size is None else size[1])
        out["grey"].append(grey)
        out["sums"].append(sums)
        out["squares"].append(squares)
    return pa.table(out)


def _collect(dataset) -> pa.Table:
    import ray

    tables = [t for t in ray.get(dataset.to_arrow_refs()) if t.num_rows]
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


# ----------------------------------------------------------------------------- pass 2: decode


def _decode(batch: pa.Table, *, shown: str, image_size: int | None, colour: bool, masks: bool,
            class_names: list[str], label_index: dict[str, int], val_ids: frozenset[str],
            keep_ids: frozenset[str] | None, drop_ids: frozenset[str], splits: tuple[str, ...],
            image_shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Task: the rows the driver kept, decoded into the preprocessed schema's columns."""
    data = batch.to_pydict()
    rows = {"id": [], "split": [], "label": [], "class_name": [], "image": [], "caption": [], "mask": []}
    for i in range(batch.num_rows):
        row_id = data["id"][i]
        if row_id in drop_ids or (keep_ids is not None and row_id not in keep_ids):
            continue
        split = "val" if row_id in val_ids else OUT_SPLIT[data["split"][i]]
        if split not in splits:
            continue
        try:
            if data["problem"][i] is not None:
                raise DataError(data["problem"][i])
            decoded = decode_pair(data["image"][i], data["image_name"][i], data["mask"][i] if masks else None,
                                  data["mask_name"][i], "RGB" if colour else "L", image_size)
        except DataError as error:  # it passed the scan: the file changed, or storage failed, since
            raise DataError(f"{shown}: {error}") from None
        pixels = decoded.pixels
        pixels = (grey_to_rgb(pixels) if pixels.ndim == 2 else pixels) if colour else pixels[..., None]
        label = label_index[data["label"][i]]
        rows["id"].append(row_id)
        rows["split"].append(split)
        rows["label"].append(label)
        rows["class_name"].append(class_names[label])
        rows["image"].append(pixels)
        rows["caption"].append(data["caption"][i] if data["has_caption"][i] else None)
        rows["mask"].append(decoded.mask)
    out = {
        "id": np.array(rows["id"], dtype=object),
        "split": np.array(rows["split"], dtype=object),
        "label": np.array(rows["label"], dtype=np.int64),
        "class_name": np.array(rows["class_name"], dtype=object),
        "caption": np.array(rows["caption"], dtype=object),
    }
    height, width, channels = image_shape
    out["image"] = np.stack(rows["image"]) if rows["image"] else np.zeros((0, height, width, channels), np.uint8)
    if masks:
        out["mask"] = np.stack(rows["mask"]) if rows["mask"] else np.zeros((0, height, width), np.uint8)
    return out


# ----------------------------------------------------------------------------- the driver


class FolderSource:
    """An imagefolder or WebDataset folder, on its way through Ray: scan, plan, decode."""

    def __init__(self, kind: str, request: SourceRequest, on_bad_row: str) -> None:
        self.kind = kind
        self.request = request
        self.on_bad_row = check_on_bad_row(on_bad_row)
        self.root = open_root(request, kind)
        self.shown = f"{kind} {self.root.display}"
        self.name = f"{kind}:{self.root.display}"
        self.folders: list[str] = []
        self.listed: list[str] | None = None
        self.metadata_rows: dict[str, list] = {}
        self.shards: list[str] = []
        with self._named():
            self.listed = listed_classes(self.root)
            self.folders = split_folders(self.root)
            if kind == WEBDATASET:
                self.shards = [s for split in self.folders for s in shard_paths(self.root, split)]
            else:
                # The metadata is small: read and checked here, as load_dataset does, before Ray starts.
                self.metadata_rows = read_imagefolder_rows(self.root)
                check_rows(self.metadata_rows, self.listed, require_captions=False)

    def _named(self):
        """DataErrors raised here say once which dataset they are about (as load_dataset's do)."""
        shown = self.shown

        class _Prefix:
            def __enter__(self):
                return self

            def __exit__(self, kind, error, traceback):
                if isinstance(error, DataError) and not str(error).startswith(shown):
                    raise DataError(f"{shown}: {error}") from None
                return False

        return _Prefix()

    def has_any_caption(self) -> bool:
        """Before Ray: whether an imagefolder's metadata gives any row a caption (a WebDataset's: not known yet)."""
        return any(row.has_caption for rows in self.metadata_rows.values() for row in rows)

    def first_missing_caption(self, splits: Sequence[str]) -> str | None:
        """Before Ray: an imagefolder row (of the folders feeding ``splits``) without a caption."""
        wanted = {folder for folder, out in OUT_SPLIT.items() if out in splits}
        if "val" in splits and VALIDATION_SPLIT not in self.folders:
            wanted.add("train")
        for folder in self.folders:
            for row in self.metadata_rows.get(folder, []) if folder in wanted else []:
                if not row.has_caption or row.caption is None or not row.caption.strip():
                    return row.id
        return None

    def samples(self, blocks: int):
        """The source's rows as a Ray dataset of samples (bytes included)."""
        if self.kind == WEBDATASET:
            return _webdataset_samples(self.root, self.shards)
        rows = [row for folder in self.folders for row in self.metadata_rows[folder]]
        return _imagefolder_samples(self.root, rows, [json.dumps(r.label) for r in rows], list(range(len(rows))),
                                    blocks)

    # -- pass 1 and the plan

    def scan(self, blocks: int, show_progress: bool) -> pa.Table:
        from .execute import data_context, ray_errors

        with data_context(show_progress), ray_errors(self.shown):
            dataset = self.samples(blocks).map_batches(
                _scan, fn_kwargs={"image_size": self.request.image_size}, batch_format="pyarrow", batch_size=None,
                num_cpus=TASK_CPUS, udf_modifying_row_count=False)
            return _collect(dataset)

    def plan(self, scanned: pa.Table, splits: Sequence[str]) -> SourcePlan:
        with self._named():
            return self._plan(scanned, splits)

    def _rows_in_order(self, scanned: pa.Table) -> list[tuple[Row | None, str | None]]:
        data = scanned.to_pydict() if scanned.num_rows else {name: [] for name in _SCANNED}
        rank = {folder: i for i, folder in enumerate(self.folders)}
        items = []
        for i in range(len(data["id"])):
            if self.kind == WEBDATASET:
                order = (rank.get(data["split"][i], len(rank)), data["shard"][i], data["key"][i])
            else:
                order = (0, "", data["order"][i])
            problem = data["problem"][i]
            row = None
            if problem is None:
                label = json.loads(data["label"][i])
                caption = ("" if data["caption_empty"][i] else ".") if data["has_caption"][i] else None
                row = Row(data["id"][i], data["split"][i], data["image_name"][i], data["mask_name"][i], label,
                          bool(data["has_caption"][i]), caption, (data["width"][i], data["height"][i]),
                          bool(data["grey"][i]), tuple(data["sums"][i]), tuple(data["squares"][i]))
            items.append((order, data["id"][i], data["split"][i], data["image_name"][i], row, problem))
        items.sort(key=lambda item: item[0])
        return items

    def _reject(self, rejected: list[dict[str, str]], split: str, row_id: str, file: str, problem: str) -> None:
        if self.on_bad_row == "fail":
            raise DataError(problem)
        # Every problem message starts with the file it is about (an image, a mask, a shard member).
        named, _, reason = problem.partition(": ")
        if not reason:
            named, reason = file, problem
        rejected.append({"id": row_id, "split": split, "file": named, "reason": reason})

    def _plan(self, scanned: pa.Table, splits: Sequence[str]) -> SourcePlan:
        rejected: list[dict[str, str]] = []
        kept: list[Row] = []
        for _, row_id, split, file, row, problem in self._rows_in_order(scanned):
            if row is None:
                self._reject(rejected, split, row_id, file, problem)
            else:
                kept.append(row)

        # One size for all, unless resizing: the reference is the first train image, as in-process.
        size = self.request.image_size
        train_rows = [r for r in kept if r.split == "train"]
        if not train_rows:
            raise DataError("train/: no usable images" + (f" ({len(rejected)} rejected)" if rejected else ""))
        if size is None:
            reference = Reference(train_rows[0].size, train_rows[0].image_path)
            sized = []
            for row in kept:
                problem = size_problem(row.image_path, row.size, reference)
                if problem is None:
                    sized.append(row)
                else:
                    self._reject(rejected, row.split, row.id, row.image_path, problem)
            kept = sized
            height, width = reference.size[1], reference.size[0]
        else:
            height = width = size

        by_folder = {folder: [r for r in kept if r.split == folder] for folder in self.folders}
        if not by_folder["train"]:
            raise DataError("train/: no usable images")
        plan = check_rows(by_folder, self.listed, require_captions=False)
        colour = not all(r.grey for r in by_folder["train"])
        channels = 3 if colour else 1

        labels = {folder: np.asarray(plan.labels[folder], dtype=np.int64) for folder in self.folders}
        out_rows: dict[str, list[tuple[Row, int]]] = {"train": [], "val": [], "test": []}
        if VALIDATION_SPLIT in by_folder:
            val_positions: set[int] = set()
        else:
            val_positions = set(validation_positions(labels["train"], len(plan.class_names),
                                                     self.request.val_fraction, self.request.seed).tolist())
        for folder in self.folders:
            for position, (row, label) in enumerate(zip(by_folder[folder], labels[folder].tolist())):
                split = "val" if folder == "train" and position in val_positions else OUT_SPLIT[folder]
                out_rows[split].append((row, label))

        # mean/std of the train split, as the model will see it (grey rows of a colour dataset as RGB).
        total, total_sq, count = [0] * channels, [0] * channels, 0
        for row, _ in out_rows["train"]:
            sums, squares = row.sums, row.squares
            if colour and len(sums) == 1:
                sums, squares = sums * 3, squares * 3
            total = [a + b for a, b in zip(total, sums)]
            total_sq = [a + b for a, b in zip(total_sq, squares)]
            count += height * width
        mean, std = mean_std_from_sums(total, total_sq, count)

        rejected_by_split = {folder: sum(r["split"] == folder for r in rejected) for folder in self.folders}
        self._labels = plan.class_names
        self._colour = colour
        self._val_ids = frozenset(row.id for row, _ in out_rows["val"] if row.split == "train")
        self._rejected_ids = frozenset(r["id"] for r in rejected)
        self._splits = tuple(splits)
        self._label_index = self._label_index_of(plan.class_names, by_folder["train"])
        result = SourcePlan(
            kind=self.kind, name=self.name, shown=self.shown, class_names=list(plan.class_names), mean=mean, std=std,
            image_shape=(height, width, channels), has_masks=plan.masks,
            rows={split: [row for row, _ in out_rows[split]] for split in splits},
            rejected=rejected, rejected_by_split=rejected_by_split,
            labels={split: [label for _, label in out_rows[split]] for split in splits},
        )
        self._image_shape = result.image_shape
        return result

    @staticmethod
    def _label_index_of(class_names: list[str], train_rows: Sequence[Row]) -> dict[str, int]:
        kind = type(train_rows[0].label)
        if kind is str:
            return {json.dumps(name): i for i, name in enumerate(class_names)}
        return {json.dumps(i): i for i in range(len(class_names))}

    # -- pass 2

    def decoded(self, plan: SourcePlan, with_masks: bool, blocks: int):
        """The kept rows of the chosen splits, decoded by tasks into the preprocessed schema."""
        kwargs = {
            "shown": self.shown, "image_size": self.request.image_size, "colour": self._colour, "masks": with_masks,
            "class_names": list(plan.class_names), "label_index": self._label_index, "val_ids": self._val_ids,
            "keep_ids": None, "drop_ids": self._rejected_ids, "splits": self._splits,
            "image_shape": self._image_shape,
        }
        # The memory reservation (a block of decoded images) also keeps Ray Data from fusing the decoding
        # into the first actor pool: decoding then scales with the cluster's CPUs, not with the model actors.
        return self.samples(blocks).map_batches(_decode, fn_kwargs=kwargs, batch_format="pyarrow", batch_size=None,
                                                num_cpus=TASK_CPUS, memory=DECODE_MEMORY)


def rejected_lines(rejected: Sequence[dict[str, str]]) -> str:
    return "".join(json.dumps({"file": r["file"], "reason": r["reason"], "id": r["id"], "split": r["split"]}) + "\n"
                   for r in rejected)


__all__ = ["FolderSource", "ON_BAD_ROW", "SourcePlan", "check_on_bad_row", "rejected_lines"]
