"""The ``imagefolder`` source: a user's own images in the Hugging Face ImageFolder layout.

Layout: ``<root>/{train,test[,validation]}/metadata.jsonl`` plus the images (and masks) those
files name; an optional ``<root>/classes.json`` fixes class names and order.

All metadata is checked before any image is decoded, so a typo on line 9000 fails in a second,
not after minutes of decoding; nothing is ever written.

``check_rows`` and ``assemble_splits`` work on any rows that look like ``MetadataRow`` (``id``,
``where``, ``image_path``, ``mask_path``, ``label``, ``caption``...): the webdataset source and the
Ray preprocessing path reuse them, so every source means the same by a label, a caption or a mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...errors import ConfigError, DataError
from ..base import DatasetSplits, ImageData
from ..registry import SourceRequest, register_source
from ..splits import carve_validation
from ..stats import channel_mean_std
from .classes import CLASSES_FILE, class_names_for, label_indices, parse_classes_file
from .metadata import METADATA_FILE, MetadataRow, parse_metadata
from .pixels import Decoded, decode_pair, grey_to_rgb, wh
from .storage import DatasetRoot

REQUIRED_SPLITS = ("train", "test")
VALIDATION_SPLIT = "validation"

# (image bytes, mask bytes or None) of a row; raises a DataError naming the missing file.
Fetch = Callable[[Any], tuple[bytes, bytes | None]]


@dataclass(frozen=True)
class Reference:
    """The image every other must match in size when no resize is requested."""

    size: tuple[int, int]
    path: str


@dataclass(frozen=True)
class RowPlan:
    """What the rows' metadata decides, before any pixel is read."""

    class_names: list[str]
    labels: dict[str, list[int]]  # split folder -> class index of each row
    captions: bool  # the dataset has captions at all
    masks: bool  # every row has a mask


def _read_split_rows(root: DatasetRoot, split: str) -> list[MetadataRow]:
    if not root.is_dir(split):
        raise DataError(f"missing {split}/ folder (expected {split}/{METADATA_FILE} and its images)")
    return parse_metadata(split, root.read(f"{split}/{METADATA_FILE}", what="metadata file"))


def _check_captions(rows: Sequence[Any], require: bool) -> bool:
    """Whether the dataset has captions at all; with ``require``, every row needs a real one."""
    if require:
        for row in rows:
            if not row.has_caption or row.caption is None:
                raise DataError(f"{row.where}: missing caption (captions are required)")
            if not row.caption.strip():
                raise DataError(f"{row.where}: empty caption (captions are required)")
    return any(row.has_caption for row in rows)


def _check_masks(rows: Sequence[Any]) -> bool:
    """Masks are all-or-nothing: a half-masked dataset would silently bias mask-using methods."""
    with_mask = next((row for row in rows if row.mask_path is not None), None)
    if with_mask is None:
        return False
    for row in rows:
        if row.mask_path is None:
            raise DataError(f"{row.where}: row has no {row.MASK_FIELD} but other rows do (e.g. {with_mask.where})")
    return True


def check_rows(rows: dict[str, Sequence[Any]], listed: list[str] | None, require_captions: bool) -> RowPlan:
    """Class names, label indices, captions and masks, checked over all rows (train first)."""
    split_names = list(rows)
    eval_rows = [row for split in split_names[1:] for row in rows[split]]
    all_rows = [*rows["train"], *eval_rows]
    class_names = class_names_for(rows["train"], eval_rows, listed)
    train_labels = {row.label for row in rows["train"]}
    labels = {split: label_indices(rows[split], train_labels, class_names) for split in split_names}
    return RowPlan(class_names, labels, _check_captions(all_rows, require_captions), _check_masks(all_rows))


def size_problem(image_path: str, size: tuple[int, int], reference: Reference) -> str | None:
    """Why an image of ``size`` cannot join a dataset of ``reference``'s size (None: it can)."""
    if size == reference.size:
        return None
    return (f"{image_path}: image is {wh(size)} (WxH) but {reference.path} is {wh(reference.size)}; "
            "all images must share one size: resize them, or let raydd resize with --set data.image_size=N")


def _decode_split(fetch: Fetch, rows: Sequence[Any], mode: str | None, request: SourceRequest,
                  reference: Reference | None, map_in_order) -> tuple[list[Decoded], Reference]:
    decoded: list[Decoded] = []

    def work(row):
        image, mask = fetch(row)
        return decode_pair(image, row.image_path, mask, row.mask_path, mode, request.image_size)

    for row, item in zip(rows, map_in_order(work, rows)):
        if reference is None:
            reference = Reference(item.size, row.image_path)
        if request.image_size is None:
            problem = size_problem(row.image_path, item.size, reference)
            if problem is not None:
                raise DataError(problem)
        decoded.append(item)
    return decoded, reference


def _image_data(rows: Sequence[Any], decoded: list[Decoded], labels: list[int], class_names: list[str],
                captions: bool, colour: bool) -> ImageData:
    pixels = [grey_to_rgb(d.pixels) if colour and d.pixels.ndim == 2 else d.pixels for d in decoded]
    images = torch.from_numpy(np.stack(pixels))
    images = images.permute(0, 3, 1, 2).contiguous() if colour else images.unsqueeze(1)
    masks = None
    if decoded[0].mask is not None:
        masks = torch.from_numpy(np.stack([d.mask for d in decoded])).unsqueeze(1)
    return ImageData(
        images=images,
        labels=torch.tensor(labels, dtype=torch.int64),
        ids=[row.id for row in rows],
        class_names=list(class_names),
        captions=[row.caption for row in rows] if captions else None,
        masks=masks,
    )


def assemble_splits(name: str, rows: dict[str, Sequence[Any]], listed: list[str] | None, request: SourceRequest,
                    fetch: Fetch, map_in_order=None) -> DatasetSplits:
    """Rows of ``train``, ``test`` (and ``validation``) -> checked, decoded DatasetSplits.

    Train decides the colour mode: grey only if every train image is grey.
    """
    map_in_order = map_in_order or (lambda work, items: map(work, items))
    plan = check_rows(rows, listed, request.require_captions)
    split_names = list(rows)
    decoded = {}
    decoded["train"], reference = _decode_split(fetch, rows["train"], None, request, None, map_in_order)
    colour = not all(d.grey for d in decoded["train"])
    for split in split_names[1:]:
        decoded[split], reference = _decode_split(fetch, rows[split], "RGB" if colour else "L", request, reference,
                                                  map_in_order)
    data = {split: _image_data(rows[split], decoded[split], plan.labels[split], plan.class_names, plan.captions,
                               colour)
            for split in split_names}
    if VALIDATION_SPLIT in data:
        train, val = data["train"], data[VALIDATION_SPLIT]
    else:
        train, val = carve_validation(data["train"], request.val_fraction, request.seed)
    mean, std = channel_mean_std(train.images)
    return DatasetSplits(name=name, train=train, val=val, test=data["test"], class_names=plan.class_names,
                         mean=mean, std=std, flip_ok=True)


def split_folders(root: DatasetRoot) -> list[str]:
    """``train``, ``test`` and, when present, ``validation``: the folders a source reads, in that order."""
    return [*REQUIRED_SPLITS, *([VALIDATION_SPLIT] if root.is_dir(VALIDATION_SPLIT) else [])]


def listed_classes(root: DatasetRoot) -> list[str] | None:
    return parse_classes_file(root.read(CLASSES_FILE)) if root.is_file(CLASSES_FILE) else None


def open_root(request: SourceRequest, source: str) -> DatasetRoot:
    if request.root is None:
        raise ConfigError(f"the {source} source needs the dataset's path (pass it as the dataset name or as root)")
    root = DatasetRoot(request.root)
    if not root.is_dir():
        raise DataError(f"{source} {root.display}: dataset root not found (or not a directory)")
    return root


def read_imagefolder_rows(root: DatasetRoot) -> dict[str, list[MetadataRow]]:
    """Every split's metadata rows (small files); no image is read."""
    return {split: _read_split_rows(root, split) for split in split_folders(root)}


@register_source("imagefolder")
def load_imagefolder(request: SourceRequest) -> DatasetSplits:
    root = open_root(request, "imagefolder")
    try:
        rows = read_imagefolder_rows(root)

        def fetch(row: MetadataRow) -> tuple[bytes, bytes | None]:
            image = root.read(row.image_path, what="image file")
            return image, None if row.mask_path is None else root.read(row.mask_path, what="mask file")

        return assemble_splits(f"imagefolder:{root.display}", rows, listed_classes(root), request, fetch,
                               root.map_in_order)
    except DataError as error:
        # Messages inside name files relative to the root; say once which root that is.
        raise DataError(f"imagefolder {root.display}: {error}") from None
