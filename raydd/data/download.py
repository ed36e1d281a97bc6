"""Fetching a file so that the destination either holds verified data or does not exist.

The download lands in a hidden temp file next to the destination, is verified there and only
then renamed into place: an interrupted or corrupt download never looks like a finished one.
"""

from __future__ import annotations

import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError

_TIMEOUT_S = 60


def download_verified(url: str, destination: Path, verify: Callable[[Path], None]) -> Path:
    """Download ``url`` to ``destination``; ``verify`` raises DataError to reject the bytes."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    temp_path = Path(temp_name)
    try:
        try:
            with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
            raise DataError(f"{destination.name}: download from {url} failed ({error})") from None
        verify(temp_path)
        os.replace(temp_path, destination)
    finally:
        temp_path.unlink(missing_ok=True)
    return destination
