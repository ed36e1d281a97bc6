"""Seeded model construction, so parallel workers can draw the same random network."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from raydd.models.registry import get_model


def build_seeded(name: str, seed: int, device: torch.device | str, **kwargs: Any) -> nn.Module:
    """Build ``name`` with PyTorch's default initialisation drawn from ``seed``, then move it to ``device``.

    The parameters are drawn on the CPU, so they are bitwise identical whatever the target
    device. Only the CPU generator is reseeded (``torch.manual_seed`` would also reseed the
    CUDA generators), and inside ``fork_rng`` so the caller's RNG state is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        model = get_model(name, **kwargs)
    return model.to(device)
