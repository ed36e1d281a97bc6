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
_CAPTIONED: set[str] = set()


def register_source(name: str, *, captions: bool = False) -> Callable[[SourceLoader], SourceLoader]:
    """Decorator: make ``load_dataset(name)`` call the decorated loader.

    ``captions``: every image of the source has a caption, so callers that plan by capability (the
    ablation's caption rows) need not load the data to find out.
    """
    if captions:
        _CAPTIONED.add(name)
    return SOURCES.register(name)


def source_has_captions(name: str) -> bool:
    """Whether the registered source ``name`` declared captions for all its images."""
    return name in _CAPTIONED


def available_sources() -> list[str]:
    return SOURCES.names()


def get_source(name: str) -> SourceLoader | None:
    return SOURCES.get(name)
