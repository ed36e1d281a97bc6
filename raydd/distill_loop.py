"""The distillation loop, written once: iterations, metrics, snapshots, checkpoints, progress.

One process (``raydd distill --no-ray``) and every Ray Train worker run this same loop; a
:class:`LoopBackend` supplies only what differs between them: how a shard's numbers become the run's
(``reduce``), how its tensors become the whole set (``gather``), whether this process writes the run
directory, and what else a checkpoint does (Ray Train's report). Because every collective call sits at
the same place of the same schedule on every worker, the sharded run computes what one process does.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

import torch

from raydd.config import DistillConfig
from raydd.progress import BarProgress, Progress
from raydd.rundir import RunDir
from raydd.synthetic import SyntheticSet


class LoopBackend:
    """One process owning every class: no reduction, its own state is the run's, it writes."""

    writer = True

    def restore(self, run: RunDir) -> tuple[dict[str, torch.Tensor], int] | None:
        """The state to continue from (the run's last checkpoint), or None for a fresh start."""
        return run.load_checkpoint()

    def reduce(self, metrics: dict[str, torch.Tensor], shard_weight: float) -> dict[str, float]:
        """This shard's metrics as the whole run's (one process: as they are)."""
        return {name: float(value) for name, value in metrics.items()}

    def gather(self, distiller) -> dict[str, torch.Tensor]:
        """The whole run's tensors and optimiser state."""
        return distiller.state_dict()

    def checkpoint(self, run: RunDir, tensors: dict[str, torch.Tensor], done: int, row: dict) -> None:
        run.save_checkpoint(tensors, done, seconds=row["seconds"])

    def progress(self, desc: str, start: int, total: int, show: bool) -> Progress:
        return BarProgress(desc, start, total, show)

    def after_step(self, run: RunDir, done: int) -> None:
        """Called after every finished iteration and its bookkeeping (an extension point)."""


def _due(done: int, every: int, total: int) -> bool:
    return done % every == 0 or done == total


def distill_loop(distiller, run: RunDir, cfg: DistillConfig, template: SyntheticSet, backend: LoopBackend,
                 clock: Callable[[], float], *, show_progress: bool = True) -> int:
    """Run ``distiller`` from its last checkpoint to ``distiller.iterations``; return the iteration reached.

    ``clock()`` gives the run's seconds so far (continued across resumes); ``template`` is the initial
    synthetic set whose labels and metadata the snapshots carry.
    """
    total = distiller.iterations
    start = 0
    restored = backend.restore(run)
    if restored is not None:
        tensors, start = restored
        distiller.load_state_dict(tensors)
    if backend.writer:
        run.truncate_metrics(start)  # rows a killed run logged after its last checkpoint are recomputed
    snapshots = set(cfg.snapshots)
    progress = backend.progress(f"{cfg.method} ipc{cfg.ipc}", start, total, show_progress)
    for iteration in range(start, total):
        metrics = distiller.step(iteration)
        done = iteration + 1
        row = {"iteration": done}
        if _due(done, cfg.log_every, total):
            row.update(backend.reduce(metrics, distiller.shard_weight()))
            row["seconds"] = round(clock(), 3)
            if backend.writer:
                run.log_metrics(row)
        snapshot_now, checkpoint_now = done in snapshots, _due(done, cfg.checkpoint_every, total)
        # One gather (an all-reduce per tensor on Ray) serves both when they fall on the same iteration.
        tensors = backend.gather(distiller) if snapshot_now or checkpoint_now else None
        if snapshot_now and backend.writer:
            write_snapshot(run, template, tensors, done, clock())
        if checkpoint_now:
            row.setdefault("seconds", round(clock(), 3))
            backend.checkpoint(run, tensors, done, row)
        progress.update(row)
        backend.after_step(run, done)
    progress.close()
    return total


def write_snapshot(run: RunDir, syn: SyntheticSet, tensors: dict[str, torch.Tensor], iteration: int,
                   seconds: float) -> None:
    """The set at ``iteration`` as a loadable synthetic set (``raydd evaluate RUN/snapshots/iteration-N``)."""
    snap = replace(syn, images=tensors["images"], caption_emb=tensors.get("captions", syn.caption_emb),
                   meta={**syn.meta, "iterations": iteration, "distill_seconds": round(seconds, 3)})
    snap.save(run.snapshot_dir(iteration))


def run_clock(started: float, seconds_before: float) -> Callable[[], float]:
    """Seconds since ``started`` (a ``time.time()``), plus what earlier attempts of the run took."""
    return lambda: time.time() - started + seconds_before
