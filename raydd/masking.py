"""Object isolation: x~ = m * x + (1 - m) * b, the input of the masked enhancements.

The fill b lives in the normalised space: ``mean`` is 0 (the dataset mean), ``blur`` a heavily blurred
copy of the image (background colour without its detail), ``noise`` standard normal pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _blur(x: torch.Tensor) -> torch.Tensor:
    size = max(3, (min(x.shape[-2:]) // 4) | 1)
    sigma = size / 3.0
    coords = torch.arange(size, dtype=x.dtype, device=x.device) - size // 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    horizontal = kernel.view(1, 1, 1, size).repeat(c, 1, 1, 1)
    vertical = kernel.view(1, 1, size, 1).repeat(c, 1, 1, 1)
    x = F.conv2d(F.pad(x, (size // 2, size // 2, 0, 0), mode="replicate"), horizontal, groups=c)
    return F.conv2d(F.pad(x, (0, 0, size // 2, size // 2), mode="replicate"), vertical, groups=c)


def isolate(images: torch.Tensor, masks: torch.Tensor, fill: str = "mean",
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep the object, replace the background by ``fill``; masks are [N, 1, H, W] in [0, 1]."""
    masks = masks.to(images.dtype)
    if fill == "mean":
        background = torch.zeros_like(images)
    elif fill == "blur":
        background = _blur(images)
    elif fill == "noise":
        background = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    else:
        raise ValueError(f"unknown fill {fill!r}")
    return masks * images + (1.0 - masks) * background
