"""Independent trainings (evaluation models, later LiRA shadows) as Ray tasks.

The test images are put in the object store once and shared by every task; each task trains one
network with the CPU threads (or GPU fraction) Ray granted it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from raydd.evaluate import EvalJob, run_job
from raydd.progress import progress_bar


def _run_remote(job: EvalJob, test: tuple[torch.Tensor, torch.Tensor], threads: int, use_gpu: bool) -> dict[str, Any]:
    torch.set_num_threads(max(1, threads))
    job = dataclasses.replace(job, test_images=test[0], test_labels=test[1])
    return run_job(job, "cuda" if use_gpu and torch.cuda.is_available() else "cpu")


def ray_runner(cpus_per_task: float = 1, gpus_per_task: float = 0,
               show_progress: bool = True) -> Callable[[list[EvalJob]], list[dict[str, Any]]]:
    """A runner for ``evaluate_images``: every job becomes one Ray task."""

    def runner(jobs: list[EvalJob]) -> list[dict[str, Any]]:
        import ray

        if not jobs:
            return []
        remote = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task)(_run_remote)
        test_ref = ray.put((jobs[0].test_images, jobs[0].test_labels))
        empty = torch.empty(0)
        pending = [
            remote.remote(dataclasses.replace(job, test_images=empty, test_labels=empty), test_ref,
                          int(max(1, cpus_per_task)), gpus_per_task > 0)
            for job in jobs
        ]
        return gather_in_order(pending, "evaluation models", show_progress)

    return runner


def gather_in_order(pending: list, desc: str, show_progress: bool) -> list[Any]:
    """Results of Ray object refs in submission order, with a bar that moves as each one finishes."""
    import ray

    order = {ref: i for i, ref in enumerate(pending)}
    results: list[Any] = [None] * len(pending)
    bar = progress_bar(range(len(pending)), desc=desc, disable=not show_progress)
    remaining = list(pending)
    while remaining:
        ready, remaining = ray.wait(remaining, num_returns=1)
        results[order[ready[0]]] = ray.get(ready[0])
        bar.update(1)
    bar.close()
    return results


def eval_runner(cfg, show_progress: bool = True) -> Callable[[list[EvalJob]], list[dict[str, Any]]]:
    """The evaluation models of a run as Ray tasks: one CPU each, plus a GPU share when the run uses GPUs."""
    from raydd.pipeline.cluster import available_gpus

    gpus = available_gpus()
    if cfg.device != "cpu" and gpus > 0:
        return ray_runner(cpus_per_task=1, gpus_per_task=min(1.0, gpus / max(1, cfg.eval.models)),
                          show_progress=show_progress)
    return ray_runner(cpus_per_task=1, show_progress=show_progress)
