"""Ray's native (C++) log lines go to a file, not the console, unless the user asks for them.

Ray's core worker writes its ERROR-level lines straight to file descriptor 2 of the driver, and Ray
forwards the same lines from its actors: for example `core_worker.cc … Actor with class name … has
constructor arguments in the object store and max_restarts > 0`, printed for every Ray Data actor pool
and Ray Train controller (ray-project/ray#57733). They read like failures and are not raydd's. Python
logging cannot reach them, and Ray's only switch (`RAY_BACKEND_LOG_LEVEL`) would also drop them from
Ray's own log files, so the console's file descriptor 2 is routed through a pipe: a reader thread copies
everything to the console unchanged, except complete lines in Ray's native format
(`[date time level pid tid] file.cc:line: …`, with or without the `(Actor pid=…)` prefix of a forwarded
line), which it appends to a log file — the run directory's `ray.log` once a run directory is known,
Ray's session log directory before that. Fatal lines always reach the console.

File descriptors belong to the process, so one diverter serves the whole process: `start` is
idempotent, and `finish` (called when a command ends, and at exit for scripts that do not) restores the
console and says where the lines went. Python's own ``sys.stderr`` keeps telling the truth about the terminal (progress bars need it).
"""

from __future__ import annotations

import atexit
import io
import os
import re
import select
import sys
import threading
from dataclasses import dataclass, field

VERBOSE_ENV = "RAYDD_VERBOSE"

_ANSI = r"(?:\x1b\[[0-9;]*m)*"
NATIVE_LINE = re.compile(
    rf"^{_ANSI}(?:\([^)]*\)\s*)?{_ANSI}\s*\[\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d+ [DIWE] \d+ \d+\] \S+:\d+: ")
# A held partial line is released to the console after this long without its newline.
PARTIAL_WAIT_S = 0.2
# Written through the pipe to learn that the reader has caught up with everything before it.
_MARK = b"\x00raydd-native-log-mark\x00"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false", "off")


def is_native_line(line: str) -> bool:
    return NATIVE_LINE.match(line) is not None


@dataclass
class _Diverter:
    console_fd: int  # a copy of the console's descriptor 2
    read_fd: int
    destination: str
    fallback: str  # where lines go while the destination cannot be written (its directory not made yet)
    written: dict[str, int] = field(default_factory=dict)  # lines per file
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None
    python_stderr: io.TextIOBase | None = None  # sys.stderr before start
    caught_up: list[threading.Event] = field(default_factory=list)

    def drain(self, timeout: float = 2.0) -> None:
        """Return once the reader has handled every byte written to descriptor 2 before this call."""
        event = threading.Event()
        with self.lock:
            self.caught_up.append(event)
        os.write(2, _MARK + b"\n")
        event.wait(timeout)

    def pump(self) -> None:
        """Copy the pipe to the console until every writer has closed it, native lines to their file.

        Whatever goes wrong here, the pipe keeps being read (a reader that stopped would block every later
        write to stderr): a line that cannot be sorted goes to the console, and a console that cannot be
        written is skipped."""
        pending = b""
        while True:
            ready, _, _ = select.select([self.read_fd], [], [], PARTIAL_WAIT_S if pending else None)
            if not ready:  # a partial line waited long enough: not a log line in progress
                self._to_console(pending)
                pending = b""
                continue
            chunk = os.read(self.read_fd, 65536)
            if not chunk:
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            out = bytearray()
            for raw in complete:
                if raw.endswith(_MARK):  # after the rest of an unfinished line (a progress bar's), if any
                    out += raw[:-len(_MARK)]
                    self._to_console(bytes(out))
                    out.clear()
                    with self.lock:
                        self.caught_up.pop(0).set()
                elif self._is_native(raw):
                    self._to_console(bytes(out))
                    out.clear()
                    self.write_native(raw.decode("utf-8", "replace") + "\n")
                else:
                    out += raw + b"\n"
            # a partial line that cannot be a native log line (a progress bar's \r update) goes at once
            if pending and not pending.lstrip(b"\x1b[0123456789;m").startswith((b"[", b"(")):
                out += pending
                pending = b""
            self._to_console(bytes(out))
        self._to_console(pending)

    @staticmethod
    def _is_native(raw: bytes) -> bool:
        try:
            return is_native_line(raw.decode("utf-8", "replace"))
        except Exception:  # noqa: BLE001 - unsorted, the line goes to the console
            return False

    def _to_console(self, data: bytes) -> None:
        if data:
            try:
                _write_all(self.console_fd, data)
            except OSError:  # the console went away: keep reading, so that writers never block
                pass

    def write_native(self, line: str) -> None:
        with self.lock:
            for path in dict.fromkeys((self.destination, self.fallback)):
                try:
                    with open(path, "a", encoding="utf-8", errors="replace") as log:
                        log.write(line)
                except OSError:
                    continue
                self.written[path] = self.written.get(path, 0) + 1
                return
        self._to_console(line.encode("utf-8", "replace"))  # no file takes it: the line is not lost


class _TerminalTruth(io.TextIOWrapper):
    """sys.stderr writing into the pipe while reporting the console's own isatty()."""

    def __init__(self, buffer, tty: bool, **kwargs) -> None:
        super().__init__(buffer, **kwargs)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


_active: _Diverter | None = None  # the process's one diverter (file descriptors are per process)


def start(destination: str) -> bool:
    """Divert Ray's native lines on descriptor 2 to ``destination``; False where it does not apply.

    Not with --verbose / RAYDD_VERBOSE=1, and not where sys.stderr is not the process's own (a test
    runner capturing output, a notebook).
    """
    global _active
    if _active is not None:
        return True
    if verbose() or sys.stderr is not sys.__stderr__ or sys.__stderr__ is None:
        return False
    try:
        fileno = sys.__stderr__.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):
        return False
    if fileno != 2:
        return False
    sys.stderr.flush()
    tty = os.isatty(2)
    console_fd = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    diverter = _Diverter(console_fd, read_fd, destination, destination, python_stderr=sys.stderr)
    diverter.thread = threading.Thread(target=diverter.pump, name="raydd-native-log", daemon=True)
    diverter.thread.start()
    sys.stderr = _TerminalTruth(io.FileIO(2, "w", closefd=False), tty, encoding=diverter.python_stderr.encoding,
                                errors="backslashreplace", line_buffering=True)
    _active = diverter
    atexit.register(_finish_at_exit)  # a job script that never calls finish: its last words still arrive
    return True


def _finish_at_exit() -> None:
    where = finish()
    if where:
        print(where, file=sys.stderr)


def divert_to(destination: str) -> None:
    """From now on, native lines go to ``destination`` (a run directory's ray.log)."""
    if _active is not None:
        _active.drain()  # what was written before this call still goes where it was meant to
        with _active.lock:
            _active.destination = destination


def finish() -> str | None:
    """Restore the console; one line saying where the diverted lines went, or None if there were none."""
    global _active
    diverter, _active = _active, None
    if diverter is None:
        return None
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    diverter.drain()
    sys.stderr = diverter.python_stderr
    os.dup2(diverter.console_fd, 2)  # the pipe's write end, for this process
    # A child that inherited the pipe may still write to it: the reader stays, copying to the console.
    with diverter.lock:
        return summary(dict(diverter.written))


def summary(written: dict[str, int]) -> str | None:
    """The one line a command ends with when it diverted anything, naming the file(s)."""
    if not written:
        return None
    total = sum(written.values())
    where = next(iter(written)) if len(written) == 1 else ", ".join(f"{p} ({n})" for p, n in written.items())
    return f"raydd: {total} line{'s' if total != 1 else ''} of Ray's own log went to {where} (--verbose shows them)"
