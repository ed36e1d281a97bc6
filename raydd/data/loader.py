"""``load_dataset``: one entry point that validates options and dispatches to a source."""

from __future__ import annotations

import os
from dataclasses import replace

from ..errors import ConfigError
from ..storage import is_remote
from .base import DatasetSplits
from .registry import SourceRequest, available_sources, get_source

# Importing the source modules registers them.
from . import imagefolder as _imagefolder  # noqa: F401  isort: skip
from . import mnist_family as _mnist_family  # noqa: F401  isort: skip
from . import cluttered as _cluttered  # noqa: F401  isort: skip
from . import parquet as _parquet  # noqa: F401  isort: skip
from . import webdataset as _webdataset  # noqa: F401  isort: skip
from . import image_parquet as _image_parquet  # noqa: F401  isort: skip

IMAGEFOLDER = "imagefolder"
PARQUET = "parquet"
WEBDATASET = "webdataset"
IMAGE_PARQUET = "image-parquet"


def _looks_like_path(text: str) -> bool:
    """A bare word such as "cifar10" is a (mistyped) source name; anything path-shaped is a path."""
    return is_remote(text) or "/" in text or os.sep in text or text.startswith((".", "~")) or os.path.exists(text)


def _request(
    root: str | None, val_fraction: float, seed: int, image_size: int | None, mask_threshold: int, require_captions: bool
) -> SourceRequest:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ConfigError(f"image_size must be a positive integer or None, got {image_size!r}")
    if isinstance(mask_threshold, bool) or not isinstance(mask_threshold, int) or not 0 <= mask_threshold <= 255:
        raise ConfigError(f"mask_threshold must be an integer in 0..255, got {mask_threshold!r}")
    return SourceRequest(
        root=root,
        val_fraction=float(val_fraction),
        seed=seed,
        image_size=image_size,
        mask_threshold=mask_threshold,
        require_captions=bool(require_captions),
    )


def parquet_location(name_or_path: str) -> str | None:
    """The directory of a preprocessed dataset named by ``name_or_path``, or None if it is not one."""
    if get_source(name_or_path) is not None:
        return None
    path = name_or_path.removeprefix(PARQUET + ":")
    if path != name_or_path or (_looks_like_path(name_or_path) and _parquet.is_preprocessed_dir(name_or_path)):
        return path
    return None


def folder_source(name_or_path: str) -> tuple[str, str] | None:
    """``(source, path)`` for a dataset given as a folder of files: ``("imagefolder", path)``,
    ``("webdataset", path)`` or ``("image-parquet", path)``; None for a registered name or a preprocessed
    directory.

    A folder whose ``train/`` holds ``.tar`` shards (and no ``metadata.jsonl``) is WebDataset shards; one
    whose ``train/`` (or Hugging Face ``data/``) holds ``.parquet`` files and no ``manifest.json`` is
    image Parquet; ``webdataset:<path>``, ``image-parquet:<path>`` and ``imagefolder:<path>`` say so
    explicitly.
    """
    if get_source(name_or_path) is not None or parquet_location(name_or_path) is not None:
        return None
    for prefix in (WEBDATASET, IMAGE_PARQUET, IMAGEFOLDER):
        if name_or_path.startswith(prefix + ":"):
            return prefix, name_or_path.removeprefix(prefix + ":")
    if not _looks_like_path(name_or_path):
        return None
    if _webdataset.is_webdataset_dir(name_or_path):
        return WEBDATASET, name_or_path
    if _image_parquet.is_image_parquet_dir(name_or_path):
        return IMAGE_PARQUET, name_or_path
    return IMAGEFOLDER, name_or_path


def load_dataset(
    name_or_path: str,
    *,
    root: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_size: int | None = None,
    mask_threshold: int = 0,
    require_captions: bool = False,
) -> DatasetSplits:
    """Load a registered source by name, or an imagefolder / WebDataset folder by path or fsspec URI.

    ``"parquet:<path>"``, or a path whose directory holds a ``manifest.json``, reads a directory
    written by ``raydd preprocess``.

    ``root`` points a named source at its files; for an imagefolder given by path it must be
    left out (or equal the path), since two different locations would be ambiguous.
    """
    request = _request(root, val_fraction, seed, image_size, mask_threshold, require_captions)
    loader = get_source(name_or_path)
    if loader is not None:
        return loader(request)

    # A preprocessed directory: "parquet:<path>", or any path holding a manifest.json.
    parquet_path = parquet_location(name_or_path)
    if parquet_path is not None:
        if root is not None and root.rstrip("/") != parquet_path.rstrip("/"):
            raise ConfigError(f"dataset path {parquet_path!r} and root {root!r} disagree; give the location once")
        return get_source(PARQUET)(replace(request, root=parquet_path))

    folder = folder_source(name_or_path)
    if folder is None:
        raise ConfigError(
            f"unknown dataset {name_or_path!r}: not a registered source ({', '.join(available_sources())}) "
            "and no such directory"
        )
    source, path = folder
    if root is not None and root.rstrip("/") != path.rstrip("/"):
        raise ConfigError(f"dataset path {path!r} and root {root!r} disagree; give the {source} location once")
    return get_source(source)(replace(request, root=path))
