"""Object isolation: x~ = m * x + (1 - m) * b, the input of the masked enhancements; and masks carried
onto a network's last feature map, for masked feature alignment at the feature level.

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


def mask_on_feature_map(masks: torch.Tensor, size: tuple[int, int], padding: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """The share of object pixels under each position of a feature map of ``size``: [N, 1, h, w] in [0, 1].

    ``padding`` is the network's ``frame_padding``: the zeros it puts around the input (28-px inputs
    run as 32 px), which are background. The mask is padded the same way, then averaged over the block
    of the padded frame each feature position covers (exact when the frame is a multiple of the map,
    as 32 px -> 4x4 for ConvNet-3; adaptive bins otherwise).
    """
    pad_h, pad_w = padding
    framed = F.pad(masks.to(torch.float32), (pad_w, pad_w, pad_h, pad_h)) if pad_h or pad_w else masks.to(torch.float32)
    return F.adaptive_avg_pool2d(framed, tuple(size))


def classes_without_objects(masks: torch.Tensor, class_indices: list[torch.Tensor]) -> list[int]:
    """Classes with images none of which has an object pixel (masks [N, 1, H, W], indices per class)."""
    has_object = masks.flatten(1).amax(dim=1).cpu() > 0
    return [c for c, index in enumerate(class_indices) if len(index) and not bool(has_object[index].any())]
