"""Name -> loader table, so adding a dataset source is one decorated function, not an elif."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from raydd.registry import Registry

from .base import DatasetSplits


@dataclass(frozen=True)
class SourceRequest:
    """Everything a source loader may need; validated by load_dataset before any loader runs."""

    root: str | None
    val_fraction: float
    seed: int
    image_size: int | None
    mask_threshold: int
    require_captions: bool


SourceLoader = Callable[[SourceRequest], DatasetSplits]

SOURCES: Registry[SourceLoader] = Registry("dataset source")


def register_source(name: str) -> Callable[[SourceLoader], SourceLoader]:
    """Decorator: make ``load_dataset(name)`` call the decorated loader."""
    return SOURCES.register(name)


def available_sources() -> list[str]:
    return SOURCES.names()


def get_source(name: str) -> SourceLoader | None:
    return SOURCES.get(name)
