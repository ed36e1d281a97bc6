"""The networks DM matches features through: fresh random ones, or a pool of partly trained ones.

Classic DM draws a freshly initialised network per iteration. Methods after it (IDM, DANCE, NCFM) found
that networks which have learnt something of the real data give features worth matching: the trained
pool here runs a few short trainings on the real training split (``dm.pool_trainings`` x
``dm.pool_steps`` SGD steps, DSA augmentation) and builds each pool network as an interpolation
``init + lambda (trained - init)`` of one of them, lambda drawn uniformly in [0, dm.pool_lambda_max]
(DANCE's interpolated encoders), so the pool spans untrained to trained features.

The trainings read every class, so they run once before the class-sharded distillation starts and
their weights are stored in the run directory (``model_pool.safetensors``): every Ray Train worker and
every resume reads the same networks. Their batches are drawn from the seed and the split's size alone,
so they are known before any image is read: a source read whole serves them from memory
(``ResidentImages``), a preprocessed one from its class partitions, a stretch of steps at a time
(``raydd.pipeline.pool_rows``), and both train the same networks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from safetensors.torch import save as save_safetensors

from raydd.augment import DSA
from raydd.config import DMConfig
from raydd.errors import RunDirError
from raydd.methods.base import NetworkSpec
from raydd.progress import progress_bar
from raydd.realpool import RealPool
from raydd.seeding import derive_seed, generator
from raydd.storage import read_safetensors, write_bytes_atomic

POOL_FORMAT = "raydd-model-pool/1"


@dataclass
class TrainedPool:
    """Initial and trained weights of each training, as flat state dicts."""

    initial: list[dict[str, torch.Tensor]]
    trained: list[dict[str, torch.Tensor]]
    seconds: float = 0.0

    def interpolated(self, index: int, lam: float) -> dict[str, torch.Tensor]:
        a, b = self.initial[index % len(self.initial)], self.trained[index % len(self.trained)]
        return {k: a[k] + lam * (b[k] - a[k]) if a[k].is_floating_point() else b[k] for k in a}

    def save(self, path: str, fingerprint: str) -> None:
        tensors = {}
        for i, (a, b) in enumerate(zip(self.initial, self.trained)):
            tensors.update({f"{i}.initial.{k}": v.contiguous() for k, v in a.items()})
            tensors.update({f"{i}.trained.{k}": v.contiguous() for k, v in b.items()})
        meta = {"format": POOL_FORMAT, "trainings": str(len(self.initial)), "fingerprint": fingerprint,
                "seconds": f"{self.seconds:.3f}"}
        write_bytes_atomic(path, save_safetensors(tensors, metadata=meta))

    @classmethod
    def load(cls, path: str, fingerprint: str) -> "TrainedPool":
        tensors, meta = read_safetensors(path, "raydd model pool", "delete it to train the pool again")
        if meta.get("format") != POOL_FORMAT or meta.get("fingerprint") != fingerprint:
            raise RunDirError(f"{path}: this model pool was trained for another configuration; delete it to retrain")
        n = int(meta["trainings"])
        initial = [{k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"{i}.initial.")} for i in range(n)]
        trained = [{k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"{i}.trained.")} for i in range(n)]
        return cls(initial, trained, float(meta.get("seconds", 0.0)))


def pool_fingerprint(cfg: DMConfig, spec: NetworkSpec, seed: int, dataset: str) -> str:
    """What the trained weights depend on: a stored pool is reused only when all of it matches."""
    return ":".join(map(str, [dataset, seed, spec.model, spec.channels, spec.num_classes, *spec.image_size,
                              cfg.pool_trainings, cfg.pool_steps]))


POOL_BATCH = 256


class TrainingImages(Protocol):
    """Where the trainings' batches come from: the training split's normalised images by position."""

    size: int  # images in the training split
    steps_per_fetch: int  # how many steps' batches one fetch serves

    def fetch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels at these positions of the training split, in this order."""
        ...


class ResidentImages:
    """The training split already in memory (the in-process run, a source read whole): one step a fetch."""

    steps_per_fetch = 1

    def __init__(self, real: RealPool) -> None:
        self.real, self.size = real, real.images.shape[0]

    def fetch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = index.to(self.real.images.device)
        return self.real.images[index], self.real.labels[index]


def train_pool(cfg: DMConfig, spec: NetworkSpec, source: TrainingImages, seed: int, device: torch.device,
               dsa_strategy: str, flip_ok: bool, show_progress: bool = False) -> TrainedPool:
    """``cfg.pool_trainings`` short trainings on the real training images (every class), seeded.

    SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256, DSA augmentation: the evaluation
    protocol's optimiser, stopped after ``cfg.pool_steps`` steps.
    """
    t0 = time.perf_counter()
    dsa = DSA(dsa_strategy, flip=flip_ok)
    n = source.size
    batch = min(POOL_BATCH, n)
    initial, trained = [], []
    bar = progress_bar(range(cfg.pool_trainings * cfg.pool_steps), desc="model pool", disable=not show_progress)
    steps = iter(bar)
    for t in range(cfg.pool_trainings):
        net = spec.build(derive_seed(seed, "pool-net", t), device)
        initial.append({k: v.detach().cpu().clone() for k, v in net.state_dict().items()})
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        g_batch = generator(seed, "pool-batch", t)
        g_aug = generator(seed, "pool-aug", t, device=device)
        net.train()
        draws = [torch.randint(n, (batch,), generator=g_batch) for _ in range(cfg.pool_steps)]
        for first in range(0, cfg.pool_steps, source.steps_per_fetch):
            chunk = draws[first:first + source.steps_per_fetch]
            images, labels = source.fetch(torch.cat(chunk))
            images, labels = images.to(device), labels.to(device)
            for k in range(len(chunk)):
                rows = slice(k * batch, (k + 1) * batch)
                loss = F.cross_entropy(net(dsa(images[rows], g_aug)), labels[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                next(steps, None)
        trained.append({k: v.detach().cpu().clone() for k, v in net.state_dict().items()})
    return TrainedPool(initial, trained, time.perf_counter() - t0)


class NetworkPool:
    """The ``M`` networks of one bank generation, built deterministically from the run seed.

    ``random``: network m of generation g is freshly initialised from seed (run, g, m), as classic DM
    draws them. ``trained``: network m interpolates training ``m mod T`` with a lambda drawn from
    (run, g, m). The same (seed, generation) gives the same networks on every worker and after a resume.
    """

    def __init__(self, cfg: DMConfig, spec: NetworkSpec, seed: int, device: torch.device,
                 trained: TrainedPool | None = None) -> None:
        if cfg.pool == "trained" and trained is None:
            raise ValueError("dm.pool=trained needs the trained pool's weights")
        self.cfg, self.spec, self.seed, self.device, self.trained = cfg, spec, seed, device, trained

    def networks(self, generation: int) -> list[torch.nn.Module]:
        nets = []
        for m in range(self.cfg.networks):
            net = self.spec.build(derive_seed(self.seed, "bank-net", generation, m), self.device)
            if self.cfg.pool == "trained":
                g = generator(self.seed, "pool-lambda", generation, m)
                lam = float(torch.rand((), generator=g)) * self.cfg.pool_lambda_max
                net.load_state_dict(self.trained.interpolated(m, lam))
            net.train()  # instance norm: no running statistics; the reference runs DM's nets in train mode
            net.requires_grad_(False)
            nets.append(net)
        return nets
