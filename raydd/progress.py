"""Progress bars that stay out of the way: on stderr, off when stderr is not a terminal unless asked."""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_bar(iterable: Iterable[T], *, desc: str, total: int | None = None, disable: bool = False, initial: int = 0):
    forced = os.environ.get("RAYDD_PROGRESS")
    if forced is not None:
        disable = disable or forced in ("0", "false", "off")
    return tqdm(iterable, desc=desc, total=total, disable=disable, initial=initial, file=sys.stderr,
                dynamic_ncols=True, mininterval=1.0, leave=False)
