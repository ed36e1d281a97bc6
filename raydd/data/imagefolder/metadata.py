"""Parsing one split's ``metadata.jsonl`` into checked rows.

Every problem is reported with the split-relative location (``train/metadata.jsonl line 7``)
and, once known, the image it concerns, so the user can fix the file without guessing.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

from ...errors import DataError

METADATA_FILE = "metadata.jsonl"


@dataclass(frozen=True)
class MetadataRow:
    MASK_FIELD = "'mask_file_name'"  # how an error names a missing mask
    split: str  # split folder name: train, validation or test
    line: int  # 1-based line in metadata.jsonl
    file_name: str  # normalised, relative to the split folder
    label: str | int
    has_caption: bool
    caption: str | None
    mask_file_name: str | None

    @property
    def image_path(self) -> str:
        """Path relative to the dataset root; also the image's id."""
        return f"{self.split}/{self.file_name}"

    @property
    def id(self) -> str:
        return self.image_path

    @property
    def mask_path(self) -> str | None:
        return None if self.mask_file_name is None else f"{self.split}/{self.mask_file_name}"

    @property
    def where(self) -> str:
        return f"{self.split}/{METADATA_FILE} line {self.line} ({self.image_path})"


def _relative_file(value: object, key: str, where: str) -> str:
    """A non-empty relative path that stays inside the split folder."""
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
    normalised = posixpath.normpath(value)
    if posixpath.isabs(normalised) or normalised == ".." or normalised.startswith("../"):
        raise DataError(f"{where}: '{key}' {value!r} points outside the split folder")
    return normalised


def _label(value: object, where: str) -> str | int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{where}: 'label' must be a class name or a non-negative integer, got {value!r}")
    if isinstance(value, int) and value < 0:
        raise DataError(f"{where}: 'label' must be a class name or a non-negative integer, got {value}")
    if isinstance(value, str) and not value.strip():
        raise DataError(f"{where}: 'label' is an empty string")
    return value


def _row(split: str, line_number: int, record: object) -> MetadataRow:
    where = f"{split}/{METADATA_FILE} line {line_number}"
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "file_name" not in record:
        raise DataError(f"{where}: row has no 'file_name'")
    file_name = _relative_file(record["file_name"], "file_name", where)
    where = f"{where} ({split}/{file_name})"
    if "label" not in record:
        raise DataError(f"{where}: row has no 'label'")
    label = _label(record["label"], where)
    caption = record.get("caption")
    if caption is not None and not isinstance(caption, str):
        raise DataError(f"{where}: 'caption' must be a string, got {caption!r}")
    mask = record.get("mask_file_name")
    return MetadataRow(
        split=split,
        line=line_number,
        file_name=file_name,
        label=label,
        has_caption="caption" in record,
        caption=caption,
        mask_file_name=None if mask is None else _relative_file(mask, "mask_file_name", where),
    )


def parse_metadata(split: str, data: bytes) -> list[MetadataRow]:
    """Rows of one split's metadata.jsonl, in file order; blank lines are allowed."""
    shown = f"{split}/{METADATA_FILE}"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{shown}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    rows: list[MetadataRow] = []
    first_line_of: dict[str, int] = {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{shown} line {line_number}: malformed JSON ({error.msg} at column {error.colno})") from None
        row = _row(split, line_number, record)
        if row.file_name in first_line_of:
            raise DataError(
                f"{row.where}: {row.image_path} is listed twice (also on line {first_line_of[row.file_name]})"
            )
        first_line_of[row.file_name] = line_number
        rows.append(row)
    if not rows:
        raise DataError(f"{shown}: no rows; each split needs at least one image")
    return rows


# One split's metadata as Arrow columns (a driver that must not hold one Python object per line).
# ``label`` is the label as JSON (``"cat"`` or ``3``): a name or an index, told apart without parsing.
_CHUNK_ROWS = 8192
_PIECE_CHARS = 1 << 20


def _metadata_schema():
    import pyarrow as pa

    return pa.schema([("line", pa.int64()), ("file_name", pa.string()), ("label", pa.string()),
                      ("has_caption", pa.bool_()), ("caption", pa.string()), ("mask_file_name", pa.string())])


def _lines(text: str):
    """``text.splitlines()``, one piece at a time: pieces end after a newline, which is a line end for both."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + _PIECE_CHARS)
        end = len(text) if end < 0 else end + 1
        yield from text[start:end].splitlines()
        start = end


def _first_duplicate(split: str, table) -> DataError | None:
    """The first line (in file order) whose file was listed before, as ``parse_metadata`` reports it.

    By a stable sort of the names (equal names end up side by side, in file order) rather than a hash of
    every name: at 200 000 rows the hash table peaked at about 34 MB more of the driver's memory.
    """
    import numpy as np
    import pyarrow.compute as pc

    if table.num_rows < 2:
        return None
    names = table.column("file_name")
    order = pc.sort_indices(table.select(["file_name"]), sort_keys=[("file_name", "ascending")])
    ordered = names.take(order).combine_chunks()
    count = len(ordered)
    same = pc.equal(ordered.slice(1), ordered.slice(0, count - 1)).to_numpy(zero_copy_only=False)
    repeats = np.flatnonzero(same) + 1  # sorted places whose name is the one before them
    if not len(repeats):
        return None
    order = order.to_numpy()
    place = int(repeats[np.argmin(order[repeats])])  # the repeat that comes first in the file
    group = place
    while group > 0 and same[group - 1]:
        group -= 1  # back to the name's first place: its first line, the sort being stable
    at, first = int(order[place]), int(order[group])
    line = table.column("line")[at].as_py()
    file_name = table.column("file_name")[at].as_py()
    also = table.column("line")[first].as_py()
    where = f"{split}/{METADATA_FILE} line {line} ({split}/{file_name})"
    return DataError(f"{where}: {split}/{file_name} is listed twice (also on line {also})")


def parse_metadata_columns(split: str, data: bytes):
    """``parse_metadata`` as a pyarrow Table (schema ``_metadata_schema()``): same checks, same messages."""
    import pyarrow as pa

    schema = _metadata_schema()
    shown = f"{split}/{METADATA_FILE}"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{shown}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    del data
    batches = []
    columns: dict[str, list] = {name: [] for name in schema.names}

    def flush() -> None:
        if columns["line"]:
            batches.append(pa.record_batch([pa.array(columns[n], schema.field(n).type) for n in schema.names],
                                           schema=schema))
            for values in columns.values():
                values.clear()

    problem: DataError | None = None
    try:
        for line_number, line in enumerate(_lines(text), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{shown} line {line_number}: malformed JSON ({error.msg} at column {error.colno})"
                                ) from None
            row = _row(split, line_number, record)
            columns["line"].append(line_number)
            columns["file_name"].append(row.file_name)
            columns["label"].append(json.dumps(row.label))
            columns["has_caption"].append(row.has_caption)
            columns["caption"].append(row.caption)
            columns["mask_file_name"].append(row.mask_file_name)
            if len(columns["line"]) >= _CHUNK_ROWS:
                flush()
    except DataError as error:
        problem = error  # a file listed twice on an earlier line is reported first
    flush()
    table = pa.Table.from_batches(batches, schema=schema)
    duplicate = _first_duplicate(split, table)
    if duplicate is not None:
        raise duplicate
    if problem is not None:
        raise problem
    if not table.num_rows:
        raise DataError(f"{shown}: no rows; each split needs at least one image")
    return table
