"""Progress that stays out of the way: bars on stderr, or one line per logged row where no one watches a bar."""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Protocol, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def _forced_off() -> bool:
    return os.environ.get("RAYDD_PROGRESS", "") in ("0", "false", "off")


def progress_bar(iterable: Iterable[T] | None, *, desc: str, total: int | None = None, disable: bool = False,
                 initial: int = 0):
    return tqdm(iterable, desc=desc, total=total, disable=disable or _forced_off(), initial=initial,
                file=sys.stderr, dynamic_ncols=True, mininterval=1.0, leave=False)


class Progress(Protocol):
    """What the distillation loop tells about itself: one call per iteration with its row."""

    def update(self, row: dict) -> None: ...

    def close(self) -> None: ...


class BarProgress:
    """A bar for a terminal; the last logged loss as its postfix."""

    def __init__(self, desc: str, start: int, total: int, show: bool) -> None:
        self.bar = progress_bar(None, desc=desc, total=total, initial=start, disable=not show)

    def update(self, row: dict) -> None:
        self.bar.update(1)
        if "loss" in row:
            self.bar.set_postfix(loss=f"{row['loss']:.4g}")

    def close(self) -> None:
        self.bar.close()


class LineProgress:
    """One line per logged row (a Ray worker's output, a log file): iteration, loss, time left."""

    def __init__(self, desc: str, start: int, total: int, show: bool) -> None:
        self.desc, self.start, self.total = desc, start, total
        self.show = show and not _forced_off()
        self.began = time.perf_counter()

    def update(self, row: dict) -> None:
        if not self.show or "loss" not in row:
            return
        done = row["iteration"]
        eta = (time.perf_counter() - self.began) / max(1, done - self.start) * (self.total - done)
        # Written, not printed: Ray Train replaces a worker's print() with one that both prints and logs
        # (every line twice on the driver's console).
        sys.stdout.write(f"raydd: {self.desc} iteration {done}/{self.total} loss {row['loss']:.4g} eta {eta:.0f}s\n")
        sys.stdout.flush()

    def close(self) -> None:
        pass


class NoProgress:
    def update(self, row: dict) -> None:
        pass

    def close(self) -> None:
        pass
