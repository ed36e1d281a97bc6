"""Carving a validation split out of the training data.

Stratified so that every class is represented in validation, and driven by a private
``torch.Generator`` so the split depends only on ``seed``, never on what else consumed RNG.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import ImageData


def validation_count(class_size: int, val_fraction: float) -> int:
    """How many of one class's images go to validation.

    At least one when the fraction is positive and the class can spare it, and never the whole
    class: a class without training images cannot be distilled.
    """
    if val_fraction <= 0 or class_size < 2:
        return 0
    return min(max(round(val_fraction * class_size), 1), class_size - 1)


def validation_positions(labels: np.ndarray, num_classes: int, val_fraction: float, seed: int) -> np.ndarray:
    """Sorted positions (into ``labels``, in dataset order) of the rows that go to validation.

    Needs only the labels, so a driver that holds metadata can carve the split the same way as
    ``carve_validation`` does on decoded images.
    """
    labels = np.asarray(labels, dtype=np.int64)
    generator = torch.Generator().manual_seed(seed)
    order = np.argsort(labels, kind="stable")
    bounds = np.cumsum(np.bincount(labels, minlength=num_classes))[:-1]
    val_parts = []
    for class_index in np.split(order, bounds):
        count = validation_count(len(class_index), val_fraction)
        # Draw a permutation for every class, even when count is 0, so one class's size
        # does not shift the random stream the next class sees.
        permutation = torch.randperm(len(class_index), generator=generator).numpy()
        val_parts.append(class_index[permutation[:count]])
    return np.sort(np.concatenate(val_parts)).astype(np.int64) if val_parts else np.zeros(0, np.int64)


def carve_validation(data: ImageData, val_fraction: float, seed: int) -> tuple[ImageData, ImageData]:
    """Split ``data`` into (train, val); both keep the original image order."""
    val_index = torch.from_numpy(validation_positions(data.labels.cpu().numpy(), len(data.class_names),
                                                      val_fraction, seed))
    is_val = torch.zeros(len(data), dtype=torch.bool)
    is_val[val_index] = True
    train_index = torch.nonzero(~is_val).flatten()
    return data.subset(train_index), data.subset(val_index)
