"""The ``parquet`` source: a directory written by ``raydd preprocess``, read back without Ray.

Layout (local path or fsspec URI)::

    <root>/manifest.json                                  written last: no manifest, no dataset
    <root>/split=<train|val|test>/label=<k>/<any>.parquet

Rows hold ``id``, ``class_name``, ``image`` (uint8 [H, W, C]), ``caption`` (string or null),
``caption_emb`` (float32 [d], all null without a text encoder) and ``mask`` (uint8 [H, W], all null
without a segmenter); ``split`` and ``label`` live in the directory names (hive partitioning), so a
worker that owns a few classes lists and opens only their files. Tensor columns use Arrow's native
``fixed_shape_tensor`` type, which plain pyarrow reads.

Rows come back sorted by id within each split: the order never depends on how the writer happened to
split the work into files.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from .base import DatasetSplits, ImageData, repeated
from .registry import SourceRequest, register_source
from .resize import resize_images
from .splits import carve_validation

SOURCE_NAME = "parquet"
MANIFEST_FILE = "manifest.json"
FORMAT = "raydd-preprocessed"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
PARTITION_COLUMNS = ("split", "label")
COLUMNS = ("id", "split", "label", "class_name", "image", "caption", "caption_emb", "mask")
FOOTER_THREADS = 8  # footers read at once (a request each on object storage)
_FILE_PATTERN = re.compile(r"/split=([^/]+)/label=(-?\d+)/[^/]+\.parquet$")
_MANIFEST_KEYS = ("format", "format_version", "classes", "image_size", "channels", "mean", "std", "flip_ok",
                  "splits", "counts", "captions", "segmenter", "text_encoder")


# ----------------------------------------------------------------------------- tensor columns


def tensor_type(value_type: pa.DataType, shape: Sequence[int]) -> pa.DataType:
    """The one spelling of a tensor column type, so every file of a dataset has the same schema."""
    return pa.fixed_shape_tensor(value_type, list(shape))


def tensor_array(values: np.ndarray) -> pa.ExtensionArray:
    """[N, *shape] numpy -> fixed_shape_tensor array (also for N = 0, which pyarrow's helper refuses)."""
    values = np.ascontiguousarray(values)
    shape = values.shape[1:]
    storage = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), math.prod(shape))
    return pa.ExtensionArray.from_storage(tensor_type(storage.type.value_type, shape), storage)


def null_tensor_array(value_type: pa.DataType, shape: Sequence[int], count: int) -> pa.ExtensionArray:
    kind = tensor_type(value_type, shape)
    return pa.ExtensionArray.from_storage(kind, pa.nulls(count, kind.storage_type))


def tensor_to_numpy(column: pa.ChunkedArray | pa.Array, shape: Sequence[int]) -> np.ndarray:
    """A fixed-shape tensor (or fixed-size list) column without nulls -> numpy [N, *shape]."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    storage = array.storage if isinstance(array, pa.ExtensionArray) else array
    flat = storage.flatten().to_numpy(zero_copy_only=False)
    if not flat.flags.writeable:  # zero-copy views of Arrow memory are read-only; torch wants to own its data
        flat = flat.copy()
    return flat.reshape(len(array), *shape)


# ----------------------------------------------------------------------------- locations


@dataclass(frozen=True)
class Location:
    """A dataset root on some fsspec filesystem, plus how to name it in messages."""

    url: str
    fs: fsspec.AbstractFileSystem
    path: str

    @classmethod
    def parse(cls, url: str) -> Location:
        try:
            fs, path = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as error:
            raise DataError(f"{url}: cannot open this location ({error})") from None
        return cls(url.rstrip("/") or url, fs, path.rstrip("/") or path)

    def join(self, *parts: str) -> str:
        return posixpath.join(self.path, *parts)

    def shown(self, *parts: str) -> str:
        return posixpath.join(self.url, *parts)


def is_preprocessed_dir(url: str) -> bool:
    """Whether ``url`` holds a manifest.json (cheap; any failure counts as no)."""
    try:
        location = Location.parse(url)
        return bool(location.fs.isfile(location.join(MANIFEST_FILE)))
    except (DataError, OSError, ValueError):
        return False


def read_manifest(url: str) -> dict:
    """The manifest of a preprocessed directory; a missing, unreadable or foreign one is a DataError."""
    location = Location.parse(url)
    shown = location.shown(MANIFEST_FILE)
    try:
        raw = location.fs.cat_file(location.join(MANIFEST_FILE))
    except FileNotFoundError:
        raise DataError(f"{shown}: missing manifest (not a finished `raydd preprocess` output)") from None
    except OSError as error:
        raise DataError(f"{shown}: cannot read manifest ({error})") from None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{shown}: corrupt manifest, not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{shown}: not a raydd preprocessing manifest (expected \"format\": \"{FORMAT}\")")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{shown}: format_version {manifest.get('format_version')!r}; this raydd reads {FORMAT_VERSION}")
    missing = [key for key in _MANIFEST_KEYS if key not in manifest]
    if missing:
        raise DataError(f"{shown}: corrupt manifest, missing {', '.join(missing)}")
    return manifest


def _check_classes(classes: Sequence[int] | None, num_classes: int) -> list[int] | None:
    if classes is None:
        return None
    chosen = list(classes)
    bad = [c for c in chosen if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num_classes]
    if bad or not chosen:
        raise ConfigError(f"classes must be a non-empty list of class indices in 0..{num_classes - 1}, got {chosen!r}")
    return sorted(set(chosen))


def partition_order(num_classes: int) -> list[int]:
    """The classes in the order a whole read lists their partitions (``label=1/`` before ``label=10/``
    before ``label=2/``): reading class by class in this order yields the rows in a whole read's order."""
    return sorted(range(num_classes), key=lambda c: f"{c}/")


def _data_files(location: Location, split: str, classes: list[int] | None) -> list[str]:
    """The Parquet files of one split (and only the chosen classes), found with one listing."""
    try:
        found = location.fs.glob(location.join(f"split={split}", "label=*", "*.parquet"))
    except OSError as error:
        raise DataError(f"{location.shown(f'split={split}')}: cannot list files ({error})") from None
    wanted = None if classes is None else {str(c) for c in classes}
    files = []
    for path in sorted(found):
        match = _FILE_PATTERN.search("/" + path.lstrip("/"))
        if match and match.group(1) == split and (wanted is None or match.group(2) in wanted):
            files.append(path)
    return files


def file_schema(url: str, split: str) -> pa.Schema | None:
    """The schema stored in one of a split's files (footer only), or None for an empty split."""
    location = Location.parse(url)
    files = _data_files(location, split, None)
    if not files:
        return None
    with location.fs.open(files[0], "rb") as handle:
        return pq.read_schema(handle)


def partitioning() -> pads.Partitioning:
    return pads.partitioning(pa.schema([("split", pa.string()), ("label", pa.int64())]), flavor="hive")


def _open_split(url: str, split: str, classes: Sequence[int] | None) -> tuple[pads.Dataset | None, str]:
    location = Location.parse(url)
    shown = location.shown(f"split={split}")
    files = _data_files(location, split, None if classes is None else list(classes))
    if not files:
        return None, shown
    try:
        dataset = pads.dataset(files, filesystem=location.fs, format="parquet", partitioning=partitioning(),
                               partition_base_dir=location.path)
    except (OSError, pa.ArrowException) as error:
        raise DataError(f"{shown}: unreadable Parquet ({error})") from None
    return dataset, shown


def read_rows(url: str, split: str, columns: Sequence[str], classes: Sequence[int] | None = None) -> pa.Table:
    """Selected columns of one split's rows (partition columns included), sorted by id."""
    dataset, shown = _open_split(url, split, classes)
    if dataset is None:
        return pa.table({})
    try:
        return dataset.to_table(columns=list(dict.fromkeys(["id", *columns]))).sort_by("id")
    except (OSError, pa.ArrowException) as error:
        raise DataError(f"{shown}: unreadable Parquet ({error})") from None


# ----------------------------------------------------------------------------- splits


def _empty(class_names: list[str], channels: int, size: tuple[int, int], captions: bool, masks: bool) -> ImageData:
    return ImageData(
        images=torch.zeros((0, channels, *size), dtype=torch.uint8),
        labels=torch.zeros(0, dtype=torch.int64),
        ids=[],
        class_names=list(class_names),
        captions=[] if captions else None,
        masks=torch.zeros((0, 1, *size), dtype=torch.uint8) if masks else None,
    )


def _split_data(url: str, manifest: dict, split: str, classes: list[int] | None, with_pixels: bool = True) -> ImageData:
    """One split's rows; without pixels, its images (and masks) are one blank image repeated (no memory)."""
    class_names = list(manifest["classes"])
    height, width = manifest["image_size"]
    channels = int(manifest["channels"])
    has_captions = bool(manifest["captions"])
    has_masks = manifest["segmenter"] is not None
    columns = ["id", "label", "caption", *(["image", *(["mask"] if has_masks else [])] if with_pixels else [])]
    table = read_rows(url, split, columns, classes)
    if table.num_rows == 0:
        return _empty(class_names, channels, (height, width), has_captions, has_masks)
    shown = Location.parse(url).shown(f"split={split}")
    if with_pixels:
        shape = getattr(table.schema.field("image").type, "shape", None)
        if shape is None or list(shape) != [height, width, channels]:
            raise DataError(f"{shown}: images are {shape}, the manifest says [{height}, {width}, {channels}]")
        for name in columns[3:]:
            if table.column(name).null_count:
                raise DataError(f"{shown}: {table.column(name).null_count} rows have no {name}")
        images = torch.from_numpy(tensor_to_numpy(table.column("image"), (height, width, channels)))
        images = images.permute(0, 3, 1, 2).contiguous()
        masks = None
        if has_masks:
            masks = torch.from_numpy(tensor_to_numpy(table.column("mask"), (height, width))).unsqueeze(1).contiguous()
    else:
        images = repeated(torch.zeros((channels, height, width), dtype=torch.uint8), table.num_rows)
        masks = repeated(torch.zeros((1, height, width), dtype=torch.uint8), table.num_rows) if has_masks else None
    try:
        return ImageData(
            images=images,
            labels=torch.from_numpy(table.column("label").to_numpy().astype(np.int64)),
            ids=table.column("id").to_pylist(),
            class_names=class_names,
            captions=table.column("caption").to_pylist() if has_captions else None,
            masks=masks,
        )
    except ValueError as error:
        raise DataError(f"{shown}: inconsistent rows ({error})") from None


def _resized(data: ImageData, size: int) -> ImageData:
    if data.pixels_left_out:  # one blank image repeated stays so, at the new size
        images = repeated(torch.zeros((data.images.shape[1], size, size), dtype=torch.uint8), len(data))
        masks = None if data.masks is None else repeated(torch.zeros((1, size, size), dtype=torch.uint8), len(data))
        return ImageData(images, data.labels, data.ids, data.class_names, data.captions, masks)
    masks = data.masks
    if masks is not None and len(data):
        masks = F.interpolate(masks.float(), size=(size, size), mode="nearest").to(torch.uint8)
    elif masks is not None:
        masks = masks.new_zeros((0, 1, size, size))
    return ImageData(resize_images(data.images, size), data.labels, data.ids, data.class_names, data.captions, masks)


def read_parquet_splits(
    url: str,
    *,
    classes: Sequence[int] | None = None,
    image_size: int | None = None,
    require_captions: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    pixels: Sequence[str] | None = None,
) -> DatasetSplits:
    """Read a preprocessed directory as DatasetSplits.

    ``classes`` reads only those label partitions (labels keep their dataset-wide indices, so a
    worker's shard lines up with everyone else's). A validation split is carved from train with
    ``val_fraction``/``seed`` only when the directory has none (it was written without ``val``).
    ``pixels`` names the splits whose images are read (default: all); the others keep ids, labels and
    captions, their images one blank image repeated (``ImageData.pixels_left_out``): the evaluation
    reads the test images without holding the training split.
    """
    manifest = read_manifest(url)
    chosen = _check_classes(classes, len(manifest["classes"]))
    wanted = set(SPLITS if pixels is None else pixels)
    if "val" in wanted and "val" not in manifest["splits"]:
        wanted.add("train")  # the validation rows are carved from train's
    parts = {split: _split_data(url, manifest, split, chosen, with_pixels=split in wanted)
             for split in SPLITS if split in manifest["splits"]}
    empty = _empty(manifest["classes"], int(manifest["channels"]), tuple(manifest["image_size"]),
                   bool(manifest["captions"]), manifest["segmenter"] is not None)
    train = parts.get("train", empty)
    if "val" in parts:
        val = parts["val"]
    elif len(train):
        train, val = carve_validation(train, val_fraction, seed)
    else:
        val = empty
    test = parts.get("test", empty)
    if image_size is not None and [image_size, image_size] != list(manifest["image_size"]):
        train, val, test = (_resized(d, image_size) for d in (train, val, test))
    if require_captions:
        check_captions_present(url, (train, val, test), manifest)
    return DatasetSplits(
        name=f"{SOURCE_NAME}:{url}",
        train=train,
        val=val,
        test=test,
        class_names=list(manifest["classes"]),
        mean=tuple(manifest["mean"]),
        std=tuple(manifest["std"]),
        flip_ok=bool(manifest["flip_ok"]),
    )


def check_captions_present(url: str, parts: Sequence[ImageData], manifest: dict | None = None) -> None:
    """Every row has a caption; an error names the user's source (not this preprocessed copy) and the row."""
    where = source_shown(url, manifest if manifest is not None else read_manifest(url))
    for data in parts:
        captions = data.captions if data.captions is not None else [None] * len(data)
        for image_id, caption in zip(data.ids, captions):
            if caption is None or not caption.strip():
                problem = "missing caption" if caption is None else "empty caption"
                raise DataError(f"{where}: {image_id}: {problem} (captions are required)")


def source_shown(url: str, manifest: dict) -> str:
    """How a row's origin is named to the user: the source the copy was made from, else the copy itself."""
    source = manifest.get("source")
    if not source or str(source).startswith(f"{SOURCE_NAME}:") or source == url:
        return url
    return str(source)


def read_caption_embeddings(
    url: str, split: str, ids: Sequence[str], classes: Sequence[int] | None = None
) -> torch.Tensor:
    """float32 [len(ids), d]: the stored caption embedding of each id, in the order given.

    ``classes`` narrows the files read (pass a worker's classes); a row without a caption has the
    zero vector, raydd's "no caption".
    """
    manifest = read_manifest(url)
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    encoder = manifest["text_encoder"]
    if not encoder:
        raise DataError(f"{Location.parse(url).shown(MANIFEST_FILE)}: no caption embeddings were written "
                        "(preprocessed without captions or without a text encoder)")
    chosen = _check_classes(classes, len(manifest["classes"]))
    table = read_rows(url, split, ["id", "caption_emb"], chosen)
    dim = int(encoder["dim"])
    stored = tensor_to_numpy(table.column("caption_emb"), (dim,)) if table.num_rows else np.zeros((0, dim), np.float32)
    position = {image_id: i for i, image_id in enumerate(table.column("id").to_pylist())} if table.num_rows else {}
    missing = [image_id for image_id in ids if image_id not in position]
    if missing:
        raise DataError(f"{url}: no {split} row with id {missing[0]!r}"
                        + (f" ({len(missing)} ids missing)" if len(missing) > 1 else ""))
    rows = np.fromiter((position[image_id] for image_id in ids), dtype=np.int64, count=len(ids))
    return torch.from_numpy(np.ascontiguousarray(stored[rows], dtype=np.float32))


def class_counts(url: str, split: str) -> dict[int, int]:
    """Rows per label actually on disk for one split, from the files' footers alone.

    The label is the file's partition folder (``label=K``) and the rows are in its footer, so no column is
    read. A pyarrow dataset over the same files peaked at about 66 MB more driver memory for 1 800 small
    files (a 45 000-row WebDataset ingest), growing with the files; the footers one by one take about 2 MB.
    Footers are read by a few threads: on object storage each is a request.
    """
    location = Location.parse(url)
    files = _data_files(location, split, None)
    shown = location.shown(f"split={split}")

    def rows(path: str) -> int:
        with location.fs.open(path, "rb") as handle:
            return pq.read_metadata(handle).num_rows

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=FOOTER_THREADS) as pool:
            found = list(pool.map(rows, files))
    except (OSError, pa.ArrowException) as error:
        raise DataError(f"{shown}: unreadable Parquet ({error})") from None
    counts: dict[int, int] = {}
    for path, n in zip(files, found):
        label = int(_FILE_PATTERN.search("/" + path.lstrip("/")).group(2))
        if n:
            counts[label] = counts.get(label, 0) + n
    return counts


@register_source(SOURCE_NAME)
def load_parquet(request: SourceRequest) -> DatasetSplits:
    """``load_dataset("parquet", root=DIR)``, ``load_dataset("parquet:DIR")`` or a DIR with a manifest."""
    if request.root is None:
        raise ConfigError("the parquet source needs the directory: load_dataset('parquet:<path or URI>')")
    return read_parquet_splits(
        request.root,
        image_size=request.image_size,
        require_captions=request.require_captions,
        val_fraction=request.val_fraction,
        seed=request.seed,
    )


__all__ = [
    "COLUMNS",
    "MANIFEST_FILE",
    "is_preprocessed_dir",
    "check_captions_present",
    "load_parquet",
    "read_caption_embeddings",
    "read_manifest",
    "read_parquet_splits",
]
