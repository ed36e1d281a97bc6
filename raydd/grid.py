"""The synthetic-set picture: one row per class, class names at the left.

Outside ``raydd.report`` because distillation (synthetic.png) and the audit (nn_pairs.png) draw it too;
matplotlib is imported on the first picture, never at import.
"""

from __future__ import annotations

import torch

from raydd.figures import png_bytes, subplots
from raydd.storage import write_bytes_atomic


def grid_png(images: torch.Tensor, labels: torch.Tensor, class_names: list[str], *, max_per_class: int = 10,
             title: str | None = None, dpi: int = 100) -> bytes:
    """PNG bytes of ``images`` (floats in [0, 1], [N, C, H, W]) arranged one row per class.

    ``dpi`` scales the whole picture: the HTML report asks for more so class names stay legible.
    """
    rows = [torch.nonzero(labels == c).flatten()[:max_per_class] for c in range(len(class_names))]
    cols = max(1, max(len(r) for r in rows))
    fig, axes = subplots(len(rows), cols, figsize=(0.75 * cols + 1.6, 0.75 * len(rows) + 0.4), squeeze=False)
    for c, index in enumerate(rows):
        for j in range(cols):
            ax = axes[c][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(index):
                img = images[index[j]].detach().cpu().float().clamp(0, 1)
                if img.shape[0] == 1:
                    ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                else:
                    ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            if j == 0:
                ax.set_ylabel(class_names[c], rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    # Leave the title its own band above the first row.
    top = 1.0 - 0.3 / fig.get_figheight() if title else 1.0
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, top))
    return png_bytes(fig, dpi=dpi)


def write_grid(path: str, images: torch.Tensor, labels: torch.Tensor, class_names: list[str], **kwargs) -> str:
    write_bytes_atomic(path, grid_png(images, labels, class_names, **kwargs))
    return path
