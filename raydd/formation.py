"""Multi-formation (IDC; Kim et al., ICML 2022): one stored image holds factor² smaller images.

A stored image of H×W is cut into a factor×factor grid of (H/factor)×(W/factor) tiles, and each tile is
upsampled back to H×W (bilinear) to give one training image. With factor 2, IPC 10 stores 10 images
per class but a network trained on the set sees 40. Decoding is differentiable, so distillation
optimises the stored pixels through it; evaluation, the audit and the report decode the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raydd.errors import ConfigError


def check_factor(factor: int, image_size: tuple[int, int]) -> None:
    if factor < 1:
        raise ConfigError(f"dm.formation must be >= 1, got {factor}")
    if image_size[0] % factor or image_size[1] % factor:
        raise ConfigError(f"dm.formation={factor} needs an image side divisible by {factor}, "
                          f"got {image_size[0]}x{image_size[1]}")


def decode(images: torch.Tensor, factor: int) -> torch.Tensor:
    """[N, C, H, W] stored images -> [N * factor², C, H, W] training images, tiles in row-major order.

    Image ``i * factor² + a * factor + b`` is the tile in grid row ``a``, column ``b`` of stored image ``i``.
    """
    if factor == 1:
        return images
    n, c, h, w = images.shape
    th, tw = h // factor, w // factor
    tiles = images.reshape(n, c, factor, th, factor, tw).permute(0, 2, 4, 1, 3, 5)
    tiles = tiles.reshape(n * factor * factor, c, th, tw)
    return F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)


def encode(images: torch.Tensor, factor: int) -> torch.Tensor:
    """[N * factor², C, H, W] full-size images -> [N, C, H, W] stored images (each tile area-downsampled).

    The initialisation of a multi-formation set: factor² real images packed into one stored image.
    ``decode(encode(x))`` is a blurred ``x``, not ``x``.
    """
    if factor == 1:
        return images
    m, c, h, w = images.shape
    if m % (factor * factor):
        raise ValueError(f"encode: {m} images do not fill stored images of {factor * factor}")
    n = m // (factor * factor)
    small = F.interpolate(images, size=(h // factor, w // factor), mode="area")
    grid = small.reshape(n, factor, factor, c, h // factor, w // factor).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(n, c, h, w).contiguous()


def decoded_labels(labels: torch.Tensor, factor: int) -> torch.Tensor:
    return labels.repeat_interleave(factor * factor)
