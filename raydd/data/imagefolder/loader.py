"""The ``imagefolder`` source: a user's own images in the Hugging Face ImageFolder layout.

Layout: ``<root>/{train,test[,validation]}/metadata.jsonl`` plus the images (and masks) those
files name; an optional ``<root>/classes.json`` fixes class names and order.

All metadata is checked before any image is decoded, so a typo on line 9000 fails in a second,
not after minutes of decoding; nothing is ever written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...errors import ConfigError, DataError
from ..base import DatasetSplits, ImageData
from ..registry import SourceRequest, register_source
from ..splits import carve_validation
from ..stats import channel_mean_std
from .classes import CLASSES_FILE, class_names_for, label_indices, parse_classes_file
from .metadata import METADATA_FILE, MetadataRow, parse_metadata
from .pixels import GRAYSCALE_MODES, grey_to_rgb, image_pixels, mask_pixels, open_image
from .storage import DatasetRoot

REQUIRED_SPLITS = ("train", "test")
VALIDATION_SPLIT = "validation"


@dataclass(frozen=True)
class _Decoded:
    pixels: np.ndarray  # [H, W] or [H, W, 3]
    size: tuple[int, int]  # (width, height) as stored, before any resize
    grey: bool
    mask: np.ndarray | None


@dataclass(frozen=True)
class _Reference:
    """The image every other must match in size when no resize is requested."""

    size: tuple[int, int]
    path: str


def _read_split_rows(root: DatasetRoot, split: str) -> list[MetadataRow]:
    if not root.is_dir(split):
        raise DataError(f"missing {split}/ folder (expected {split}/{METADATA_FILE} and its images)")
    return parse_metadata(split, root.read(f"{split}/{METADATA_FILE}", what="metadata file"))


def _check_captions(rows: list[MetadataRow], require: bool) -> bool:
    """Whether the dataset has captions at all; with ``require``, every row needs a real one."""
    if require:
        for row in rows:
            if not row.has_caption or row.caption is None:
                raise DataError(f"{row.where}: missing caption (captions are required)")
            if not row.caption.strip():
                raise DataError(f"{row.where}: empty caption (captions are required)")
    return any(row.has_caption for row in rows)


def _check_masks(rows: list[MetadataRow]) -> bool:
    """Masks are all-or-nothing: a half-masked dataset would silently bias mask-using methods."""
    with_mask = next((row for row in rows if row.mask_file_name is not None), None)
    if with_mask is None:
        return False
    for row in rows:
        if row.mask_file_name is None:
            raise DataError(f"{row.where}: row has no 'mask_file_name' but other rows do (e.g. {with_mask.where})")
    return True


def _decode_row(root: DatasetRoot, row: MetadataRow, mode: str | None, size: int | None, masks: bool) -> _Decoded:
    image = open_image(root.read(row.image_path, what="image file"), row.image_path)
    mask = None
    if masks:
        mask_image = open_image(root.read(row.mask_path, what="mask file"), row.mask_path, what="mask")
        if mask_image.size != image.size:
            raise DataError(
                f"{row.mask_path}: mask is {_wh(mask_image.size)} but its image {row.image_path} is {_wh(image.size)}"
            )
        mask = mask_pixels(mask_image, size)
    return _Decoded(image_pixels(image, mode, size), image.size, image.mode in GRAYSCALE_MODES, mask)


def _wh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _check_size(row: MetadataRow, decoded: _Decoded, reference: _Reference) -> None:
    if decoded.size != reference.size:
        raise DataError(
            f"{row.image_path}: image is {_wh(decoded.size)} (WxH) but {reference.path} is {_wh(reference.size)}; "
            "all images must share one size: resize them, or let raydd resize with --set data.image_size=N"
        )


def _decode_split(
    root: DatasetRoot,
    rows: list[MetadataRow],
    mode: str | None,
    request: SourceRequest,
    masks: bool,
    reference: _Reference | None,
) -> tuple[list[_Decoded], _Reference]:
    decoded: list[_Decoded] = []
    work = lambda row: _decode_row(root, row, mode, request.image_size, masks)  # noqa: E731
    for row, item in zip(rows, root.map_in_order(work, rows)):
        if reference is None:
            reference = _Reference(item.size, row.image_path)
        if request.image_size is None:
            _check_size(row, item, reference)
        decoded.append(item)
    return decoded, reference


def _image_data(
    rows: list[MetadataRow],
    decoded: list[_Decoded],
    labels: list[int],
    class_names: list[str],
    captions: bool,
    colour: bool,
) -> ImageData:
    pixels = [grey_to_rgb(d.pixels) if colour and d.pixels.ndim == 2 else d.pixels for d in decoded]
    images = torch.from_numpy(np.stack(pixels))
    images = images.permute(0, 3, 1, 2).contiguous() if colour else images.unsqueeze(1)
    masks = None
    if decoded[0].mask is not None:
        masks = torch.from_numpy(np.stack([d.mask for d in decoded])).unsqueeze(1)
    return ImageData(
        images=images,
        labels=torch.tensor(labels, dtype=torch.int64),
        ids=[row.image_path for row in rows],
        class_names=list(class_names),
        captions=[row.caption for row in rows] if captions else None,
        masks=masks,
    )


@register_source("imagefolder")
def load_imagefolder(request: SourceRequest) -> DatasetSplits:
    if request.root is None:
        raise ConfigError("the imagefolder source needs the dataset's path (pass it as the dataset name or as root)")
    root = DatasetRoot(request.root)
    if not root.is_dir():
        raise DataError(f"imagefolder {root.display}: dataset root not found (or not a directory)")
    try:
        return _load(root, request)
    except DataError as error:
        # Messages inside name files relative to the root; say once which root that is.
        raise DataError(f"imagefolder {root.display}: {error}") from None


def _load(root: DatasetRoot, request: SourceRequest) -> DatasetSplits:
    # 1. All metadata, checked as a whole, before touching any image.
    split_names = [*REQUIRED_SPLITS, *([VALIDATION_SPLIT] if root.is_dir(VALIDATION_SPLIT) else [])]
    rows = {split: _read_split_rows(root, split) for split in split_names}
    eval_rows = [row for split in split_names[1:] for row in rows[split]]
    all_rows = [*rows["train"], *eval_rows]
    listed = parse_classes_file(root.read(CLASSES_FILE)) if root.is_file(CLASSES_FILE) else None
    class_names = class_names_for(rows["train"], eval_rows, listed)
    train_labels = {row.label for row in rows["train"]}
    labels = {split: label_indices(rows[split], train_labels, class_names) for split in split_names}
    captions = _check_captions(all_rows, request.require_captions)
    masks = _check_masks(all_rows)

    # 2. Pixels. Train decides the colour mode: grey only if every train image is grey.
    decoded = {}
    decoded["train"], reference = _decode_split(root, rows["train"], None, request, masks, None)
    colour = not all(d.grey for d in decoded["train"])
    for split in split_names[1:]:
        decoded[split], reference = _decode_split(
            root, rows[split], "RGB" if colour else "L", request, masks, reference
        )
    data = {
        split: _image_data(rows[split], decoded[split], labels[split], class_names, captions, colour)
        for split in split_names
    }

    if VALIDATION_SPLIT in data:
        train, val = data["train"], data[VALIDATION_SPLIT]
    else:
        train, val = carve_validation(data["train"], request.val_fraction, request.seed)
    mean, std = channel_mean_std(train.images)
    return DatasetSplits(
        name=f"imagefolder:{root.display}",
        train=train,
        val=val,
        test=data["test"],
        class_names=class_names,
        mean=mean,
        std=std,
        flip_ok=True,
    )
