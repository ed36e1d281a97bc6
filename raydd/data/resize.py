"""Resizing whole uint8 image tensors (used by sources whose images arrive as one array)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CHUNK = 8192  # images per interpolate call, to keep the float copy small


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of uint8 [N, C, H, W] to [N, C, size, size], rounded back to uint8.

    Antialiasing is on so that downsizing averages pixels instead of skipping them.
    """
    if tuple(images.shape[2:]) == (size, size):
        return images
    parts = []
    for start in range(0, images.shape[0], _CHUNK):
        chunk = images[start : start + _CHUNK].to(torch.float32)
        resized = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        parts.append(resized.round().clamp(0, 255).to(torch.uint8))
    if not parts:
        return images.new_empty((0, images.shape[1], size, size))
    return torch.cat(parts)
