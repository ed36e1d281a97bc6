"""Datasets as uint8 tensors with labels, ids and optional captions/masks, plus their splits."""

from .base import DatasetSplits, ImageData
from .loader import load_dataset
from .registry import available_sources, register_source

__all__ = ["ImageData", "DatasetSplits", "load_dataset", "register_source", "available_sources"]
