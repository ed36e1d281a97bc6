"""Which real caption each synthetic caption embedding sits closest to.

A learned or initialised caption embedding is a vector nobody can read; its nearest real caption (by
cosine similarity) is the sentence it now stands for, which is what a reader needs to judge it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class NearestCaption:
    text: str
    similarity: float


def nearest_captions(caption_emb: torch.Tensor, bank: dict[str, Any]) -> list[NearestCaption] | None:
    """For each row of ``caption_emb`` the closest caption of ``bank``; None when dimensions differ."""
    real = torch.as_tensor(bank["caption_emb"], dtype=torch.float32)
    synthetic = caption_emb.detach().float().cpu()
    if real.ndim != 2 or synthetic.ndim != 2 or real.shape[1] != synthetic.shape[1]:
        return None
    similarity = F.normalize(synthetic, dim=1) @ F.normalize(real, dim=1).T
    best, index = similarity.max(dim=1)
    return [NearestCaption(bank["captions"][i], float(s)) for i, s in zip(index.tolist(), best.tolist())]
