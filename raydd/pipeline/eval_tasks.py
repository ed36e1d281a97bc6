"""The evaluation models of a run as Ray tasks (raydd.ray_tasks), one network each.

The test images are put in the object store once and shared by every task.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from raydd.evaluate import EvalJob, run_job
from raydd.ray_tasks import run_tasks


def _evaluate(job: EvalJob, test: tuple[torch.Tensor, torch.Tensor], device: str) -> dict[str, Any]:
    return run_job(dataclasses.replace(job, test_images=test[0], test_labels=test[1]), device)


def ray_runner(cpus_per_task: float = 1, gpus_per_task: float = 0,
               show_progress: bool = True) -> Callable[[list[EvalJob]], list[dict[str, Any]]]:
    """A runner for ``evaluate_images``: every job becomes one Ray task."""

    def runner(jobs: list[EvalJob]) -> list[dict[str, Any]]:
        if not jobs:
            return []
        empty = torch.empty(0)  # the test images travel once, in the object store
        stripped = [dataclasses.replace(job, test_images=empty, test_labels=empty) for job in jobs]
        return run_tasks(_evaluate, stripped, (jobs[0].test_images, jobs[0].test_labels),
                         cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task, desc="evaluation models",
                         show_progress=show_progress)

    return runner


def eval_runner(cfg, show_progress: bool = True) -> Callable[[list[EvalJob]], list[dict[str, Any]]]:
    """The evaluation models of a run as Ray tasks: one CPU each, plus a GPU share when the run uses GPUs."""
    from raydd.pipeline.cluster import available_gpus

    gpus = available_gpus()
    if cfg.device != "cpu" and gpus > 0:
        return ray_runner(cpus_per_task=1, gpus_per_task=min(1.0, gpus / max(1, cfg.eval.models)),
                          show_progress=show_progress)
    return ray_runner(cpus_per_task=1, show_progress=show_progress)
