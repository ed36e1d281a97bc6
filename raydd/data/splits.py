"""Carving a validation split out of the training data.

Stratified so that every class is represented in validation, and driven by a private
``torch.Generator`` so the split depends only on ``seed``, never on what else consumed RNG.
"""

from __future__ import annotations

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


def carve_validation(data: ImageData, val_fraction: float, seed: int) -> tuple[ImageData, ImageData]:
    """Split ``data`` into (train, val); both keep the original image order."""
    generator = torch.Generator().manual_seed(seed)
    val_parts = []
    for class_index in data.indices_by_class():
        count = validation_count(len(class_index), val_fraction)
        # Draw a permutation for every class, even when count is 0, so one class's size
        # does not shift the random stream the next class sees.
        order = torch.randperm(len(class_index), generator=generator)
        val_parts.append(class_index[order[:count]])
    val_index = torch.sort(torch.cat(val_parts)).values if val_parts else torch.empty(0, dtype=torch.int64)
    is_val = torch.zeros(len(data), dtype=torch.bool)
    is_val[val_index] = True
    train_index = torch.nonzero(~is_val).flatten()
    return data.subset(train_index), data.subset(val_index)
