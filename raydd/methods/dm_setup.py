"""What the fast DM family needs before the distillation loop starts, in either driver.

The memory check runs before anything is written; the trained model pool is trained (or read back) by
the process that sees every class, then stored in the run directory for the class-sharded workers.
"""

from __future__ import annotations

import torch

from raydd.config import Config
from raydd.methods.base import NetworkSpec
from raydd.methods.model_pool import POOL_FILE, TrainedPool, pool_fingerprint, train_pool


def uses_bank(cfg: Config) -> bool:
    return cfg.distill.method == "dm" and cfg.dm.bank


def uses_trained_pool(cfg: Config) -> bool:
    return uses_bank(cfg) and cfg.dm.pool == "trained"


def network_spec(cfg: Config, channels: int, num_classes: int, image_size: tuple[int, int]) -> NetworkSpec:
    return NetworkSpec(cfg.distill.model, channels, num_classes, image_size)


def check_memory(cfg: Config, channels: int, num_classes: int, image_size: tuple[int, int],
                 caption_dim: int = 0) -> None:
    """Refuse a bank that would not fit, with its size, before the run starts."""
    if not uses_bank(cfg):
        return
    from raydd.methods.feature_bank import check_bank_memory

    net = network_spec(cfg, channels, num_classes, image_size).build(0, torch.device("cpu"))
    with torch.no_grad():
        feature_dim = net.embed(torch.zeros(1, channels, *image_size)).shape[1]
    per_class = cfg.distill.ipc * cfg.dm.formation ** 2
    check_bank_memory(cfg.dm, cfg.mm, num_classes, feature_dim, per_class, caption_dim)


def ensure_model_pool(cfg: Config, run, real, spec: NetworkSpec, flip_ok: bool, dataset: str,
                      device: torch.device, show_progress: bool = False) -> TrainedPool | None:
    """The trained pool of this run: read from the run directory when stored, else trained and stored."""
    if not uses_trained_pool(cfg):
        return None
    fingerprint = pool_fingerprint(cfg.dm, spec, cfg.seed, dataset)
    if run.has(POOL_FILE):
        return TrainedPool.load(run.file(POOL_FILE), fingerprint)
    pool = train_pool(cfg.dm, spec, real, cfg.seed, device, cfg.distill.dsa_strategy, flip_ok,
                      show_progress=show_progress)
    pool.save(run.file(POOL_FILE), fingerprint)
    return pool


def load_model_pool(cfg: Config, run, spec: NetworkSpec, dataset: str) -> TrainedPool | None:
    """A worker's copy of the pool its driver stored."""
    if not uses_trained_pool(cfg):
        return None
    return TrainedPool.load(run.file(POOL_FILE), pool_fingerprint(cfg.dm, spec, cfg.seed, dataset))
