"""Distillation losses as pure functions of tensors (no modules, no state).

The definitions follow the reference implementations of DM (Zhao & Bilen, WACV 2023) and DC/DSA
(Zhao et al., ICLR 2021; Zhao & Bilen, ICML 2021); docs/method.md states them in formulas.
"""

from __future__ import annotations

import torch

# The reference code adds this to the product of norms in the cosine of gradient matching.
GRADIENT_COSINE_EPS = 1e-6


def class_means(features: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Mean feature per group: ``features`` [N, D], ``groups`` int64 [N] in 0..num_groups-1 -> [G, D].

    Done with one ``index_add_`` so classes of unequal batch size are still averaged in one pass.
    """
    sums = features.new_zeros(num_groups, features.shape[1]).index_add_(0, groups, features)
    counts = torch.bincount(groups, minlength=num_groups).clamp_min(1).to(features.dtype)
    return sums / counts[:, None]


def mean_feature_distance(real_means: torch.Tensor, syn_means: torch.Tensor) -> torch.Tensor:
    """DM: sum over classes of the squared L2 distance between mean real and mean synthetic features."""
    return ((real_means - syn_means) ** 2).sum()


def masked_average(feature_map: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and channel, the average of the feature map over object positions: sum_p f w / sum_p w.

    ``feature_map`` [N, C, h, w], ``weights`` [N, 1, h, w] >= 0 (a mask carried onto the map). Returns the
    averages [N, C] and the weight totals [N]; an image whose total is 0 has no object position and gets
    a zero average, which ``object_class_means`` leaves out.
    """
    total = weights.sum(dim=(2, 3))  # [N, 1]
    sums = (feature_map * weights).sum(dim=(2, 3))
    return sums / total.clamp_min(torch.finfo(sums.dtype).tiny), total[:, 0]


def object_class_means(averages: torch.Tensor, totals: torch.Tensor, whole: torch.Tensor, groups: torch.Tensor,
                       num_groups: int) -> torch.Tensor:
    """Per class, the mean of ``masked_average`` over the images that have an object position.

    A class none of whose images in the batch has one (its objects all left the frame under augmentation,
    or the batch drew only empty masks) takes the mean of ``whole``, the averages over every position:
    what an all-ones mask gives. Computed without reading values back to the host.
    """
    present = (totals > 0).to(averages.dtype)
    sums = averages.new_zeros(num_groups, averages.shape[1]).index_add_(0, groups, averages * present[:, None])
    counts = averages.new_zeros(num_groups).index_add_(0, groups, present)
    objects = sums / counts.clamp_min(1)[:, None]
    return torch.where(counts[:, None] > 0, objects, class_means(whole, groups, num_groups))


def layer_gradient_distance(g_real: torch.Tensor, g_syn: torch.Tensor) -> torch.Tensor:
    """Sum over output rows of (1 - cosine) between the real and synthetic gradient of one parameter.

    Conv weights [out, in, k, k] are compared row-wise as [out, in*k*k]; linear weights [out, in]
    as they are; 1-D tensors (biases, norm affine parameters) contribute 0, as in the reference.
    """
    if g_real.dim() == 1:
        return g_real.new_zeros(())
    rows_real = g_real.reshape(g_real.shape[0], -1)
    rows_syn = g_syn.reshape(g_syn.shape[0], -1)
    dot = (rows_real * rows_syn).sum(dim=-1)
    norms = rows_real.norm(dim=-1) * rows_syn.norm(dim=-1)
    return (1.0 - dot / (norms + GRADIENT_COSINE_EPS)).sum()


def gradient_distance(grads_real: list[torch.Tensor], grads_syn: list[torch.Tensor]) -> torch.Tensor:
    """DC/DSA matching distance: the layer distances summed over all parameters."""
    if len(grads_real) != len(grads_syn):
        raise ValueError("real and synthetic gradient lists differ in length")
    total = grads_syn[0].new_zeros(())
    for g_real, g_syn in zip(grads_real, grads_syn):
        total = total + layer_gradient_distance(g_real, g_syn)
    return total


def caption_matching_targets(
    syn_captions: torch.Tensor,
    syn_groups: torch.Tensor,
    real_features: torch.Tensor,
    real_captions: torch.Tensor,
    real_groups: torch.Tensor,
    tau: float,
) -> torch.Tensor:
    """CM's target per synthetic sample: z_j = sum_i softmax_i(tau * cos(u_j, t_i)) phi(x_i), i of j's class.

    All classes at once: other classes are masked out of the softmax.
    """
    u = torch.nn.functional.normalize(syn_captions, dim=1)
    t = torch.nn.functional.normalize(real_captions, dim=1)
    logits = tau * (u @ t.T)
    same_class = syn_groups[:, None] == real_groups[None, :]
    logits = logits.masked_fill(~same_class, float("-inf"))
    return torch.softmax(logits, dim=1) @ real_features


CM_REDUCTIONS = ("mean", "sum")


def caption_matching_distance(
    syn_features: torch.Tensor,
    targets: torch.Tensor,
    syn_groups: torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """CM's distance once the targets are known: sum over classes of the mean over the class's synthetic
    samples of || phi(s_j) - z_j ||^2 (``mean``), or the plain sum over every synthetic sample (``sum``).

    ``mean`` puts one caption term per class beside DM's one distance per class (and gradient matching's
    one distance per class), so a weight on it means the same at every IPC and in every method.
    ``sum`` is the formulation runs written before ``mm.cm_reduction`` existed used.
    """
    per_sample = ((syn_features - targets) ** 2).sum(dim=1)
    if reduction == "sum":
        return per_sample.sum()
    if reduction != "mean":
        raise ValueError(f"caption matching reduction must be one of {CM_REDUCTIONS}, got {reduction!r}")
    counts = torch.bincount(syn_groups)
    return (per_sample / counts[syn_groups].to(per_sample.dtype)).sum()


def caption_matching_loss(
    syn_features: torch.Tensor,
    syn_captions: torch.Tensor,
    syn_groups: torch.Tensor,
    real_features: torch.Tensor,
    real_captions: torch.Tensor,
    real_groups: torch.Tensor,
    tau: float,
    reduction: str = "mean",
) -> torch.Tensor:
    """CM: pull each synthetic feature toward the real features of its class whose captions resemble its own.

    loss = sum_c mean_{j in c} || phi(s_j) - z_j ||^2 with z_j from ``caption_matching_targets``
    (``caption_matching_distance`` for ``reduction``).
    """
    targets = caption_matching_targets(syn_captions, syn_groups, real_features, real_captions, real_groups, tau)
    return caption_matching_distance(syn_features, targets, syn_groups, reduction)


def blend(plain: torch.Tensor, masked: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 - w) * plain + w * masked: MFA and MGM mix the whole-image and object-only terms this way."""
    return (1.0 - weight) * plain + weight * masked
