"""A picture of a dataset as raydd sees it: train images per class, mask outlines, captions."""

from __future__ import annotations

import textwrap

from raydd.data import DatasetSplits
from raydd.storage import write_bytes_atomic


def show_data_grid(splits: DatasetSplits, n_per_class: int, path: str) -> str:
    """PNG of the first ``n_per_class`` train images of each class, with the outline of each mask
    and the caption under each image; works for any source (no outline/caption where absent)."""
    from raydd.figures import png_bytes, subplots

    data = splits.train
    rows = [index[:n_per_class] for index in data.indices_by_class()]
    cols = max(1, n_per_class)
    figure, axes = subplots(len(rows), cols, figsize=(1.9 * cols + 1.2, 2.3 * len(rows)), squeeze=False)
    for c, index in enumerate(rows):
        for j in range(cols):
            ax = axes[c][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(splits.class_names[c], rotation=0, ha="right", va="center", fontsize=8)
            if j >= len(index):
                ax.axis("off")
                continue
            i = int(index[j])
            image = data.images[i].permute(1, 2, 0).numpy()
            ax.imshow(image[:, :, 0] if image.shape[2] == 1 else image, cmap="gray" if image.shape[2] == 1 else None,
                      vmin=0, vmax=255, interpolation="nearest")
            if data.masks is not None and data.masks[i].any():
                ax.contour(data.masks[i, 0].numpy(), levels=[0.5], colors="magenta", linewidths=0.7)
            if data.captions is not None and data.captions[i]:
                ax.set_xlabel(textwrap.fill(data.captions[i], 30), fontsize=5)
    figure.suptitle(f"{splits.name}: train images, mask outlines, captions", fontsize=9)
    figure.tight_layout(pad=0.4, rect=(0, 0, 1, 1 - 0.35 / (2.3 * len(rows))))  # leave room for the title
    write_bytes_atomic(str(path), png_bytes(figure, dpi=110))
    return str(path)
