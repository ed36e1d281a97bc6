"""Runners for audit jobs: one after another in this process, or one Ray task per target or shadow.

A runner maps (jobs, population) to the jobs' results in the same order. The population (a few
thousand uint8 images) goes to the Ray object store once and is shared by every task.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from raydd.pipeline.fanout import gather_in_order
from raydd.progress import progress_bar

from .jobs import AuditJob, run_audit_job
from .population import Population

AuditRunner = Callable[[list[AuditJob], Population], list[dict[str, Any]]]


def local_runner(device: torch.device, show_progress: bool = True) -> AuditRunner:
    def runner(jobs: list[AuditJob], population: Population) -> list[dict[str, Any]]:
        bar = progress_bar(jobs, desc="audit models", disable=not show_progress)
        return [run_audit_job(job, population, device) for job in bar]

    return runner


def _run_remote(job: AuditJob, population: Population, threads: int, use_gpu: bool) -> dict[str, Any]:
    torch.set_num_threads(max(1, threads))
    return run_audit_job(job, population, "cuda" if use_gpu and torch.cuda.is_available() else "cpu")


def ray_audit_runner(cpus_per_task: float = 1, gpus_per_task: float = 0, show_progress: bool = True) -> AuditRunner:
    """A runner whose every job (target or shadow pipeline) is one Ray task; Ray must be initialised."""

    def runner(jobs: list[AuditJob], population: Population) -> list[dict[str, Any]]:
        import ray

        if not jobs:
            return []
        remote = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task)(_run_remote)
        population_ref = ray.put(population)
        threads, use_gpu = int(max(1, cpus_per_task)), gpus_per_task > 0
        pending = [remote.remote(job, population_ref, threads, use_gpu) for job in jobs]
        return gather_in_order(pending, "audit models", show_progress)

    return runner


def cluster_audit_runner(device: str, show_progress: bool = True, gpu_share: float = 0.25) -> AuditRunner:
    """The Ray runner sized to the cluster: a ``gpu_share`` of a GPU per job where GPUs exist and the run
    may use them (audit models are small: several share one GPU), else one CPU per job."""
    from raydd.pipeline.cluster import available_gpus

    if device != "cpu" and available_gpus() > 0:
        return ray_audit_runner(1, min(1.0, gpu_share), show_progress)
    return ray_audit_runner(1, 0, show_progress)
