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
