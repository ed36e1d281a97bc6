"""What a run reads before it starts: the device, the dataset's location and splits, known names.

Every stage (distill, evaluate, audit, tune, the Ray workers) resolves its inputs here, so none of them
imports another stage to find its data.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from raydd.config import Config
from raydd.data import DatasetSplits, load_dataset
from raydd.data.loader import parquet_location
from raydd.data.parquet import is_preprocessed_dir, read_manifest, read_parquet_splits
from raydd.errors import ConfigError
from raydd.models import available_models


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def data_location(cfg: Config) -> str | None:
    """The preprocessed (Parquet) directory the run reads, or None when it reads its source directly.

    A run whose preprocessing stage wrote ``data.prepared`` reads that copy while it exists; if it
    was deleted since, the source itself gives the same rows.
    """
    d = cfg.data
    if d.prepared and is_preprocessed_dir(d.prepared.removeprefix("parquet:")):
        return d.prepared.removeprefix("parquet:")
    return parquet_location(d.name)


def load_splits(cfg: Config, classes: list[int] | None = None, pixels: tuple[str, ...] | None = None) -> DatasetSplits:
    """The run's dataset; a preprocessed (Parquet) dataset reads only the partitions of ``classes`` and only
    the images of the splits in ``pixels`` (``read_parquet_splits``); other sources load whole."""
    d = cfg.data
    location = data_location(cfg)
    if location is not None:
        splits = read_parquet_splits(location, classes=classes, image_size=d.image_size,
                                     val_fraction=d.val_fraction, seed=cfg.seed, pixels=pixels)
        return splits if parquet_location(d.name) is not None else replace(splits, name=d.name)
    return load_dataset(d.name, root=d.root, val_fraction=d.val_fraction, seed=cfg.seed,
                        image_size=d.image_size, mask_threshold=d.mask_threshold)


def dataset_class_count(cfg: Config) -> int | None:
    """Number of classes of a preprocessed dataset, read from its manifest alone (None otherwise)."""
    location = data_location(cfg)
    return len(read_manifest(location)["classes"]) if location is not None else None


def check_names(cfg: Config) -> None:
    """Fail on unknown method/model names before anything is written."""
    from raydd.methods import method_class

    method_class(cfg.distill.method)
    for name in [cfg.distill.model, cfg.eval.model, *cfg.eval.cross_arch]:
        if name not in available_models():
            raise ConfigError(f"unknown model {name!r}; available: {', '.join(available_models())}")
