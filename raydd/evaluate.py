"""The train-from-scratch protocol: what a synthetic set is worth.

N networks, each freshly initialised, are trained on the synthetic images only (SGD, momentum 0.9,
weight decay 5e-4, batch 256, lr x0.1 at half the epochs) and tested once, after the last epoch, on the
real test split. No model or epoch is chosen by test accuracy. Augmentation and epochs come from the
named protocol (``eval.protocol``: ``dsa`` as DSA/DM report, ``dc`` as the DC paper) or are set directly.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from raydd.augment import DSA
from raydd.config import EvalConfig, FusionConfig
from raydd.eval_records import finished_and_pending, keep
from raydd.models.fusion import build_fused_seeded, drop_captions
from raydd.models.init import build_seeded
from raydd.progress import progress_bar
from raydd.results import Accuracy, EvalResult
from raydd.seeding import derive_seed, generator


@dataclass
class EvalJob:
    """One independent evaluation model: everything needed to train and test it (picklable for Ray)."""

    train_images: torch.Tensor  # normalised float32 [N, C, H, W]
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    model: str
    num_classes: int
    cfg: EvalConfig
    seed: int
    index: int
    flip_ok: bool = True
    epochs: int | None = None  # overrides cfg.epochs (full-data baseline)
    train_captions: torch.Tensor | None = None  # caption embeddings: train a caption-fused network
    test_captions: torch.Tensor | None = None
    fusion: FusionConfig = field(default_factory=FusionConfig)  # shapes the fused network (captions given)
    record_to: str | None = None  # where the finished model's result is kept (raydd.eval_records)
    fingerprint: str = ""  # what that kept result is valid for

    @property
    def fused(self) -> bool:
        return self.train_captions is not None


def build_eval_network(job: EvalJob, device: torch.device) -> torch.nn.Module:
    channels, height, width = job.train_images.shape[1:]
    seed = derive_seed(job.seed, "eval-net", job.model, job.index, "fused" if job.fused else "image")
    shape = dict(channels=channels, num_classes=job.num_classes, image_size=(height, width))
    if job.fused:
        return build_fused_seeded(job.model, seed, device, caption_dim=job.train_captions.shape[1],
                                  fusion=job.fusion, **shape)
    return build_seeded(job.model, seed, device, **shape)


def train_network(job: EvalJob, device: torch.device, show_progress: bool = False) -> torch.nn.Module:
    cfg = job.cfg
    net = build_eval_network(job, device)
    images = job.train_images.to(device)
    labels = job.train_labels.to(device)
    captions = job.train_captions.to(device) if job.fused else None
    dsa = DSA(cfg.dsa_strategy, flip=job.flip_ok) if cfg.augment == "dsa" else None
    epochs = job.epochs or cfg.epochs
    lr = cfg.lr

    def make_optimizer(rate: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(net.parameters(), lr=rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    optimizer = make_optimizer(lr)
    g_order = generator(job.seed, "eval-order", job.model, job.index)
    g_aug = generator(job.seed, "eval-aug", job.model, job.index, device=device)
    n = images.shape[0]
    net.train()
    bar = progress_bar(range(epochs), desc=f"eval {job.model} #{job.index}", disable=not show_progress)
    for epoch in bar:
        order = torch.randperm(n, generator=g_order).to(device)
        for start in range(0, n, cfg.batch):
            idx = order[start : start + cfg.batch]
            x = images[idx]
            if dsa is not None:
                x = dsa(x, g_aug)
            if captions is not None:
                logits = net(x, drop_captions(captions[idx], job.fusion.caption_dropout, g_aug))
            else:
                logits = net(x)
            loss = F.cross_entropy(logits, labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if epoch + 1 == epochs // 2:
            # As the reference: decay by 10x at half time with a fresh optimiser (momentum reset).
            lr *= 0.1
            optimizer = make_optimizer(lr)
    return net


@torch.inference_mode()
def accuracy(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int, device: torch.device,
             captions: torch.Tensor | None = None) -> float:
    net.eval()
    correct = 0
    for start in range(0, images.shape[0], batch):
        x = images[start : start + batch].to(device)
        y = labels[start : start + batch].to(device)
        logits = net(x, captions[start : start + batch].to(device)) if captions is not None else net(x)
        correct += (logits.argmax(dim=1) == y).sum()
    return float(correct) / max(1, images.shape[0])


def run_job(job: EvalJob, device: torch.device | str = "cpu", show_progress: bool = False) -> dict[str, Any]:
    device = torch.device(device)
    start = time.perf_counter()
    net = train_network(job, device, show_progress)
    acc = accuracy(net, job.test_images, job.test_labels, job.cfg.batch_test, device,
                   captions=job.test_captions if job.fused else None)
    result = {"model": job.model, "index": job.index, "accuracy": acc, "seconds": time.perf_counter() - start,
              "device": describe_device(device)}
    keep(job, result)
    return result


def describe_device(device: torch.device) -> str:
    """Where a model trained, in words: its timing (and any non-determinism) is only read with this."""
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{device.type}, {torch.get_num_threads()} torch threads of {os.cpu_count()} CPUs, torch {torch.__version__}"


def summarise(results: list[dict[str, Any]]) -> Accuracy:
    """Mean and (population, as the reference) standard deviation of the per-model accuracies."""
    accs = np.array([r["accuracy"] for r in sorted(results, key=lambda r: r["index"])], dtype=np.float64)
    return Accuracy(mean=float(accs.mean()), std=float(accs.std()), per_model=[float(a) for a in accs],
                    n=int(len(accs)))


def protocol(cfg: EvalConfig, split: str, epochs: int | None = None) -> dict[str, Any]:
    out = asdict(cfg)
    out["epochs"] = epochs or cfg.epochs
    out["lr_schedule"] = "x0.1 after half the epochs (optimiser re-created)"
    out["accuracy_at"] = "last epoch"
    out["tested_on"] = split
    return out


def evaluate_images(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    num_classes: int,
    cfg: EvalConfig,
    seed: int,
    device: torch.device,
    flip_ok: bool = True,
    epochs: int | None = None,
    models: list[str] | None = None,
    runner: Callable[[list[EvalJob]], list[dict[str, Any]]] | None = None,
    show_progress: bool = True,
    captions: tuple[torch.Tensor, torch.Tensor] | None = None,
    fusion: FusionConfig | None = None,
    record_dir: str | None = None,
) -> EvalResult:
    """Train ``cfg.models`` networks per architecture on the given images; test each once.

    ``runner`` maps a list of jobs to their results; the default runs them one after another in this
    process, the Ray layer passes one that fans them out as tasks. With ``record_dir`` each finished
    model is kept there as it finishes, and models kept by an earlier, interrupted call are not trained
    again (``raydd.eval_records``).
    """
    archs = models or [cfg.model, *cfg.cross_arch]
    caption_kwargs = {}
    if captions is not None:
        caption_kwargs = dict(train_captions=captions[0].cpu(), test_captions=captions[1].cpu(),
                              fusion=fusion or FusionConfig())
    jobs = [
        EvalJob(train_images.cpu(), train_labels.cpu(), test_images.cpu(), test_labels.cpu(), arch, num_classes,
                cfg, seed, i, flip_ok, epochs, **caption_kwargs)
        for arch in archs
        for i in range(cfg.models)
    ]
    if runner is None:
        def runner(items: list[EvalJob]) -> list[dict[str, Any]]:
            return [run_job(job, device, show_progress) for job in items]

    start = time.perf_counter()
    finished, jobs = finished_and_pending(jobs, record_dir) if record_dir else ([], jobs)
    results = finished + (runner(jobs) if jobs else [])
    per_arch = {arch: summarise([r for r in results if r["model"] == arch]) for arch in archs}
    out = EvalResult(
        accuracy=per_arch[archs[0]], model=archs[0],
        cross_arch={a: per_arch[a] for a in archs[1:]} if len(archs) > 1 else None,
        seconds_per_model=float(np.mean([r["seconds"] for r in results])),
        wall_seconds=time.perf_counter() - start,
        devices=sorted({r["device"] for r in results}),
    )
    if not all(math.isfinite(r["accuracy"]) for r in results):
        raise RuntimeError("an evaluation model produced a non-finite accuracy")
    return out


def caption_only_accuracy(train_captions: torch.Tensor, train_labels: torch.Tensor, test_captions: torch.Tensor,
                          test_labels: torch.Tensor, num_classes: int, *, seed: int, steps: int = 300) -> float:
    """A linear classifier on caption embeddings alone (whole training split): what captions explain."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(derive_seed(seed, "caption-only"))
        head = torch.nn.Linear(train_captions.shape[1], num_classes)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.01, weight_decay=1e-5)
    x, y = train_captions.float(), train_labels
    for _ in range(steps):
        loss = F.cross_entropy(head(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float((head(test_captions.float()).argmax(1) == test_labels).float().mean())
