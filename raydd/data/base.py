"""The in-memory dataset types every other part of raydd works with.

Images stay uint8 until a model needs them: that keeps a 60k-image dataset at ~50 MB and
makes "what was on disk" and "what the model saw" easy to tell apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def _as_index(index: torch.Tensor | list[int]) -> torch.Tensor:
    """Accept either form callers naturally have, return a CPU int64 tensor."""
    if isinstance(index, torch.Tensor):
        if index.dtype == torch.bool:
            raise TypeError("subset() takes integer indices, not a boolean mask")
        return index.detach().to(device="cpu", dtype=torch.int64).reshape(-1)
    return torch.tensor(list(index), dtype=torch.int64)


def repeated(image: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` copies of one image [C, H, W] as a view (stride 0): no memory for the copies."""
    return image.unsqueeze(0).expand(n, *image.shape)


def _select(rows: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows by position; rows that are one image repeated stay a repeated view (every selection of them is)."""
    if len(rows) and rows.stride(0) == 0:
        return repeated(rows[0], len(idx))
    return rows.index_select(0, idx.to(rows.device))


@dataclass
class ImageData:
    """A set of labelled images with optional per-image captions and object masks."""

    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str]
    class_names: list[str]
    captions: list[str | None] | None = None
    masks: torch.Tensor | None = None

    def __post_init__(self) -> None:
        # Shape mistakes surface far from their cause (inside a training loop), so catch them here.
        n = self.images.shape[0] if self.images.dim() == 4 else -1
        if self.images.dim() != 4 or self.images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or tuple(self.labels.shape) != (n,):
            raise ValueError(f"labels must be int64 [{n}], got {self.labels.dtype} {tuple(self.labels.shape)}")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise ValueError(f"labels must lie in 0..{len(self.class_names) - 1}")
        if len(self.ids) != n or len(set(self.ids)) != n:
            raise ValueError(f"ids must be {n} unique strings, got {len(self.ids)} ({len(set(self.ids))} unique)")
        if self.captions is not None and len(self.captions) != n:
            raise ValueError(f"captions must have {n} entries, got {len(self.captions)}")
        if self.masks is not None:
            expected = (n, 1, *self.images.shape[2:])
            if self.masks.dtype != torch.uint8 or tuple(self.masks.shape) != expected:
                raise ValueError(f"masks must be uint8 {expected}, got {self.masks.dtype} {tuple(self.masks.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: torch.Tensor | list[int]) -> ImageData:
        """Select images by position, keeping every per-image field aligned."""
        idx = _as_index(index)
        positions = idx.tolist()
        return ImageData(
            images=_select(self.images, idx),
            labels=self.labels.index_select(0, idx.to(self.labels.device)),
            ids=[self.ids[i] for i in positions],
            class_names=list(self.class_names),
            captions=None if self.captions is None else [self.captions[i] for i in positions],
            masks=None if self.masks is None else _select(self.masks, idx),
        )

    @property
    def pixels_left_out(self) -> bool:
        """True when the images are one blank image repeated: the split was read for its labels, ids and
        captions only (``read_parquet_splits(pixels=...)``)."""
        return len(self) > 0 and self.images.stride(0) == 0

    def indices_by_class(self) -> list[torch.Tensor]:
        """Positions of each class's images, in dataset order (empty tensor for an absent class)."""
        # numpy's stable argsort: torch's is ~100x slower on small CPU boxes with few threads.
        labels = self.labels.cpu().numpy()
        order = np.argsort(labels, kind="stable")
        bounds = np.cumsum(np.bincount(labels, minlength=len(self.class_names)))[:-1]
        return [torch.from_numpy(part.astype(np.int64)) for part in np.split(order, bounds)]


@dataclass
class DatasetSplits:
    """Train/val/test data plus what a model needs to know about the pixels."""

    name: str
    train: ImageData
    val: ImageData
    test: ImageData
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip_ok: bool

    def __post_init__(self) -> None:
        shape = tuple(self.train.images.shape[1:])
        for split_name, split in (("val", self.val), ("test", self.test)):
            if tuple(split.images.shape[1:]) != shape:
                raise ValueError(f"{split_name} images are {tuple(split.images.shape[1:])}, train images are {shape}")
            if split.class_names != self.class_names:
                raise ValueError(f"{split_name} class names differ from the dataset's")
        if self.train.class_names != self.class_names:
            raise ValueError("train class names differ from the dataset's")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean/std need {self.channels} entries, got {len(self.mean)}/{len(self.std)}")

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train.images.shape[2]), int(self.train.images.shape[3])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _mean_std(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel constants shaped to broadcast over [..., C, H, W]."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=device).view(-1, 1, 1)
        return mean, std

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 pixels -> float32 (x/255 - mean)/std on the images' own device."""
        if images_uint8.dtype != torch.uint8:
            # A float input would be divided by 255 a second time without any visible error.
            raise TypeError(f"normalize() expects uint8 images, got {images_uint8.dtype}")
        mean, std = self._mean_std(images_uint8.device)
        return (images_uint8.to(torch.float32) / 255.0 - mean) / std

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Inverse of normalize(), as [0, 1] floats clamped for display or saving."""
        mean, std = self._mean_std(images.device)
        return (images.to(torch.float32) * std + mean).clamp(0.0, 1.0)
