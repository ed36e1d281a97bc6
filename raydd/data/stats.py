"""Per-channel pixel statistics for normalisation."""

from __future__ import annotations

import torch

_CHUNK = 4096  # images per step: bounds the float64 copy to a few hundred MB at most


def channel_mean_std(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and (population) std per channel of uint8 [N, C, H, W] images, in [0, 1] units.

    A channel with no variation gets std 1.0, because dividing by zero would turn every
    normalised pixel into inf/nan.
    """
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], _CHUNK):
        chunk = images[start : start + _CHUNK].to(torch.float64) / 255.0
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += chunk.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    if count == 0:
        raise ValueError("cannot compute pixel statistics of an empty image set")
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
