"""Named, stable seeds derived from the run seed.

Every random draw of a distillation iteration (network init, real batch, augmentation) takes its seed
from ``derive_seed(run_seed, purpose, iteration, ...)``. Two consequences we rely on:
a resumed run replays exactly the draws an uninterrupted one would have made, and Ray Train workers
that own different classes still draw the same network for the same iteration.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed determined by ``seed`` and the ``keys`` (stable across processes and versions)."""
    text = ":".join([str(int(seed)), *map(str, keys)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def generator(seed: int, *keys: object, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *keys))
    return g
