"""Decoding image and mask bytes with Pillow into uint8 arrays.

Any decoder failure becomes a DataError naming the file: Pillow raises a zoo of exception
types for damaged files (OSError, SyntaxError, ValueError, ...), and none of them is a bug here.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from ...errors import DataError

# Modes whose pixels carry no colour; "LA" loses only its alpha when made grey.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def open_image(data: bytes, shown_as: str, what: str = "image") -> Image.Image:
    """Fully decode ``data`` (Image.open alone only reads the header)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:
        raise DataError(f"{shown_as}: corrupt or unreadable {what} (not in any image format Pillow knows)") from None
    except Exception as error:  # noqa: BLE001 - see module docstring
        raise DataError(f"{shown_as}: corrupt or unreadable {what} ({type(error).__name__}: {error})") from None
    return image


def image_pixels(image: Image.Image, mode: str | None, size: int | None) -> np.ndarray:
    """[H, W] for grey or [H, W, 3] for colour; ``mode`` forces "L"/"RGB", None keeps the image's kind."""
    if mode is None:
        mode = "L" if image.mode in GRAYSCALE_MODES else "RGB"
    converted = image.convert(mode) if image.mode != mode else image
    if size is not None and converted.size != (size, size):
        converted = converted.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(converted, dtype=np.uint8).copy()


def mask_pixels(image: Image.Image, size: int | None) -> np.ndarray:
    """[H, W] of 0/1: 0 in the file is background, any other value is the object.

    Raw values are used (palette indices for "P" images), so a palette mapping index 0 to a
    bright colour still means background.
    """
    values = np.asarray(image)
    if values.ndim == 3:
        colour_channels = 1 if image.mode == "LA" else 3
        values = values[..., :colour_channels].max(axis=-1)
    binary = (values != 0).astype(np.uint8)
    if size is not None and binary.shape != (size, size):
        binary = np.asarray(Image.fromarray(binary).resize((size, size), Image.Resampling.NEAREST)).copy()
    return binary


def grey_to_rgb(pixels: np.ndarray) -> np.ndarray:
    """Give an [H, W] grey image three identical channels (what Pillow's L->RGB does)."""
    return np.repeat(pixels[..., None], 3, axis=-1)


@dataclass(frozen=True)
class Decoded:
    """One image (and its mask) as pixels, plus what the dataset-wide checks need to know about it."""

    pixels: np.ndarray  # [H, W] or [H, W, 3]
    size: tuple[int, int]  # (width, height) as stored, before any resize
    grey: bool
    mask: np.ndarray | None


def decode_pair(image: bytes, image_name: str, mask: bytes | None, mask_name: str | None,
                mode: str | None, size: int | None) -> Decoded:
    """Decode an image and its optional mask (checked to be the image's size); errors name the files."""
    picture = open_image(image, image_name)
    mask_values = None
    if mask is not None:
        mask_image = open_image(mask, mask_name, what="mask")
        if mask_image.size != picture.size:
            raise DataError(f"{mask_name}: mask is {wh(mask_image.size)} but its image {image_name} is "
                            f"{wh(picture.size)}")
        mask_values = mask_pixels(mask_image, size)
    return Decoded(image_pixels(picture, mode, size), picture.size, picture.mode in GRAYSCALE_MODES, mask_values)


def wh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
