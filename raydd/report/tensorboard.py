"""Mirror metrics.jsonl rows into TensorBoard event files, for people who watch runs in TensorBoard.

metrics.jsonl stays the record (the report reads it); TensorBoard is an optional view of it. Each numeric
term of a row (``loss``, ``loss_dm``, ``loss_cm``, ...) becomes the scalar ``distill/<term>`` at step
``iteration``. ``torch.utils.tensorboard`` needs the ``tensorboard`` package; ``tensorboardX`` works too.
"""

from __future__ import annotations

from typing import Any

from raydd.errors import RayddError
from raydd.report.summaries import NOT_CURVES, is_number
from raydd.rundir import RunDir

TAG_PREFIX = "distill/"


def summary_writer_class():
    """``torch.utils.tensorboard.SummaryWriter`` when ``tensorboard`` is installed, else tensorboardX's."""
    try:
        import tensorboard  # noqa: F401  (torch's writer imports it lazily and fails late without it)
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter
    except ImportError:
        pass
    try:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    except ImportError:
        raise RayddError("TensorBoard logging needs the 'tensorboard' package: pip install tensorboard "
                         "(or pip install tensorboardX)") from None


class TensorBoardMirror:
    """Writes metric rows as they come (``write(row)``); use as a context manager or call ``close()``."""

    def __init__(self, logdir: str) -> None:
        self.logdir = logdir
        self._writer = summary_writer_class()(log_dir=logdir)

    def write(self, row: dict[str, Any]) -> None:
        step = row.get("iteration")
        if not is_number(step):
            return
        for key, value in row.items():
            if key not in NOT_CURVES and is_number(value):
                self._writer.add_scalar(f"{TAG_PREFIX}{key}", float(value), int(step))

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()

    def __enter__(self) -> "TensorBoardMirror":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def mirror_metrics(run_dir: str, logdir: str | None = None) -> str:
    """Write every row of RUN_DIR/metrics.jsonl into ``logdir`` (default RUN_DIR/tensorboard); returns it.

    TensorBoard's writer needs a local folder (or a filesystem TensorBoard itself supports).
    """
    run = RunDir(run_dir)
    rows = run.read_metrics()
    if not rows:
        raise RayddError(f"{run.path}: metrics.jsonl is missing or empty; nothing to mirror to TensorBoard")
    target = logdir or run.file("tensorboard")
    with TensorBoardMirror(target) as mirror:
        for row in rows:
            mirror.write(row)
    return target
