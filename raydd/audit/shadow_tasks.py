"""Runners for audit jobs: one after another in this process, or one Ray task per target or shadow.

A runner maps (jobs, population) to the jobs' results in the same order. The population (a few
thousand uint8 images) goes to the Ray object store once and is shared by every task.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from raydd.progress import progress_bar
from raydd.ray_tasks import run_tasks

from .jobs import AuditJob, run_audit_job
from .population import Population

AuditRunner = Callable[[list[AuditJob], Population], list[dict[str, Any]]]


def local_runner(device: torch.device, show_progress: bool = True) -> AuditRunner:
    def runner(jobs: list[AuditJob], population: Population) -> list[dict[str, Any]]:
        bar = progress_bar(jobs, desc="audit models", disable=not show_progress)
        return [run_audit_job(job, population, device) for job in bar]

    return runner


def ray_audit_runner(cpus_per_task: float = 1, gpus_per_task: float = 0, show_progress: bool = True) -> AuditRunner:
    """A runner whose every job (target or shadow pipeline) is one Ray task; Ray must be initialised."""

    def runner(jobs: list[AuditJob], population: Population) -> list[dict[str, Any]]:
        return run_tasks(run_audit_job, jobs, population, cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task,
                         desc="audit models", show_progress=show_progress)

    return runner


def cluster_audit_runner(device: str, show_progress: bool = True, gpu_share: float = 0.25) -> AuditRunner:
    """The Ray runner sized to the cluster: a ``gpu_share`` of a GPU per job where GPUs exist and the run
    may use them (audit models are small: several share one GPU), else one CPU per job."""
    from raydd.pipeline.cluster import available_gpus

    if device != "cpu" and available_gpus() > 0:
        return ray_audit_runner(1, min(1.0, gpu_share), show_progress)
    return ray_audit_runner(1, 0, show_progress)
