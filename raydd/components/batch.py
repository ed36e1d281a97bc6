"""Reading and writing the columns of a Ray-Data-style numpy batch.

Convention shared by every preprocessing component:

- ``image``: uint8, channels-last ``[B, H, W, C]`` (C = 1 or 3) or ``[B, H, W]`` for greyscale --
  the layout Ray Data, PIL and Parquet tensor columns carry. Images of different sizes arrive as
  an object array of ``[H, W, C]`` arrays, and the masks made for them go back the same way.
- ``caption``: object array of ``str`` or ``None``.
- ``mask``: uint8 ``[B, H, W]`` with values {0, 1}.
- ``id`` (optional): names rows in error messages; without it rows are named by position.

The tensor-facing methods of the components use raydd's in-memory layout instead
(``ImageData``: uint8 ``[N, C, H, W]``, masks ``[N, 1, H, W]``); ``images_from_tensor`` and
``masks_to_tensor`` convert between the two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..errors import DataError

Batch = dict[str, np.ndarray]


def row_names(batch: Mapping[str, np.ndarray], count: int) -> list[str]:
    """How each row is called in an error message: its id when the batch has one."""
    ids = batch.get("id")
    if ids is not None and len(ids) == count:
        return [f"row {i} (id {ids[i]!s})" for i in range(count)]
    return [f"row {i}" for i in range(count)]


def _as_hwc(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise DataError(f"{name}: images must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise DataError(f"{name}: expected an image [H, W, C] with C in 1/3/4, got shape {image.shape}")
    return image[:, :, :3] if image.shape[2] == 4 else image


def image_rows(batch: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The ``image`` column as a list of uint8 ``[H, W, C]`` arrays (views, not copies)."""
    if "image" not in batch:
        raise DataError(f"the batch has no 'image' column (columns: {', '.join(sorted(batch)) or 'none'})")
    column = batch["image"]
    names = row_names(batch, len(column))
    if column.dtype == object:
        return [_as_hwc(column[i], names[i]) for i in range(len(column))]
    if column.ndim == 3:  # [B, H, W] greyscale
        column = column[..., None]
    if column.ndim != 4:
        raise DataError(f"'image' column must be [B, H, W, C] or [B, H, W], got shape {column.shape}")
    return [_as_hwc(column[i], names[i]) for i in range(len(column))]


def mask_column(masks: Sequence[np.ndarray], like: np.ndarray) -> np.ndarray:
    """Pack per-row ``[H, W]`` masks the way the image column was packed (stacked or ragged)."""
    if like.dtype == object:
        out = np.empty(len(masks), dtype=object)
        for i, mask in enumerate(masks):
            out[i] = np.ascontiguousarray(mask, dtype=np.uint8)
        return out
    if not masks:
        return np.zeros((0, *like.shape[1:3]), dtype=np.uint8)
    return np.stack(masks).astype(np.uint8, copy=False)


def caption_rows(batch: Mapping[str, np.ndarray]) -> list[str | None]:
    """The ``caption`` column as Python strings, with ``None`` (or NaN from pandas) for absent ones."""
    if "caption" not in batch:
        raise DataError(f"the batch has no 'caption' column (columns: {', '.join(sorted(batch)) or 'none'})")
    rows: list[str | None] = []
    for value in batch["caption"]:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            rows.append(None)
        elif isinstance(value, bytes):
            rows.append(value.decode("utf-8"))
        else:
            rows.append(str(value))
    return rows


def text_column(texts: Sequence[str]) -> np.ndarray:
    """Strings as an object array (numpy's fixed-width unicode would truncate on later edits)."""
    out = np.empty(len(texts), dtype=object)
    for i, text in enumerate(texts):
        out[i] = text
    return out


def images_from_tensor(images: torch.Tensor | np.ndarray) -> list[np.ndarray]:
    """raydd layout uint8 ``[N, C, H, W]`` -> list of ``[H, W, C]`` arrays."""
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim != 4 or array.dtype != np.uint8:
        raise DataError(f"images must be uint8 [N, C, H, W], got {array.dtype} {array.shape}")
    return [_as_hwc(np.ascontiguousarray(image.transpose(1, 2, 0)), f"image {i}") for i, image in enumerate(array)]


def masks_to_tensor(masks: Sequence[np.ndarray]) -> torch.Tensor:
    """List of ``[H, W]`` masks (one size) -> uint8 ``[N, 1, H, W]``, ``ImageData.masks`` layout."""
    if not masks:
        return torch.zeros((0, 1, 0, 0), dtype=torch.uint8)
    return torch.from_numpy(np.stack(masks).astype(np.uint8, copy=False)).unsqueeze(1)
