"""Memorisation: how close each synthetic image is to a real training image.

A synthetic set can leak by copying: an image that sits nearer to one real training image than real
images of its class sit to each other is close to a copy of it. Two views: pixel L2 in the normalised
space (what a person sees) and cosine similarity of the features of a ConvNet trained on real data
(what a classifier sees). Searches are chunked matrix products, never a loop over pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from raydd.data import ImageData
from raydd.grid import write_grid
from raydd.seeding import generator
from raydd.synthetic import SyntheticSet

Prepare = Callable[[torch.Tensor], torch.Tensor]
CHUNK_ELEMENTS = 2**24  # keys per chunk x dimensions: ~128 MB of float64 per chunk


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).double()


def _chunks(keys: torch.Tensor, dims: int, chunk: int | None):
    step = chunk or max(1, CHUNK_ELEMENTS // max(1, dims))
    for start in range(0, keys.shape[0], step):
        yield start, keys[start : start + step]


def _mask_excluded(scores: torch.Tensor, exclude: torch.Tensor | None, start: int, fill: float) -> None:
    if exclude is None:
        return
    local = exclude - start
    rows = torch.nonzero((local >= 0) & (local < scores.shape[1])).flatten()
    scores[rows, local[rows]] = fill


def nearest_l2(queries: torch.Tensor, keys: torch.Tensor, *, prepare: Prepare | None = None, chunk: int | None = None,
               exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query, (distance, index) of its nearest key in Euclidean distance.

    ``prepare`` turns a chunk of keys into the query space (uint8 pixels -> normalised floats) so a
    large dataset is never copied to float at once; ``exclude[q]`` is a key index query q may not
    match (itself). Float64: a near-copy's small distance survives the |q|^2 - 2qk + |k|^2 expansion.
    """
    q = _flat(queries)
    q_sq = (q * q).sum(dim=1, keepdim=True)
    best = torch.full((q.shape[0],), float("inf"), dtype=torch.float64)
    best_index = torch.zeros(q.shape[0], dtype=torch.int64)
    for start, block in _chunks(keys, q.shape[1], chunk):
        k = _flat(prepare(block) if prepare is not None else block).to(q.device)
        d2 = (q_sq - 2.0 * q @ k.T + (k * k).sum(dim=1)).clamp_min_(0.0)
        _mask_excluded(d2, exclude, start, float("inf"))
        value, index = d2.min(dim=1)
        better = value < best
        best[better], best_index[better] = value[better], index[better] + start
    return best.sqrt(), best_index


def nearest_cosine(queries: torch.Tensor, keys: torch.Tensor, *, chunk: int | None = None,
                   exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query, (similarity, index) of its most cosine-similar key."""
    q = torch.nn.functional.normalize(_flat(queries), dim=1)
    best = torch.full((q.shape[0],), float("-inf"), dtype=torch.float64)
    best_index = torch.zeros(q.shape[0], dtype=torch.int64)
    for start, block in _chunks(keys, q.shape[1], chunk):
        sim = q @ torch.nn.functional.normalize(_flat(block).to(q.device), dim=1).T
        _mask_excluded(sim, exclude, start, float("-inf"))
        value, index = sim.max(dim=1)
        better = value > best
        best[better], best_index[better] = value[better], index[better] + start
    return best, best_index


@torch.no_grad()
def embed(net: torch.nn.Module, images: torch.Tensor, *, prepare: Prepare | None = None, batch: int = 512,
          device: torch.device | str = "cpu") -> torch.Tensor:
    """The network's feature vectors (``net.embed``) of ``images``, batch by batch."""
    net.eval()
    out = []
    for start in range(0, images.shape[0], batch):
        x = images[start : start + batch]
        x = prepare(x) if prepare is not None else x
        out.append(net.embed(x.to(device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def same_class_reference(points: torch.Tensor, labels: torch.Tensor, num_classes: int, per_class: int, seed: int, *,
                         metric: str, prepare: Prepare | None = None) -> np.ndarray:
    """Per class: the median over ``per_class`` sampled real images of their nearest *other* same-class image.

    The yardstick for "close": distance (L2) or similarity (cosine) between two distinct real images.
    NaN for a class with fewer than two images.
    """
    medians = np.full(num_classes, np.nan)
    for c in range(num_classes):
        rows = torch.nonzero(labels == c).flatten()
        if len(rows) < 2:
            continue
        picks = torch.randperm(len(rows), generator=generator(seed, "audit-nn-reference", metric, c))[:per_class]
        class_points = points[rows]
        queries = prepare(class_points[picks]) if prepare is not None else class_points[picks]
        if metric == "l2":
            value, _ = nearest_l2(queries, class_points, prepare=prepare, exclude=picks)
        else:
            value, _ = nearest_cosine(queries, class_points, exclude=picks)
        medians[c] = float(value.median())
    return medians


@dataclass
class NearestPairs:
    """Per synthetic image: its nearest real image under each view."""

    l2_distance: torch.Tensor
    l2_index: torch.Tensor  # into the searched members
    cos_similarity: torch.Tensor
    cos_index: torch.Tensor  # into the members (already mapped back from the feature pool)


def _summary(values: torch.Tensor) -> dict[str, float]:
    v = values.double()
    return {"median": float(v.median()), "mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}


def _numbers(values: np.ndarray) -> list[float | None]:
    """JSON-safe: a class with no reference (NaN) becomes null."""
    return [None if np.isnan(x) else float(x) for x in values]


def _fraction(flags: torch.Tensor) -> float:
    return float(flags.double().mean()) if flags.numel() else float("nan")


def feature_pool(members: ImageData, init_ids: list[str], size: int | None, seed: int) -> torch.Tensor:
    """Member positions searched in feature space: a seeded sample plus every image that initialised a
    synthetic image (the likeliest nearest neighbours, so a sample never misses them)."""
    if size is None or size >= len(members):
        return torch.arange(len(members))
    sample = torch.randperm(len(members), generator=generator(seed, "audit-nn-pool"))[:size]
    position = {image_id: i for i, image_id in enumerate(members.ids)}
    seeds = torch.tensor([position[i] for i in init_ids if i in position], dtype=torch.int64)
    return torch.unique(torch.cat([sample, seeds]))


def memorisation(syn: SyntheticSet, members: ImageData, normalize: Prepare, net: torch.nn.Module, *,
                 pool_size: int | None, queries_per_class: int, seed: int, device: torch.device,
                 batch: int = 512) -> tuple[dict[str, Any], NearestPairs]:
    """Nearest real member of every synthetic image (pixel L2 and feature cosine) and how close that is
    compared with two real images of the same class."""
    syn_images, syn_labels, _ = syn.training_set()  # multi-formation: every decoded image is a query
    syn_images, syn_labels = syn_images.cpu(), syn_labels.cpu()
    l2, l2_index = nearest_l2(syn_images, members.images, prepare=normalize)
    l2_reference = same_class_reference(members.images, members.labels, syn.num_classes, queries_per_class, seed,
                                        metric="l2", prepare=normalize)

    pool = feature_pool(members, syn.init_ids, pool_size, seed)
    pool_features = embed(net, members.images[pool], prepare=normalize, batch=batch, device=device)
    syn_features = embed(net, syn_images, batch=batch, device=device)
    cos, pool_index = nearest_cosine(syn_features, pool_features)
    cos_reference = same_class_reference(pool_features, members.labels[pool], syn.num_classes, queries_per_class,
                                         seed, metric="cosine")
    cos_index = pool[pool_index]

    l2_limit = torch.as_tensor(l2_reference, dtype=torch.float64)[syn_labels]
    cos_limit = torch.as_tensor(cos_reference, dtype=torch.float64)[syn_labels]
    init_ids = syn.init_ids if len(syn.init_ids) == len(syn_labels) else [""] * len(syn_labels)
    # Only images that started from a real image have an "own init image" (none under noise init).
    started_real = torch.tensor([bool(s) for s in init_ids], dtype=torch.bool)
    is_init_l2 = torch.tensor([members.ids[i] == s for i, s in zip(l2_index.tolist(), init_ids)])[started_real]
    is_init_cos = torch.tensor([members.ids[i] == s for i, s in zip(cos_index.tolist(), init_ids)])[started_real]
    stats = {
        "pixel_l2": {
            "space": "normalised pixels",
            "searched": len(members),
            "distance": _summary(l2),
            "real_same_class_median": _numbers(l2_reference),
            "fraction_closer_than_real_median": _fraction(l2 < l2_limit),
            "nearest_is_init_image_fraction": _fraction(is_init_l2) if started_real.any() else None,
        },
        "feature_cosine": {
            "space": "features of the real-members target network",
            "searched": int(len(pool)),
            "similarity": _summary(cos),
            "real_same_class_median": _numbers(cos_reference),
            "fraction_more_similar_than_real_median": _fraction(cos > cos_limit),
            "nearest_is_init_image_fraction": _fraction(is_init_cos) if started_real.any() else None,
        },
        "real_queries_per_class": queries_per_class,
    }
    return stats, NearestPairs(l2, l2_index, cos, cos_index)


def pair_records(pairs: NearestPairs, syn: SyntheticSet, members: ImageData) -> list[dict[str, Any]]:
    """One row per synthetic image (decoded, under multi-formation) naming its nearest real images."""
    labels = syn.training_set()[1]
    return [
        {"synthetic_index": j, "class": syn.class_names[int(labels[j])],
         "pixel_l2": {"id": members.ids[int(pairs.l2_index[j])], "distance": float(pairs.l2_distance[j])},
         "feature_cosine": {"id": members.ids[int(pairs.cos_index[j])], "similarity": float(pairs.cos_similarity[j])}}
        for j in range(len(labels))
    ]


def write_pairs_png(path: str, syn: SyntheticSet, members: ImageData, pairs: NearestPairs, max_pairs: int = 10) -> str:
    """Each synthetic image followed by its nearest real image (pixel L2), one row per class."""
    decoded, syn_labels, _ = syn.training_set()
    shown = syn.denormalize(decoded)
    real = members.images[pairs.l2_index].float() / 255.0
    images, labels = [], []
    for c in range(syn.num_classes):
        for j in torch.nonzero(syn_labels.cpu() == c).flatten()[:max_pairs].tolist():
            images += [shown[j], real[j]]
            labels += [c, c]
    return write_grid(path, torch.stack(images), torch.tensor(labels), syn.class_names, max_per_class=2 * max_pairs,
                      title="synthetic | nearest real (pixel L2)")
