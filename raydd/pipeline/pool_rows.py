"""The trained model pool's batches, read from a preprocessed source's class partitions.

The pool's trainings draw their batches from the seed and the training split's size alone
(``raydd.methods.model_pool``), so the driver knows every position a stretch of steps will use before
it reads an image. It reads the class partitions one at a time and keeps only those positions: its peak
is one class plus one stretch of batches (``FETCH_BYTES`` of pixels), not the training split, and the
networks are the ones a process holding the whole split would train (a whole read lists the classes in
``partition_order``, each class's rows in its own order).
"""

from __future__ import annotations

import torch

from raydd.config import Config
from raydd.data.parquet import partition_order
from raydd.errors import DataError
from raydd.methods.model_pool import POOL_BATCH
from raydd.run_inputs import load_splits

FETCH_BYTES = 256 * 1024 * 1024  # pixels (float32) one fetch may hold


class ClassPartitionImages:
    """The training split of a preprocessed source as the pool's trainings see it, fetched by position."""

    def __init__(self, cfg: Config, class_sizes: dict[int, int], image_shape: tuple[int, int, int],
                 fetch_bytes: int | None = None) -> None:
        self.cfg, self.image_shape = cfg, image_shape
        self.parts: list[tuple[int, int, int]] = []  # (class, first position, rows) in a whole read's order
        offset = 0
        for c in partition_order(len(class_sizes)):
            self.parts.append((c, offset, class_sizes[c]))
            offset += class_sizes[c]
        self.size = offset
        channels, height, width = image_shape
        batch_bytes = min(POOL_BATCH, max(1, self.size)) * channels * height * width * 4
        self.steps_per_fetch = max(1, (fetch_bytes or FETCH_BYTES) // batch_bytes)

    def fetch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.empty(len(index), *self.image_shape)
        labels = torch.empty(len(index), dtype=torch.int64)
        for c, first, rows in self.parts:
            hit = (index >= first) & (index < first + rows)
            if not bool(hit.any()):
                continue
            splits = load_splits(self.cfg, classes=[c], pixels=("train",))
            if len(splits.train) != rows:  # the source was rewritten under the run
                raise DataError(f"{self.cfg.data.name}: class {splits.class_names[c]!r} has {len(splits.train)} "
                                f"training rows, {rows} when the run started; was it preprocessed again?")
            wanted = index[hit] - first
            images[hit] = splits.normalize(splits.train.images[wanted])
            labels[hit] = splits.train.labels[wanted]
        return images, labels
