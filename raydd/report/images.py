"""Single images as small PNGs (for the captioned view, where each image sits above its sentence)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def tensor_png(image: torch.Tensor, *, scale: int = 3) -> bytes:
    """PNG bytes of one image (floats in [0, 1], [C, H, W]), enlarged ``scale`` times without smoothing."""
    pixels = (image.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8)
    array = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
    picture = Image.fromarray(np.ascontiguousarray(array))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()
