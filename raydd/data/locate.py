"""Finding a fixed-file dataset (such as fashion-mnist) on disk, downloading it as a last resort.

Order: the ``root`` argument, ``$RAYDD_DATA``, the user cache, system package directories, then
a download into the user cache. A directory counts only if it holds every file, so a copy is
never assembled from two places. An explicit ``root`` that lacks the files is an error rather
than a silent fall-through, because the user asked for exactly that copy.
"""

from __future__ import annotations

import os
from functools import partial
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError
from .download import download_verified
from .idx import IdxFile, read_content

ENV_DATA_DIR = "RAYDD_DATA"


def user_cache_dir(dataset: str) -> Path:
    """``$XDG_CACHE_HOME/raydd/<dataset>``, defaulting to ``~/.cache``; read at call time."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "raydd" / dataset


def _find_file(directory: Path, spec: IdxFile) -> Path | None:
    return next((directory / n for n in spec.file_names() if (directory / n).is_file()), None)


def find_complete_copy(directory: Path, files: Sequence[IdxFile]) -> dict[str, Path] | None:
    """Map each file's name to its path in ``directory``, or None if any file is absent."""
    found = {spec.name: _find_file(directory, spec) for spec in files}
    return None if None in found.values() else found


def _with_subfolder(directory: Path, dataset: str) -> list[Path]:
    """A data directory may hold the files directly or in a ``<dataset>/`` subfolder."""
    return [directory, directory / dataset]


def locate_files(
    dataset: str,
    files: Sequence[IdxFile],
    *,
    root: str | None,
    system_dirs: Sequence[str] = (),
    mirrors: Sequence[str] = (),
) -> dict[str, Path]:
    """Return the path of every file in ``files``, searching in the documented order."""
    if root is not None:
        candidates = _with_subfolder(Path(root).expanduser(), dataset)
        for directory in candidates:
            found = find_complete_copy(directory, files)
            if found is not None:
                return found
        raise DataError(
            _not_found_message(dataset, files, candidates, "the given root")
            + " Fix root, or leave it unset to use $RAYDD_DATA, the user cache or a system copy."
        )

    searched: list[Path] = []
    env_dir = os.environ.get(ENV_DATA_DIR)
    if env_dir:
        searched += _with_subfolder(Path(env_dir).expanduser(), dataset)
    cache_dir = user_cache_dir(dataset)
    searched.append(cache_dir)
    searched += [Path(d) for d in system_dirs]
    for directory in searched:
        found = find_complete_copy(directory, files)
        if found is not None:
            return found

    if not mirrors:
        raise DataError(
            _not_found_message(dataset, files, searched, "any searched directory")
            + f" Pass root=, set ${ENV_DATA_DIR}, or put the files in {cache_dir}."
        )
    return _download_missing(dataset, files, cache_dir, mirrors)


def _download_missing(
    dataset: str,
    files: Sequence[IdxFile],
    cache_dir: Path,
    mirrors: Sequence[str],
) -> dict[str, Path]:
    """Fill the user cache from the first mirror that serves each missing file."""
    found = {}
    for spec in files:
        existing = _find_file(cache_dir, spec)
        if existing is not None:
            found[spec.name] = existing
            continue
        destination = cache_dir / (spec.name + ".gz")
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + destination.name
            try:
                found[spec.name] = download_verified(url, destination, partial(_verify_download, spec=spec, url=url))
                break
            except DataError as error:
                failures.append(str(error))
        else:
            raise DataError(
                f"{dataset}: {destination.name} not found locally and could not be downloaded: "
                + "; ".join(failures)
                + f". Put the files in {cache_dir} or point ${ENV_DATA_DIR} at a directory holding them."
            )
    return found


def _verify_download(path: Path, spec: IdxFile, url: str) -> None:
    read_content(path, spec, shown_as=f"{spec.name}.gz downloaded from {url}")


def _not_found_message(dataset: str, files: Sequence[IdxFile], searched: Sequence[Path], where: str) -> str:
    names = ", ".join(spec.name + "[.gz]" for spec in files)
    places = ", ".join(str(p) for p in searched)
    return f"{dataset}: no complete copy of its files ({names}) in {where}; looked in: {places}."
