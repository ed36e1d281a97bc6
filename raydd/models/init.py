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


def channels_last(model: nn.Module) -> nn.Module:
    """Store the 4-D (conv) weights channels-last, in place; the math is unchanged.

    Convolutions then run in NHWC (the oneDNN / cuDNN fast path) and hand channels-last activations
    to the norm, activation and pooling layers; inputs in either layout are accepted. Same values up
    to float reassociation inside the convolution (measured ~1e-6 relative), parameters keep their
    logical shapes, so state dicts and gradients compare as before.
    """
    return model.to(memory_format=torch.channels_last)
