"""Progress of a Ray run, shown by the driver from the metrics log the workers write."""

import threading
import time

from raydd.progress import follow_metrics


class GrowingLog:
    """A run whose metrics log gains rows while the driver waits (as Ray Train workers append them)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.lock = threading.Lock()

    def read_metrics(self) -> list[dict]:
        with self.lock:
            return list(self.rows)

    def log(self, row: dict) -> None:
        with self.lock:
            self.rows.append(row)


def test_the_driver_prints_each_logged_row_once_in_order(capsys, monkeypatch):
    monkeypatch.setenv("RAYDD_PROGRESS", "1")
    run = GrowingLog()
    run.log({"iteration": 2, "loss": 9.0})  # a resumed run's rows before its checkpoint are not shown again
    with follow_metrics(run, "dm ipc1", start=2, total=8, show=True, every=0.01):
        for it in (4, 6, 8):
            run.log({"iteration": it, "loss": float(it)})
            time.sleep(0.05)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("raydd:")]
    assert [line.split()[4] for line in lines] == ["4/8", "6/8", "8/8"]
    assert "eta" not in lines[0] and lines[1].endswith("s")


def test_progress_off_shows_nothing(capsys, monkeypatch):
    monkeypatch.setenv("RAYDD_PROGRESS", "0")
    run = GrowingLog()
    with follow_metrics(run, "dm ipc1", start=0, total=2, show=True, every=0.01):
        run.log({"iteration": 2, "loss": 1.0})
        time.sleep(0.05)
    assert "raydd:" not in capsys.readouterr().out


def test_a_bar_where_no_terminal_watches_is_whole_lines(capsys, monkeypatch):
    """Into a log (stderr not a terminal): no carriage-return redraws, a first and a last status line."""
    from raydd.progress import progress_bar

    monkeypatch.setenv("RAYDD_PROGRESS", "1")
    assert list(progress_bar(range(3), desc="evaluation models")) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("evaluation models:") for line in lines), lines
    assert "0/3" in lines[0] and "3/3" in lines[-1]
