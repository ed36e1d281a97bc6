"""Read-only access to a dataset root on any fsspec filesystem, with errors that name the file.

Paths are always handled relative to the root, because that is how users see their dataset
and how errors should name files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ...errors import DataError
from ...storage import is_remote

T = TypeVar("T")

# Reads of many small files are latency-bound on object stores; a few threads hide that.
_READ_THREADS = 8
_BATCH = 256  # files in flight at once, so a huge split is not held in memory as raw bytes


class DatasetRoot:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") or url
        try:
            self.fs, path = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as error:
            raise DataError(f"{url}: cannot open this location ({error})") from None
        self.path = path.rstrip("/") or path
        # Local roots are recorded absolute so that a run can be reproduced from another cwd.
        is_local = isinstance(self.fs, LocalFileSystem) and not is_remote(url)
        self.display = os.path.abspath(self.path) if is_local else self.url

    def _full(self, relative: str) -> str:
        return f"{self.path}/{relative}"

    def is_dir(self, relative: str = "") -> bool:
        try:
            return bool(self.fs.isdir(self._full(relative) if relative else self.path))
        except OSError:
            return False

    def is_file(self, relative: str) -> bool:
        try:
            return bool(self.fs.isfile(self._full(relative)))
        except OSError:
            return False

    def read(self, relative: str, what: str = "file") -> bytes:
        """Bytes of one file; a missing or unreadable file is a DataError naming it."""
        try:
            return self.fs.cat_file(self._full(relative))
        except FileNotFoundError:
            raise DataError(f"{relative}: missing {what}") from None
        except IsADirectoryError:
            raise DataError(f"{relative}: expected a {what}, found a directory") from None
        except OSError as error:
            raise DataError(f"{relative}: cannot read {what} ({error})") from None

    def map_in_order(self, work: Callable[[T], object], items: Sequence[T]) -> Iterator[object]:
        """Apply ``work`` (which reads files) to items concurrently, yielding results in order.

        The first DataError, in item order, is raised: the same input always reports the same error.
        """
        with ThreadPoolExecutor(max_workers=_READ_THREADS) as pool:
            for start in range(0, len(items), _BATCH):
                yield from pool.map(work, items[start : start + _BATCH])
