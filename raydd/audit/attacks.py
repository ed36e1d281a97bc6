"""Membership scores from a model's logits: the loss threshold attack and offline LiRA.

Pure functions of tensors; a higher score means "more likely a member".

- Loss threshold (Yeom et al. 2018): a model fits its training images better, so score = -CE loss.
- LiRA, offline variant (Carlini et al. 2022, "Membership Inference Attacks From First Principles"):
  some images are simply easy, so a low loss is weak evidence on its own. Shadow models trained
  without an image (OUT) show how confident a model is on it anyway; the target's confidence is scored
  by how far it lies above that OUT distribution, modelled as a Gaussian in the logit-scaled
  confidence phi = log(p_y / (1 - p_y)), where the per-example spread is close to normal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

VARIANCES = ("auto", "global", "per_example")
MIN_OUT_FOR_PER_EXAMPLE = 32  # below this, per-example std estimates are noisier than one pooled std


def loss_scores(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-CE of the true label: the loss threshold attack's score."""
    return -F.cross_entropy(logits.double(), labels, reduction="none")


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """phi = log(p_y / (1 - p_y)) = logit_y - logsumexp(other logits), computed without forming p_y.

    Forming p_y first saturates at 1.0 for confidently fitted images, which are exactly the
    interesting ones; the logit difference stays finite.
    """
    logits = logits.double()
    true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, labels.view(-1, 1), float("-inf")).logsumexp(dim=1)
    return true - others


def out_gaussian(shadow_phi: torch.Tensor, shadow_in: torch.Tensor, *, variance: str = "auto"
                 ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Mean and std of each example's phi over the shadows that did not train on it.

    ``shadow_phi``: [S, N]; ``shadow_in``: bool [S, N], True where shadow s saw example n.
    ``global`` pools one std over all examples (the within-example spread when any example has two OUT
    shadows, else the spread of all OUT values); ``auto`` picks per-example only when every example
    has at least ``MIN_OUT_FOR_PER_EXAMPLE`` OUT shadows. Returns (mean [N], std [N], variance used).
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown LiRA variance {variance!r}; use one of {', '.join(VARIANCES)}")
    phi = shadow_phi.double()
    out = (~shadow_in.bool()).double()
    count = out.sum(dim=0)
    if bool((count == 0).any()):
        raise ValueError(f"{int((count == 0).sum())} examples have no OUT shadow; use more shadows")
    mean = (phi * out).sum(dim=0) / count
    squares = ((phi - mean) ** 2 * out).sum(dim=0)
    if variance == "auto":
        variance = "per_example" if int(count.min()) >= MIN_OUT_FOR_PER_EXAMPLE else "global"
    if variance == "per_example":
        if int(count.min()) < 2:
            raise ValueError("per-example variance needs at least 2 OUT shadows per example")
        std = (squares / (count - 1)).sqrt()
    else:
        dof = float((count - 1).sum())
        if dof > 0:
            pooled = float(squares.sum()) / dof
        else:
            values = phi[out.bool()]
            pooled = float(values.var()) if values.numel() > 1 else 1.0
        std = torch.full_like(mean, max(pooled, 0.0) ** 0.5)
    return mean, std.clamp_min(1e-6), variance


def lira_offline_scores(target_phi: torch.Tensor, mean_out: torch.Tensor, std_out: torch.Tensor) -> torch.Tensor:
    """-log Pr[Z > phi_target], Z ~ N(mean_out, std_out^2): the one-sided offline LiRA test.

    Large when the target is more confident than models that never saw the example; ``log_ndtr``
    keeps the far tail (the strongest evidence) from rounding to log(0).
    """
    z = (target_phi.double() - mean_out) / std_out
    return -torch.special.log_ndtr(-z)
