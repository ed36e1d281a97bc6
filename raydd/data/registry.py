"""Name -> loader table, so adding a dataset source is one decorated function, not an elif."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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

_SOURCES: dict[str, SourceLoader] = {}


def register_source(name: str) -> Callable[[SourceLoader], SourceLoader]:
    """Decorator: make ``load_dataset(name)`` call the decorated loader."""

    def decorate(loader: SourceLoader) -> SourceLoader:
        existing = _SOURCES.get(name)
        if existing is not None and existing is not loader:
            raise ValueError(f"dataset source {name!r} is already registered by {existing.__module__}")
        _SOURCES[name] = loader
        return loader

    return decorate


def available_sources() -> list[str]:
    """Registered source names, sorted, for help texts and error messages."""
    return sorted(_SOURCES)


def get_source(name: str) -> SourceLoader | None:
    return _SOURCES.get(name)
