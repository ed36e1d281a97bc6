"""Independent jobs as Ray tasks, whatever each computes: evaluation models, audit targets and shadows.

What every job reads (the test images, the audit population) goes to the object store once; each task
runs with the CPU threads (or GPU share) Ray granted it, and the results come back in job order.
"""

from __future__ import annotations

from typing import Any, Callable

from raydd.progress import progress_bar

Task = Callable[[Any, Any, str], dict[str, Any]]  # (job, what every job reads, device) -> result


def run_tasks(task: Task, jobs: list, shared: Any, *, cpus_per_task: float, gpus_per_task: float, desc: str,
              show_progress: bool) -> list[dict[str, Any]]:
    """``task(job, shared, device)`` for every job, one Ray task each (Ray must be initialised)."""
    import ray

    if not jobs:
        return []
    remote = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task)(_in_task)
    shared_ref = ray.put(shared)
    threads, use_gpu = int(max(1, cpus_per_task)), gpus_per_task > 0
    pending = [remote.remote(task, job, shared_ref, threads, use_gpu) for job in jobs]
    return gather_in_order(pending, desc, show_progress)


def _in_task(task: Task, job: Any, shared: Any, threads: int, use_gpu: bool) -> dict[str, Any]:
    import torch

    torch.set_num_threads(max(1, threads))
    return task(job, shared, "cuda" if use_gpu and torch.cuda.is_available() else "cpu")


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
