"""Folder sources (imagefolder, WebDataset shards, image Parquet) read, checked and decoded by Ray Data tasks.

The driver never decodes an image and never holds pixels: it holds the rows' metadata only.

1. **Scan.** Tasks read every sample (an imagefolder's files listed in its ``metadata.jsonl``, which
   the driver reads and checks first; a WebDataset's shards streamed by Ray Data read tasks (``ShardSamples``); image
   Parquet files one per task, the driver reading one file's footer for the class names),
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raydd.data.imagefolder.loader import (VALIDATION_SPLIT, Reference, listed_classes, open_root, size_problem,
                                           split_folders)
from raydd.data.imagefolder.metadata import METADATA_FILE, MetadataRow, parse_metadata_columns
from raydd.data.imagefolder.pixels import decode_pair, grey_to_rgb
from raydd.data.imagefolder.storage import DatasetRoot
from raydd.data.registry import SourceRequest
from raydd.data.splits import validation_positions
from raydd.data.stats import mean_std_from_sums, pixel_sums
from raydd.data.image_parquet import SOURCE_NAME as IMAGE_PARQUET, file_columns, iter_tables, parse_row, \
    read_schema_names, split_files
from raydd.data.webdataset import MASK_SUFFIX, SOURCE_NAME as WEBDATASET, parse_sample, shard_paths
from raydd.errors import ConfigError, DataError

from .columns import check_label_columns, encode_labels

ON_BAD_ROW = ("fail", "skip")
IMAGEFOLDER = "imagefolder"
OUT_SPLIT = {"train": "train", VALIDATION_SPLIT: "val", "test": "test"}  # source folder -> written split
TASK_CPUS = 0.5  # read/scan/decode tasks: fractional, so they fit beside the actor pools
PARQUET_ROWS = 256  # image Parquet rows a task holds at once (a Hugging Face file can be gigabytes)
ROW_INDEX = np.int32  # row positions in the plan (a source of up to 2**31 rows); half of int64's memory per row
DECODE_MEMORY = 512 * 1024 * 1024  # per decode task: a worker with its libraries (~400 MB) and a block of pixels

# One sample as the tasks pass it on, whatever the source.
_SAMPLE = pa.schema([
    ("id", pa.string()), ("split", pa.string()), ("order", pa.int64()), ("shard", pa.string()), ("key", pa.string()),
    ("image_name", pa.string()), ("mask_name", pa.string()), ("image", pa.binary()), ("mask", pa.binary()),
    ("label", pa.string()), ("has_caption", pa.bool_()), ("caption", pa.string()), ("problem", pa.string()),
])
# What the check pass keeps of each row (typed: a block whose rows all leave a column out still has its type).
_SCANNED = pa.schema([
    ("id", pa.string()), ("split", pa.string()), ("order", pa.int64()), ("shard", pa.string()), ("key", pa.string()),
    ("image_name", pa.string()), ("image_suffix", pa.string()), ("has_mask", pa.bool_()), ("label", pa.string()),
    ("has_caption", pa.bool_()), ("caption_empty", pa.bool_()), ("problem", pa.string()), ("width", pa.int64()),
    ("height", pa.int64()), ("grey", pa.bool_()), ("sums", pa.list_(pa.int64())), ("squares", pa.list_(pa.int64())),
])


def check_on_bad_row(value: str) -> str:
    if value not in ON_BAD_ROW:
        raise ConfigError(f"on_bad_row must be one of {', '.join(ON_BAD_ROW)}, got {value!r}")
    return value


# ----------------------------------------------------------------------------- the driver's view of a row


@dataclass
class SourcePlan:
    """Everything the driver decided, from metadata alone; the decode tasks get ``task_args``."""

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

    def __post_init__(self) -> None:
        self.num_classes = len(self.class_names)


# ----------------------------------------------------------------------------- the source's samples on Ray


def _imagefolder_table(metadata: dict[str, pa.Table], folders: Sequence[str]) -> pa.Table:
    """The listed files' metadata (columns of ``parse_metadata_columns``) as samples without bytes."""
    parts = []
    for folder in folders:
        rows = metadata[folder]
        path = pc.binary_join_element_wise(f"{folder}/", rows.column("file_name"), "")
        # The image's path is its id (the tasks name the image by it): one column, not two.
        parts.append(pa.table({
            "id": path,
            "split": pa.repeat(pa.scalar(folder, pa.string()), rows.num_rows),
            "mask_name": pc.binary_join_element_wise(f"{folder}/", rows.column("mask_file_name"), ""),
            "label": rows.column("label"),
            "has_caption": rows.column("has_caption"),
            "caption": rows.column("caption"),
        }))
    table = pa.concat_tables(parts)  # chunks as parsed: no copy into one
    order = pa.array(np.arange(table.num_rows, dtype=np.int64))
    return table.add_column(2, "order", order)


def _put_blocks(table: pa.Table, blocks: int) -> list:
    """The table in about ``blocks`` slices, each put into Ray's object store once."""
    import ray

    bounds = np.linspace(0, table.num_rows, max(1, min(blocks, table.num_rows)) + 1).round().astype(int)
    return [ray.put(table.slice(a, b - a)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _imagefolder_samples(root: DatasetRoot, blocks: list):
    """A dataset of the listed files' metadata (blocks the driver put once) that tasks fill with bytes."""
    import ray.data

    return ray.data.from_arrow_refs(blocks).map_batches(
        _read_files, fn_kwargs={"root_url": root.url}, batch_format="pyarrow", batch_size=None,
        num_cpus=TASK_CPUS, udf_modifying_row_count=False)


def _read_files(batch: pa.Table, root_url: str) -> pa.Table:
    """Task: the bytes of each row's image and mask; a missing file becomes the row's problem."""
    root = DatasetRoot(root_url)
    images, masks, problems = [], [], []
    for image_name, mask_name in zip(batch.column("id").to_pylist(), batch.column("mask_name").to_pylist()):
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
                   image_name=batch.column("id"), image=pa.array(images, pa.binary()), mask=pa.array(masks, pa.binary()),
                   problem=pa.array(problems, pa.string()))
    return pa.table({name: columns[name] for name in _SAMPLE.names}, schema=_SAMPLE)


def _webdataset_samples(root: DatasetRoot, shards: Sequence[str]):
    """Read tasks stream each shard (``ShardSamples``) into samples."""
    import ray.data

    from .output import Output
    from .shard_source import ShardSamples

    _, filesystem = Output.parse(root.url).ray_target()  # None locally, else pyarrow's fsspec adapter
    paths = [f"{root.path}/{shard}" for shard in shards]
    return ray.data.read_datasource(ShardSamples(paths, _shard_samples, filesystem=filesystem), num_cpus=TASK_CPUS)


def _shard_samples(shard: str, members: list[tuple[str, dict[str, bytes]]]) -> pa.Table:
    """One shard's (key, {suffix: bytes}) members -> samples; a sample's problem stays with its row."""
    split = shard.split("/", 1)[0]
    samples = []
    for key, suffixes in members:
        values = _blank_sample(f"{shard}:{key}", split, shard, key)
        try:
            row = parse_sample(split, shard, key, suffixes)
            values.update(image_name=row.image_path, mask_name=row.mask_path, label=json.dumps(row.label),
                          has_caption=row.has_caption, caption=row.caption, image=suffixes[row.image_suffix],
                          mask=suffixes.get(MASK_SUFFIX))
        except DataError as error:
            values["problem"] = str(error)
        samples.append(values)
    return _samples_table(samples)


def _blank_sample(row_id: str, split: str, shard: str, key: str) -> dict[str, Any]:
    """A sample before its members are parsed: what a row with a problem still carries."""
    return dict(id=row_id, split=split, order=None, shard=shard, key=key, label=None, has_caption=False, caption=None,
                image=None, mask=None, problem=None, image_name=row_id, mask_name=None)


def _samples_table(samples: list[dict[str, Any]]) -> pa.Table:
    return pa.table({name: pa.array([v[name] for v in samples], _SAMPLE.field(name).type) for name in _SAMPLE.names},
                    schema=_SAMPLE)


def _image_parquet_samples(root: DatasetRoot, files: dict[str, str], names: list[str] | None):
    """A dataset of the files (split by file, built by the driver) that tasks read into samples."""
    import ray.data

    table = pa.table({"file": list(files), "split": list(files.values())})
    parts = [table.slice(i, 1) for i in range(table.num_rows)]
    return ray.data.from_arrow(parts).map_batches(
        _parquet_samples, fn_kwargs={"root_url": root.url, "names": names}, batch_format="pyarrow",
        batch_size=None, num_cpus=TASK_CPUS)


def _parquet_samples(batch: pa.Table, root_url: str, names: list[str] | None) -> Iterator[pa.Table]:
    """Task: each file's rows as samples, a stretch at a time; a bad row carries its problem, a bad file fails
    the ingest."""
    root = DatasetRoot(root_url)
    for file, split in zip(batch.column("file").to_pylist(), batch.column("split").to_pylist()):
        for first, table in iter_tables(root, file, PARQUET_ROWS):
            cells = file_columns(table, file, first)
            samples = []
            for i in range(first, first + table.num_rows):
                values = _blank_sample(f"{file}:{i}", split, file, f"{i:012d}")  # the key sorts rows numerically
                try:
                    row, image, mask = parse_row(split, file, i, cells, names)
                    values.update(label=json.dumps(row.label), has_caption=row.has_caption, caption=row.caption,
                                  image=image, mask=mask, mask_name=row.mask_path)
                except DataError as error:
                    values["problem"] = str(error)
                samples.append(values)
            yield _samples_table(samples)


# ----------------------------------------------------------------------------- pass 1: scan


def _scan(batch: pa.Table, image_size: int | None) -> pa.Table:
    """Task: decode and check each sample; keep only what the driver needs to decide."""
    out: dict[str, list] = {name: [] for name in _SCANNED.names}
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
        for name in ("split", "order", "shard", "key", "label", "has_caption"):
            out[name].append(data[name][i])
        # The driver keeps this table for every row: what follows from other columns is left out (null).
        row_id, image_name = data["id"][i], data["image_name"][i]
        out["id"].append(None if row_id == _shard_member_id(data["shard"][i], data["key"][i]) else row_id)
        suffix = image_name[len(row_id):] if image_name is not None and image_name.startswith(row_id) else None
        out["image_name"].append(None if suffix is not None else image_name)
        out["image_suffix"].append(suffix or None)
        out["has_mask"].append(data["mask_name"][i] is not None)
        out["caption_empty"].append(caption is None or not caption.strip())
        out["problem"].append(problem)
        out["width"].append(None if size is None else size[0])
        out["height"].append(None if size is None else size[1])
        out["grey"].append(grey)
        out["sums"].append(sums)
        out["squares"].append(squares)
    return pa.table(out, schema=_SCANNED)


def _shard_member_id(shard: str | None, key: str | None) -> str | None:
    """A WebDataset member's id, shard:key (None for a row without a shard)."""
    return None if shard is None or key is None else f"{shard}:{key}"


def _scanned_ids(scanned: pa.Table, rows: pa.Array) -> pa.Array:
    """The ids of some scanned rows, the left-out shard:key ones rebuilt."""
    picked = scanned.select(["id", "shard", "key"]).take(rows)
    members = pc.binary_join_element_wise(picked.column("shard"), picked.column("key"), ":")
    return pc.coalesce(picked.column("id"), members).combine_chunks()


def _collect(dataset) -> pa.Table:
    import ray

    tables = [t for t in ray.get(dataset.to_arrow_refs()) if t.num_rows]
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


# ----------------------------------------------------------------------------- pass 2: decode


def _decode(batch: pa.Table, *, shown: str, image_size: int | None, colour: bool, masks: bool,
            class_names: list[str], label_index: dict[str, int], val_ids: pa.Array,
            keep_ids: pa.Array | None, drop_ids: pa.Array, splits: tuple[str, ...],
            image_shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Task: the rows the driver kept, decoded into the preprocessed schema's columns."""
    ids = batch.column("id")
    is_val = pc.is_in(ids, value_set=val_ids).to_numpy(zero_copy_only=False)
    dropped = pc.is_in(ids, value_set=drop_ids).to_numpy(zero_copy_only=False)
    if keep_ids is not None:
        dropped |= ~pc.is_in(ids, value_set=keep_ids).to_numpy(zero_copy_only=False)
    data = batch.to_pydict()
    rows = {"id": [], "split": [], "label": [], "class_name": [], "image": [], "caption": [], "mask": []}
    for i in range(batch.num_rows):
        row_id = data["id"][i]
        if dropped[i]:
            continue
        split = "val" if is_val[i] else OUT_SPLIT[data["split"][i]]
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
        self.metadata: dict[str, pa.Table] = {}  # imagefolder: split folder -> parse_metadata_columns
        self.shards: list[str] = []
        self.files: dict[str, str] = {}  # image Parquet: file -> split
        self.class_label: list[str] | None = None  # image Parquet: the ClassLabel's names
        self._sample_blocks: list | None = None  # imagefolder: the samples table's blocks in Ray's object store
        with self._named():
            self.listed = listed_classes(self.root)
            if kind == IMAGE_PARQUET:
                by_split = split_files(self.root)
                self.folders = list(by_split)
                self.files = {file: split for split, files in by_split.items() for file in files}
                self.shards = list(self.files)
                # A Hugging Face ClassLabel names the classes (unless classes.json does): from one footer.
                self.class_label = read_schema_names(self.root, self.shards[0])
                self.listed = self.listed or self.class_label
            elif kind == WEBDATASET:
                self.folders = split_folders(self.root)
                self.shards = [s for split in self.folders for s in shard_paths(self.root, split)]
            else:
                self.folders = split_folders(self.root)
                # The metadata is read and checked here, as load_dataset does, before Ray starts: as columns.
                self.metadata = {folder: self._read_metadata(folder) for folder in self.folders}
                self._check_metadata()

    def _read_metadata(self, folder: str) -> pa.Table:
        if not self.root.is_dir(folder):
            raise DataError(f"missing {folder}/ folder (expected {folder}/{METADATA_FILE} and its images)")
        return parse_metadata_columns(folder, self.root.read(f"{folder}/{METADATA_FILE}", what="metadata file"))

    def _check_metadata(self) -> None:
        metadata = self.metadata

        def where(folder: str, i: int) -> str:
            rows = metadata[folder]
            file_name = rows.column("file_name")[i].as_py()
            return f"{folder}/{METADATA_FILE} line {rows.column('line')[i].as_py()} ({folder}/{file_name})"

        check_label_columns(*encode_labels({f: metadata[f].column("label") for f in self.folders}),
                            {f: _bools(pc.is_valid(metadata[f].column("mask_file_name"))) for f in self.folders},
                            self.listed, where, MetadataRow.MASK_FIELD)

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

    def _before_the_scan(self) -> None:
        if self._sample_blocks is not None:  # the metadata went into Ray's object store with the samples
            raise RuntimeError("an imagefolder's metadata answers only before its samples are put into Ray")

    def has_any_caption(self) -> bool:
        """Before Ray: whether an imagefolder's metadata gives any row a caption (a WebDataset's: not known yet)."""
        self._before_the_scan()
        return any(pc.any(rows.column("has_caption")).as_py() for rows in self.metadata.values())

    def first_missing_caption(self, splits: Sequence[str]) -> str | None:
        """Before Ray: an imagefolder row (of the folders feeding ``splits``) without a caption."""
        self._before_the_scan()
        wanted = {folder for folder, out in OUT_SPLIT.items() if out in splits}
        if "val" in splits and VALIDATION_SPLIT not in self.folders:
            wanted.add("train")
        for folder in self.folders:
            if folder not in wanted or folder not in self.metadata:
                continue
            for batch in self.metadata[folder].select(["file_name", "has_caption", "caption"]).to_batches(4096):
                for file_name, has_caption, caption in zip(*(batch.column(i).to_pylist() for i in range(3))):
                    if not has_caption or caption is None or not caption.strip():
                        return f"{folder}/{file_name}"
        return None

    def samples(self, blocks: int):
        """The source's rows as a Ray dataset of samples (bytes included)."""
        if self.kind == WEBDATASET:
            return _webdataset_samples(self.root, self.shards)
        if self.kind == IMAGE_PARQUET:
            return _image_parquet_samples(self.root, self.files, self.class_label)
        # Both passes read the same blocks: put once (a second put would count again in the driver's memory).
        if self._sample_blocks is None:
            self._sample_blocks = _put_blocks(_imagefolder_table(self.metadata, self.folders), blocks)
            self.metadata = {}  # its checks ran before Ray started; the blocks now hold what the passes need
        return _imagefolder_samples(self.root, self._sample_blocks)

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

    def _order(self, scanned: pa.Table) -> np.ndarray:
        """Positions of the scanned rows in dataset order: an imagefolder's listing; a WebDataset's folder, shard,
        key; image Parquet's split, file, row."""
        if self.kind == IMAGEFOLDER:
            return np.argsort(_ints(scanned.column("order")), kind="stable").astype(ROW_INDEX)
        keys = pa.table({"rank": _codes(scanned.column("split"), self.folders, missing=len(self.folders)),
                         "shard": scanned.column("shard"), "key": scanned.column("key")})
        order = pc.sort_indices(keys, sort_keys=[("rank", "ascending"), ("shard", "ascending"),
                                                 ("key", "ascending")])
        return order.to_numpy(zero_copy_only=False).astype(ROW_INDEX)

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
        if not scanned.num_rows:
            raise DataError("train/: no usable images")
        # Columns stay in scan order; ``order`` maps a dataset position to its scanned row.
        order = self._order(scanned)

        def text(name: str, i: int) -> str | None:
            return scanned.column(name)[int(order[i])].as_py()

        def row_id(i: int) -> str:
            return text("id", i) or _shard_member_id(text("shard", i), text("key", i))

        def image_name(i: int) -> str:
            return text("image_name", i) or row_id(i) + (text("image_suffix", i) or "")

        def column(values: np.ndarray) -> np.ndarray:
            return values[order]

        kept = ~column(_bools(pc.is_valid(scanned.column("problem"))))
        for i in np.flatnonzero(~kept):
            self._reject(rejected, text("split", i), row_id(i), image_name(i), text("problem", i))
        folder_of = column(_codes(scanned.column("split"), self.folders))
        is_train = folder_of == 0

        # One size for all, unless resizing: the reference is the first train image, as in-process.
        size = self.request.image_size
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
                self._reject(rejected, text("split", i), row_id(i), image_name(i), problem)
            kept &= ~odd
            height, width = reference.size[1], reference.size[0]
        else:
            height = width = size

        positions = {folder: np.flatnonzero(kept & (folder_of == k)) for k, folder in enumerate(self.folders)}
        if not len(positions["train"]):
            raise DataError("train/: no usable images")
        has_mask = column(_bools(scanned.column("has_mask").fill_null(False)))
        label_codes, label_values = encode_labels({"all": scanned.column("label")})
        label_codes = column(label_codes["all"])
        plan = check_label_columns({f: label_codes[p] for f, p in positions.items()}, label_values,
                                   {f: has_mask[p] for f, p in positions.items()}, self.listed,
                                   lambda folder, i: row_id(positions[folder][i]), "mask")
        grey = column(_bools(scanned.column("grey").fill_null(False)))
        colour = not bool(grey[positions["train"]].all())
        channels = 3 if colour else 1

        labels = plan.labels
        is_val = np.zeros(len(positions["train"]), dtype=bool)
        if VALIDATION_SPLIT not in positions:
            is_val[validation_positions(labels["train"], len(plan.class_names), self.request.val_fraction,
                                        self.request.seed)] = True
        parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "val": [], "test": []}
        for folder in self.folders:
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

        rejected_by_split = {folder: sum(r["split"] == folder for r in rejected) for folder in self.folders}
        self._colour = colour
        self._val_ids = _scanned_ids(scanned, pa.array(order[positions["train"][is_val]], pa.int64()))
        self._rejected_ids = pa.array(sorted({r["id"] for r in rejected}), pa.string())
        self._splits = tuple(splits)
        self._label_index = self._label_index_of(plan.class_names, plan.names_are_labels)
        result = SourcePlan(
            kind=self.kind, name=self.name, shown=self.shown, class_names=list(plan.class_names), mean=mean, std=std,
            image_shape=(height, width, channels), has_masks=plan.masks,
            labels={split: out_labels[split] for split in splits},
            rejected=rejected, rejected_by_split=rejected_by_split,
            any_caption=bool(has_caption[written].any()),
            missing_caption=None if first_missing is None else row_id(written[first_missing]),
        )
        self._image_shape = result.image_shape
        return result

    @staticmethod
    def _label_index_of(class_names: list[str], names_are_labels: bool) -> dict[str, int]:
        if names_are_labels:
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


def rejected_lines(rejected: Sequence[dict[str, str]]) -> str:
    return "".join(json.dumps({"file": r["file"], "reason": r["reason"], "id": r["id"], "split": r["split"]}) + "\n"
                   for r in rejected)


__all__ = ["FolderSource", "ON_BAD_ROW", "SourcePlan", "check_on_bad_row", "rejected_lines"]
