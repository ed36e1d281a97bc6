"""Per-channel pixel statistics for normalisation.

The statistics are computed from exact integer sums, so that sums gathered piecewise (per block of
rows in Ray Data tasks) give the same figures, to the last bit, as one pass over all images.
"""

from __future__ import annotations

import numpy as np
import torch

_CHUNK = 4096  # images per step: bounds the int64 copy


def pixel_sums(pixels: np.ndarray) -> tuple[list[int], list[int]]:
    """Per-channel (sum, sum of squares) of uint8 pixels [..., H, W, C] or [H, W] (one channel), exact."""
    values = pixels.astype(np.int64)
    if values.ndim == 2:
        values = values[..., None]
    flat = values.reshape(-1, values.shape[-1])
    return [int(v) for v in flat.sum(axis=0)], [int(v) for v in np.square(flat).sum(axis=0)]


def mean_std_from_sums(total: list[int], total_sq: list[int], count: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and (population) std per channel in [0, 1] units from integer pixel sums over ``count`` pixels.

    A channel with no variation gets std 1.0, because dividing by zero would turn every
    normalised pixel into inf/nan.
    """
    if count == 0:
        raise ValueError("cannot compute pixel statistics of an empty image set")
    means, stds = [], []
    for s, sq in zip(total, total_sq):
        mean = s / count
        variance = max(sq / count - mean * mean, 0.0) / (255.0 * 255.0)
        std = variance ** 0.5
        means.append(mean / 255.0)
        stds.append(std if std > 1e-8 else 1.0)
    return tuple(means), tuple(stds)


def channel_mean_std(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and (population) std per channel of uint8 [N, C, H, W] images, in [0, 1] units."""
    channels = images.shape[1]
    total, total_sq = [0] * channels, [0] * channels
    for start in range(0, images.shape[0], _CHUNK):
        chunk = images[start : start + _CHUNK].permute(0, 2, 3, 1).numpy()
        sums, squares = pixel_sums(chunk)
        total = [a + b for a, b in zip(total, sums)]
        total_sq = [a + b for a, b in zip(total_sq, squares)]
    return mean_std_from_sums(total, total_sq, images.shape[0] * images.shape[2] * images.shape[3])
