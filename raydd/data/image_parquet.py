"""The ``image-parquet`` source: Parquet files whose rows hold the encoded images, as Hugging Face and
img2dataset write them.

Layout (local path or fsspec URI), either split folders or the Hugging Face hub's ``data/`` files::

    <root>/classes.json                  optional, as for an imagefolder: fixes class names and order
    <root>/train/*.parquet               or  <root>/data/train-00000-of-00004.parquet ...
    <root>/validation/*.parquet          or  <root>/data/validation-*.parquet  (optional)
    <root>/test/*.parquet                or  <root>/data/test-*.parquet

Columns, by name:

- the image: ``image`` (the Hugging Face ``Image`` feature, a struct of ``bytes`` and ``path``; or plain
  bytes), else ``img``, ``jpg``, ``jpeg``, ``png`` or ``webp`` (img2dataset's Parquet output);
- ``label``: a class name, or a class index; a Hugging Face ``ClassLabel`` column's names (kept in the
  file's schema metadata) name the classes and fix their order unless ``classes.json`` does;
- optional ``caption`` (else ``text``): the caption; optional ``mask`` (bytes, or a struct as the image):
  a PNG of the image's size, 0 = background.

A row's id, and how errors name it, is ``<file>:<row>`` (``train/part-0.parquet:17``), rows in file order.
This module reads the files in-process with pyarrow (``load_dataset``, ``--no-ray``); ``raydd
preprocess`` reads them in Ray tasks (``raydd.pipeline.preprocess.ingest``) and shares ``parse_row``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DataError
from .base import DatasetSplits
from .imagefolder.loader import REQUIRED_SPLITS, VALIDATION_SPLIT, assemble_splits, listed_classes, open_root
from .imagefolder.metadata import _label
from .imagefolder.storage import DatasetRoot
from .parquet import MANIFEST_FILE
from .registry import SourceRequest, register_source

SOURCE_NAME = "image-parquet"
EXTENSION = ".parquet"
HUB_FOLDER = "data"
IMAGE_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp")
CAPTION_COLUMNS = ("caption", "text")
MASK_COLUMN = "mask"
LABEL_COLUMN = "label"


@dataclass(frozen=True)
class ParquetRow:
    """One row's metadata, shaped like an imagefolder metadata row so the same checks apply."""

    MASK_FIELD = f"'{MASK_COLUMN}'"

    split: str  # split: train, validation or test
    file: str  # relative to the root: train/part-0.parquet
    row: int  # 0-based row in the file
    label: str | int
    has_caption: bool
    caption: str | None
    has_mask: bool

    @property
    def id(self) -> str:
        return f"{self.file}:{self.row}"

    @property
    def where(self) -> str:
        return self.id

    @property
    def image_path(self) -> str:
        return self.id

    @property
    def mask_path(self) -> str | None:
        return f"{self.id} ({MASK_COLUMN})" if self.has_mask else None


def split_files(root: DatasetRoot) -> dict[str, list[str]]:
    """Split -> its Parquet files relative to the root, sorted; train and test are required."""
    files: dict[str, list[str]] = {}
    hub = root.is_dir(HUB_FOLDER) and not root.is_dir("train")
    for split in (*REQUIRED_SPLITS, VALIDATION_SPLIT):
        if hub:
            names = _listed(root, HUB_FOLDER)
            found = [f"{HUB_FOLDER}/{n}" for n in names if n.startswith(f"{split}-") or n == f"{split}{EXTENSION}"]
        elif root.is_dir(split):
            found = [f"{split}/{n}" for n in _listed(root, split)]
        else:
            found = []
        if found:
            files[split] = found
        elif split in REQUIRED_SPLITS:
            where = f"{HUB_FOLDER}/{split}-*{EXTENSION}" if hub else f"{split}/*{EXTENSION}"
            raise DataError(f"no {split} split (expected {where})")
    return files


def _listed(root: DatasetRoot, folder: str) -> list[str]:
    try:
        names = root.fs.ls(f"{root.path}/{folder}", detail=False)
    except OSError as error:
        raise DataError(f"{folder}/: cannot list the folder ({error})") from None
    return sorted(n.rstrip("/").rsplit("/", 1)[-1] for n in names if n.endswith(EXTENSION))


def is_image_parquet_dir(url: str) -> bool:
    """A folder whose ``train/`` (or ``data/``) holds Parquet files and no raydd manifest (cheap)."""
    try:
        root = DatasetRoot(url)
        if root.is_file(MANIFEST_FILE):
            return False
        folder = "train" if root.is_dir("train") else HUB_FOLDER
        return any(n.endswith(EXTENSION) for n in root.fs.ls(f"{root.path}/{folder}", detail=False))
    except (DataError, OSError, ValueError):
        return False


def read_table(root: DatasetRoot, file: str) -> pa.Table:
    """One Parquet file, whole (``load_dataset`` in one process; Ray tasks stream it with ``iter_tables``)."""
    try:
        return pq.read_table(io.BytesIO(root.read(file, what="Parquet file")))
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"{file}: not a readable Parquet file ({error})") from None


def iter_tables(root: DatasetRoot, file: str, rows: int) -> Iterator[tuple[int, pa.Table]]:
    """(first row, table of up to ``rows`` rows) through one Parquet file, so a task never holds it whole."""
    first = 0
    try:
        with root.fs.open(f"{root.path}/{file}", "rb") as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=rows):
                yield first, pa.Table.from_batches([batch])
                first += batch.num_rows
    except FileNotFoundError:
        raise DataError(f"{file}: missing Parquet file") from None
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"{file}: not a readable Parquet file ({error})") from None


def class_label_names(schema: pa.Schema) -> list[str] | None:
    """A Hugging Face ``ClassLabel`` label column's names, from the file's schema metadata."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if raw is None:
        return None
    try:
        feature = json.loads(raw)["info"]["features"][LABEL_COLUMN]
    except (ValueError, KeyError, TypeError):
        return None
    names = feature.get("names") if isinstance(feature, dict) else None
    return [str(n) for n in names] if isinstance(names, list) and names else None


def image_column(table: pa.Table, file: str) -> str:
    name = next((c for c in IMAGE_COLUMNS if c in table.column_names), None)
    if name is None:
        raise DataError(f"{file}: no image column (expected one of {', '.join(IMAGE_COLUMNS)}; "
                        f"the file has {', '.join(table.column_names)})")
    return name


def encoded(value: object, where: str, what: str) -> bytes | None:
    """An encoded image from a cell: bytes, or the Hugging Face struct ``{"bytes", "path"}``."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("bytes")
        if value is None:
            raise DataError(f"{where}: the {what} has no bytes (a path alone is not read; embed the images)")
    if not isinstance(value, (bytes, bytearray)):
        raise DataError(f"{where}: the {what} column holds {type(value).__name__}, not encoded image bytes")
    return bytes(value)


@dataclass(frozen=True)
class FileColumns:
    """A file's cells by meaning, as Python values: the whole file, or a stretch from row ``first_row``."""

    image_column: str
    images: list
    labels: list
    captions: list
    masks: list
    first_row: int = 0


def file_columns(table: pa.Table, file: str, first_row: int = 0) -> FileColumns:
    """The columns a row needs (``table`` holds the file's rows from ``first_row``); a file without an image or
    a label column is a DataError naming it."""
    column = image_column(table, file)
    if LABEL_COLUMN not in table.column_names:
        raise DataError(f"{file}: no '{LABEL_COLUMN}' column (the file has {', '.join(table.column_names)})")
    caption_column = next((c for c in CAPTION_COLUMNS if c in table.column_names), None)
    empty = [None] * table.num_rows
    return FileColumns(column, table.column(column).to_pylist(), table.column(LABEL_COLUMN).to_pylist(),
                       table.column(caption_column).to_pylist() if caption_column else empty,
                       table.column(MASK_COLUMN).to_pylist() if MASK_COLUMN in table.column_names else empty,
                       first_row)


def parse_row(split: str, file: str, i: int, cells: FileColumns,
              names: list[str] | None) -> tuple[ParquetRow, bytes, bytes | None]:
    """Row ``i``'s metadata and its image and mask bytes (not decoded); a problem is a DataError naming it."""
    where, at = f"{file}:{i}", i - cells.first_row
    image = encoded(cells.images[at], where, f"'{cells.image_column}'")
    if image is None:
        raise DataError(f"{where}: no image (the '{cells.image_column}' cell is empty)")
    if cells.labels[at] is None:
        raise DataError(f"{where}: no label (the '{LABEL_COLUMN}' cell is empty)")
    label = _label(cells.labels[at], where)
    if names is not None and isinstance(label, int):
        if label >= len(names):
            raise DataError(f"{where}: label {label} is not a class of the file's ClassLabel ({len(names)} classes)")
        label = names[label]
    caption = cells.captions[at]
    if caption is not None and not isinstance(caption, str):
        raise DataError(f"{where}: the caption is {type(caption).__name__}, not text")
    mask = encoded(cells.masks[at], where, f"'{MASK_COLUMN}'")
    return ParquetRow(split, file, i, label, caption is not None, caption, mask is not None), image, mask


def read_schema_names(root: DatasetRoot, file: str) -> list[str] | None:
    """The ClassLabel names from one file's footer alone (no row is read)."""
    try:
        with root.fs.open(f"{root.path}/{file}", "rb") as handle:
            return class_label_names(pq.read_schema(handle))
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"{file}: not a readable Parquet file ({error})") from None


def listed_or_class_labels(root: DatasetRoot, names: list[str] | None) -> list[str] | None:
    """classes.json when present, else the ClassLabel names: the class order the rows are read under."""
    return listed_classes(root) or names


@register_source(SOURCE_NAME)
def load_image_parquet(request: SourceRequest) -> DatasetSplits:
    """Every file read and decoded in this process (the Ray path is ``raydd preprocess``)."""
    root = open_root(request, SOURCE_NAME)
    try:
        files = split_files(root)
        tables = {file: read_table(root, file) for split in files for file in files[split]}
        names = next((n for n in (class_label_names(t.schema) for t in tables.values()) if n), None)
        rows: dict[str, list[ParquetRow]] = {}
        members: dict[str, tuple[bytes, bytes | None]] = {}
        for split, split_paths in files.items():
            rows[split] = []
            for file in split_paths:
                table = tables.pop(file)
                cells = file_columns(table, file)
                for i in range(table.num_rows):
                    row, image, mask = parse_row(split, file, i, cells, names)
                    rows[split].append(row)
                    members[row.id] = (image, mask)
            if not rows[split]:
                raise DataError(f"{split}: the files hold no rows; each split needs at least one image")
        return assemble_splits(f"{SOURCE_NAME}:{root.display}", rows, listed_or_class_labels(root, names), request,
                               lambda row: members[row.id])
    except DataError as error:
        raise DataError(f"{SOURCE_NAME} {root.display}: {error}") from None
