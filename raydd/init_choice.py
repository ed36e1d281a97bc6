"""Which real images start the synthetic set of a class: a random draw, or a choice by their captions.

``random`` is the reference (distinct images drawn from a per-class seed). The caption choices use the
caption embeddings of the class's training images (cosine geometry):

- ``caption_typical``: the images whose captions lie nearest the class's mean caption, the class as
  its captions describe it most often;
- ``caption_cover``: one image per caption cluster (seeded k-means over the class's captions with as
  many clusters as images to pick), the image nearest each cluster's centre, so the set starts from
  the different ways the class is described rather than from its most common one.

Every choice depends on the class's own rows only, so a worker that owns a shard of the classes picks
what one process would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raydd.config_sections import INIT_CHOICES as CHOICES
from raydd.realpool import RealPool
from raydd.seeding import generator

KMEANS_STEPS = 20


def choose_init_rows(pool: RealPool, c: int, n: int, seed: int, choice: str,
                     caption_emb: torch.Tensor | None = None) -> torch.Tensor:
    """Up to ``n`` distinct pool indices of class ``c`` (fewer only when the class has fewer images)."""
    if choice == "random":
        index, _ = pool.sample_indices([c], n, seed, "init-real")
        return index
    if choice not in CHOICES:
        raise ValueError(f"unknown init choice {choice!r}; known: {', '.join(CHOICES)}")
    if caption_emb is None:
        raise ValueError(f"init choice {choice!r} needs the caption embeddings of the pool's images")
    rows = pool.class_indices[c]
    if len(rows) == 0:
        return rows.to(pool.images.device)
    emb = F.normalize(caption_emb[rows.to(caption_emb.device)].float().cpu(), dim=1)
    n = min(n, len(rows))
    picked = most_typical(emb, n) if choice == "caption_typical" else cluster_representatives(
        emb, n, generator(seed, "init-cover", c))
    return rows[picked].to(pool.images.device)


def most_typical(emb: torch.Tensor, n: int) -> torch.Tensor:
    """Positions of the ``n`` unit vectors nearest their mean direction (ties: the earlier row first)."""
    centre = F.normalize(emb.mean(0), dim=0)
    return torch.sort(emb @ centre, descending=True, stable=True).indices[:n]


def cluster_representatives(emb: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """k-means (k-means++ start, cosine) with ``n`` centres; per centre its nearest row not yet taken."""
    centres = kmeans_plus_plus(emb, n, g)
    for _ in range(KMEANS_STEPS):
        assign = (emb @ centres.T).argmax(1)
        moved = centres.clone()
        for k in range(n):
            members = emb[assign == k]
            if len(members):
                moved[k] = F.normalize(members.mean(0), dim=0)
        if torch.equal(moved, centres):
            break
        centres = moved
    taken: list[int] = []
    similarity = emb @ centres.T  # [rows, n]
    for k in range(n):
        order = torch.sort(similarity[:, k], descending=True, stable=True).indices.tolist()
        taken.append(next(i for i in order if i not in taken))
    return torch.tensor(taken, dtype=torch.int64)


def kmeans_plus_plus(emb: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` starting centres: the first at random, each next one drawn with probability ∝ distance²."""
    first = int(torch.randint(len(emb), (1,), generator=g))
    centres = [emb[first]]
    distance = (1 - emb @ emb[first]).clamp(min=0)
    for _ in range(1, n):
        weights = distance ** 2
        if float(weights.sum()) <= 0:  # every row sits on a centre already (repeated captions)
            nxt = int(torch.randint(len(emb), (1,), generator=g))
        else:
            nxt = int(torch.multinomial(weights, 1, generator=g))
        centres.append(emb[nxt])
        distance = torch.minimum(distance, (1 - emb @ emb[nxt]).clamp(min=0))
    return torch.stack(centres)
