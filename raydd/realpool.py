"""Real training images resident on the compute device, with per-class index lists.

The distillation inner loop samples from here every iteration; keeping the normalised images on the
device (instead of a DataLoader) removes the per-step host copy and collation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raydd.data import DatasetSplits, ImageData
from raydd.seeding import generator


@dataclass
class RealPool:
    images: torch.Tensor  # float32 [N, C, H, W], normalised, on device
    labels: torch.Tensor  # int64 [N], on device
    class_indices: list[torch.Tensor]  # per class: int64 indices into images (CPU)
    ids: list[str]
    masks: torch.Tensor | None = None  # float32 [N, 1, H, W] in {0, 1}, on device
    caption_emb: torch.Tensor | None = None  # float32 [N, d], on device

    @classmethod
    def from_data(cls, splits: DatasetSplits, data: ImageData, device: torch.device,
                  caption_emb: torch.Tensor | None = None) -> "RealPool":
        images = splits.normalize(data.images.to(device))
        masks = data.masks.to(device=device, dtype=torch.float32) if data.masks is not None else None
        return cls(
            images=images,
            labels=data.labels.to(device),
            class_indices=data.indices_by_class(),
            ids=list(data.ids),
            masks=masks,
            caption_emb=caption_emb.to(device=device, dtype=torch.float32) if caption_emb is not None else None,
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_indices)

    def sample_indices(self, classes: list[int], n: int, seed: int, *keys: object) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to ``n`` distinct images per class, drawn from a seed that depends on the class alone.

        Returns (indices, group) where group[i] is the position of the sample's class in ``classes``.
        Seeding per class keeps a class's draw independent of which other classes a worker owns.
        """
        picks, groups = [], []
        for position, c in enumerate(classes):
            pool = self.class_indices[c]
            if len(pool) == 0:
                continue
            g = generator(seed, *keys, c)
            chosen = pool[torch.randperm(len(pool), generator=g)[: min(n, len(pool))]]
            picks.append(chosen)
            groups.append(torch.full((len(chosen),), position, dtype=torch.int64))
        index = torch.cat(picks).to(self.images.device)
        group = torch.cat(groups).to(self.images.device)
        return index, group
