"""Progress that stays out of the way: bars on stderr, or one line per logged row where no one watches a bar."""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, Protocol, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def _forced_off() -> bool:
    return os.environ.get("RAYDD_PROGRESS", "") in ("0", "false", "off")


# Where no one watches a bar (a log file, CI, `ray job logs`), a status line at most this often.
LINE_INTERVAL_S = 30.0


class _StatusLines:
    """A file for tqdm that turns its carriage-return redraws into whole lines (a log keeps them all)."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        status = text.replace("\r", "").strip()
        if status:
            self.stream.write(status + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Iterable[T] | None, *, desc: str, total: int | None = None, disable: bool = False,
                 initial: int = 0):
    """A bar on a terminal; elsewhere one line at the start, one every 30 s and one at the end."""
    disable = disable or _forced_off()
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, disable=disable, initial=initial, file=sys.stderr,
                    dynamic_ncols=True, mininterval=1.0, leave=False)
    return tqdm(iterable, desc=desc, total=total, disable=disable, initial=initial, file=_StatusLines(sys.stderr),
                ncols=100, mininterval=LINE_INTERVAL_S, maxinterval=LINE_INTERVAL_S, leave=True, ascii=True)


class Progress(Protocol):
    """What the distillation loop tells about itself: one call per iteration with its row."""

    def update(self, row: dict) -> None: ...

    def close(self) -> None: ...


class BarProgress:
    """A bar for a terminal; the last logged loss as its postfix."""

    def __init__(self, desc: str, start: int, total: int, show: bool) -> None:
        self.bar = progress_bar(None, desc=desc, total=total, initial=start, disable=not show)

    def update(self, row: dict) -> None:
        self.bar.update(row["iteration"] - self.bar.n)
        if "loss" in row:
            self.bar.set_postfix(loss=f"{row['loss']:.4g}")

    def close(self) -> None:
        self.bar.close()


class LineProgress:
    """One line per logged row (a Ray worker's output, a log file): iteration, loss, time left."""

    def __init__(self, desc: str, start: int, total: int, show: bool) -> None:
        self.desc, self.total = desc, total
        self.show = show and not _forced_off()
        self.first: tuple[int, float] | None = None  # (iteration, time) of the first row: the rate's origin

    def update(self, row: dict) -> None:
        if not self.show or "loss" not in row:
            return
        done, now = row["iteration"], time.perf_counter()
        if self.first is None:
            self.first = (done, now)
        seen, began = self.first
        eta = f" eta {(now - began) / (done - seen) * (self.total - done):.0f}s" if done > seen else ""
        # Written, not printed: Ray Train replaces a worker's print() with one that both prints and logs.
        sys.stdout.write(f"raydd: {self.desc} iteration {done}/{self.total} loss {row['loss']:.4g}{eta}\n")
        sys.stdout.flush()

    def close(self) -> None:
        pass


class NoProgress:
    def update(self, row: dict) -> None:
        pass

    def close(self) -> None:
        pass


@contextmanager
def follow_metrics(run, desc: str, start: int, total: int, show: bool, every: float = 1.0) -> Iterator[None]:
    """Show a run's progress from its metrics log (``run.read_metrics()``) while other processes, Ray
    Train workers, write it: a bar on a terminal, else one line per logged row."""
    if not show or _forced_off():
        yield
        return
    progress: Progress = BarProgress(desc, start, total, True) if sys.stderr.isatty() else \
        LineProgress(desc, start, total, True)
    stop = threading.Event()

    def poll() -> None:
        shown = start
        while True:
            finished = stop.wait(every)
            try:
                rows = run.read_metrics()
            except Exception:  # a log being rewritten (a resume truncating it): try again next time
                rows = []
            for row in rows:
                if row.get("iteration", 0) > shown:
                    progress.update(row)
                    shown = row["iteration"]
            if finished:
                return

    thread = threading.Thread(target=poll, name="raydd-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
        progress.close()
