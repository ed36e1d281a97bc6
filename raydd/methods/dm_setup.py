"""What the fast DM family needs before the distillation loop starts, in either driver.

The memory check runs before anything is written; the trained model pool is trained (or read back) by
the process that sees every class, then stored in the run directory for the class-sharded workers.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from typing import Iterator

import torch

from raydd.artifacts import MODEL_POOL
from raydd.config import Config
from raydd.methods.base import NetworkSpec
from raydd.methods.model_pool import TrainedPool, TrainingImages, pool_fingerprint, train_pool
from raydd.storage import exists, makedirs, read_bytes, write_bytes_atomic


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


def ensure_model_pool(cfg: Config, run, source: TrainingImages, spec: NetworkSpec, flip_ok: bool, dataset: str,
                      device: torch.device, show_progress: bool = False) -> TrainedPool | None:
    """The trained pool of this run: read from the run directory when stored, else trained on ``source``
    (its training split) and stored."""
    if not uses_trained_pool(cfg):
        return None
    fingerprint = pool_fingerprint(cfg.dm, spec, cfg.seed, dataset)
    if run.has(MODEL_POOL):
        return TrainedPool.load(run.file(MODEL_POOL), fingerprint)
    pool = train_pool(cfg.dm, spec, source, cfg.seed, device, cfg.distill.dsa_strategy, flip_ok,
                      show_progress=show_progress)
    pool.save(run.file(MODEL_POOL), fingerprint)
    return pool


def load_model_pool(cfg: Config, run, spec: NetworkSpec, dataset: str) -> TrainedPool | None:
    """A worker's copy of the pool its driver stored."""
    if not uses_trained_pool(cfg):
        return None
    return TrainedPool.load(run.file(MODEL_POOL), pool_fingerprint(cfg.dm, spec, cfg.seed, dataset))


def shared_pool_name(cfg: Config) -> str | None:
    """The file name under which runs that would train the same pool can share it (None: no trained pool).

    The trained weights depend on the data, the seed, the network, the trainings' length, their
    augmentation and the device's arithmetic, and on nothing the rows of an ablation or the trials of
    a search change (loss weights, multi-modal switches, the distillation's own length). The stored
    pool still carries its full fingerprint, which a run checks when it reads it.
    """
    if not uses_trained_pool(cfg):
        return None
    from raydd.run_inputs import resolve_device

    key = json.dumps([cfg.to_dict()["data"], cfg.seed, cfg.distill.model, cfg.distill.dsa_strategy,
                      cfg.dm.pool_trainings, cfg.dm.pool_steps, resolve_device(cfg.device).type], sort_keys=True)
    return f"model-pool-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"


@contextmanager
def sharing_model_pool(cfg: Config, run_path: str, shared_dir: str, *, new_run: bool) -> Iterator[None]:
    """Around one distillation: a new run starts from the shared pool when there is one; a finished
    block leaves the run's pool there for the runs after it (ablation rows, search trials)."""
    if new_run:
        borrow_shared_pool(cfg, run_path, shared_dir)
    yield
    lend_run_pool(cfg, run_path, shared_dir)


def borrow_shared_pool(cfg: Config, run_path: str, shared_dir: str) -> bool:
    """Before a new run: copy a pool another run of ``shared_dir`` trained into it; True when one was there."""
    name = shared_pool_name(cfg)
    if name is None or not exists(f"{shared_dir}/{name}") or exists(f"{run_path}/{MODEL_POOL}"):
        return False
    makedirs(run_path)
    write_bytes_atomic(f"{run_path}/{MODEL_POOL}", read_bytes(f"{shared_dir}/{name}"))
    return True


def lend_run_pool(cfg: Config, run_path: str, shared_dir: str) -> None:
    """After a run: keep the pool it trained in ``shared_dir`` for the runs that follow."""
    name = shared_pool_name(cfg)
    if name is None or exists(f"{shared_dir}/{name}") or not exists(f"{run_path}/{MODEL_POOL}"):
        return
    makedirs(shared_dir)
    write_bytes_atomic(f"{shared_dir}/{name}", read_bytes(f"{run_path}/{MODEL_POOL}"))
