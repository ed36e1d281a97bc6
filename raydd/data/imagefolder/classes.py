"""Turning metadata labels (names or integers) into class names and class indices.

Classes are defined by the train split (or by ``classes.json``); a class with no training
images, or an evaluation label training never saw, is an error because nothing could be
distilled for it or learned about it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ...errors import DataError
from .metadata import METADATA_FILE, MetadataRow

CLASSES_FILE = "classes.json"


def parse_classes_file(data: bytes) -> list[str]:
    """The optional ``classes.json``: a JSON list of distinct, non-empty class names."""
    try:
        names = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{CLASSES_FILE}: not valid JSON ({error})") from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise DataError(f"{CLASSES_FILE}: must be a non-empty JSON list of class-name strings")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"{CLASSES_FILE}: class names listed more than once: {duplicates}")
    return names


def _check_label_kinds(train: Sequence[MetadataRow], others: Sequence[MetadataRow]) -> type:
    """All labels must be names, or all integers: mixing them has no sensible meaning."""
    kind = type(train[0].label)
    for row in (*train, *others):
        if type(row.label) is not kind:
            expected = "class names (strings)" if kind is str else "integers"
            raise DataError(f"{row.where}: label {row.label!r} but {train[0].where} makes labels {expected}")
    return kind


def class_names_for(
    train: Sequence[MetadataRow], others: Sequence[MetadataRow], listed: list[str] | None
) -> list[str]:
    """Class names in index order: ``classes.json`` if given, else derived from train labels."""
    kind = _check_label_kinds(train, others)
    if listed is not None:
        for row in train:
            if kind is int and row.label >= len(listed):
                raise DataError(f"{row.where}: label {row.label} is out of range for the {len(listed)} names in {CLASSES_FILE}")
            if kind is str and row.label not in listed:
                raise DataError(f"{row.where}: label {row.label!r} is not listed in {CLASSES_FILE}")
        names = list(listed)
    elif kind is str:
        names = sorted({row.label for row in train})
    else:
        names = [str(i) for i in range(max(row.label for row in train) + 1)]

    seen = {row.label for row in train}
    for index, name in enumerate(names):
        if (name if kind is str else index) not in seen:
            raise DataError(f"train/{METADATA_FILE}: class {name!r} has no train images; every class needs at least one")
    return names


def label_indices(rows: Sequence[MetadataRow], train_labels: set[str | int], names: list[str]) -> list[int]:
    """Class index of each row; a label absent from train is an error naming the file."""
    index_of = {name: i for i, name in enumerate(names)}
    indices = []
    for row in rows:
        if row.label not in train_labels:
            raise DataError(f"{row.where}: unknown label {row.label!r}, not seen in the train split")
        indices.append(index_of[row.label] if isinstance(row.label, str) else row.label)
    return indices
