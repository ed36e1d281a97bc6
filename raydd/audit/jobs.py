"""One audit model: train it the way the run evaluates, then read its logits on every audited image.

Targets and shadows are the same job with different training inputs:

- ``synthetic``: the run's synthetic set (target) or a set distilled from the shadow's half of the
  population, by the run's own method and config with fewer iterations (shadow);
- ``real_members``: the audited members themselves (target) or the shadow's half;
- ``random_subset``: IPC real images per class from the members (target) or from the shadow's half.

A job is independent of every other one (picklable, seeded by name), so a runner may fan them out.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import torch

from raydd.config import Config
from raydd.data import DatasetSplits
from raydd.evaluate import EvalJob, train_network
from raydd.seeding import derive_seed
from raydd.storage import exists, remove

from .population import Population

KINDS = ("synthetic", "real_members", "random_subset")


@dataclass
class AuditJob:
    kind: str  # one of KINDS
    role: str  # target | shadow
    index: int
    cfg: Config  # the run's config (its eval protocol; its distillation for synthetic shadows)
    dataset: DatasetSplits  # name, classes, normalisation; its splits are empty (the data is the population)
    trains_on: torch.Tensor  # bool [N]: population images this model's training could see
    epochs: int
    seed: int
    images: torch.Tensor | None = None  # synthetic target: the run's synthetic images (normalised)
    labels: torch.Tensor | None = None
    shadow_dir: str | None = None  # synthetic shadow: run directory of its distillation
    keep_weights: bool = False  # return the trained weights (the feature network of the NN search)

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.role}-{self.index}"


def dataset_info(splits: DatasetSplits) -> DatasetSplits:
    """The splits with no images: what a job needs to know about the data, cheap to ship to a task."""
    return dataclasses.replace(splits, train=splits.train.subset([]), val=splits.val.subset([]),
                               test=splits.test.subset([]))


def shadow_config(cfg: Config, index: int, device: torch.device) -> Config:
    """The run's distillation config for shadow ``index``: its own seed, the audit's iteration count."""
    shadow = copy.deepcopy(cfg)
    shadow.seed = derive_seed(cfg.seed, "audit-shadow", index) % (2**31)
    if cfg.audit.shadow_iterations is not None:
        shadow.distill.iterations = cfg.audit.shadow_iterations
    shadow.device = str(device)
    return shadow


def distill_shadow(job: AuditJob, population: Population, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Distill from the shadow's half through the same code path as the run (``run_distillation``)."""
    from raydd.distill import run_distillation

    half = population.subset(torch.nonzero(job.trains_on).flatten(), job.dataset.class_names)
    splits = dataclasses.replace(job.dataset, train=half)
    if exists(job.shadow_dir):
        remove(job.shadow_dir)  # a previous audit's shadow: its half may differ, so never reuse it
    syn = run_distillation(shadow_config(job.cfg, job.index, device), job.shadow_dir, splits=splits,
                           show_progress=False)
    images, labels, _ = syn.training_set()
    return images.cpu(), labels.cpu()


def training_set(job: AuditJob, population: Population, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if job.kind == "synthetic":
        if job.role == "target":
            return job.images, job.labels
        return distill_shadow(job, population, device)
    positions = torch.nonzero(job.trains_on).flatten()
    return job.dataset.normalize(population.images[positions]), population.labels[positions]


@torch.no_grad()
def population_logits(net: torch.nn.Module, images: torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    net.eval()
    return torch.cat([net(images[i : i + batch].to(device)).float().cpu() for i in range(0, len(images), batch)])


def run_audit_job(job: AuditJob, population: Population, device: torch.device | str = "cpu") -> dict[str, Any]:
    device = torch.device(device)
    start = time.perf_counter()
    train_x, train_y = training_set(job, population, device)
    empty = torch.empty(0)
    eval_job = EvalJob(train_images=train_x, train_labels=train_y, test_images=empty, test_labels=empty,
                       model=job.cfg.eval.model, num_classes=len(job.dataset.class_names), cfg=job.cfg.eval,
                       seed=job.seed, index=0, flip_ok=job.dataset.flip_ok, epochs=job.epochs)
    net = train_network(eval_job, device)
    logits = population_logits(net, job.dataset.normalize(population.images), job.cfg.eval.batch_test, device)
    result: dict[str, Any] = {"kind": job.kind, "role": job.role, "index": job.index, "logits": logits,
                              "train_size": int(train_x.shape[0]), "seconds": time.perf_counter() - start}
    if job.keep_weights:
        result["weights"] = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return result
