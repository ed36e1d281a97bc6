"""Caption concatenation: a classifier that reads [phi(x) ; g * LN(P t)].

The image trunk is any zoo model; P projects a caption embedding t (d -> projection_dim) and the read-out
sees both. The projected caption is layer-normalised (no affine terms) and scaled by a gain g: a
ConvNet-3 feature vector has norm ~26 while P t of a unit-norm caption embedding has norm ~0.35, so
without it the read-out's gradient on the caption half is ~80x smaller than on the image half and a
few hundred SGD steps never learn to read captions (measured: docs/results.md). LN(0) = 0, so with
t = 0 the caption half contributes nothing and the network must also work without captions: caption
dropout (training replaces captions by 0 with probability p) teaches it to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raydd.config import FusionConfig
from raydd.models.init import build_seeded


class CaptionFusion(nn.Module):
    def __init__(self, image_net: nn.Module, caption_dim: int, projection_dim: int, num_classes: int,
                 caption_gain: float = 1.0, caption_norm: str = "layer") -> None:
        super().__init__()
        # The image network's own read-out is replaced by the fused one (and must not sit unused
        # among the parameters whose gradients are matched).
        image_net.classifier = nn.Identity()
        self.image_net = image_net
        self.project = nn.Linear(caption_dim, projection_dim, bias=False)  # no bias: a zero caption adds nothing
        self.classifier = nn.Linear(image_net.feature_dim + projection_dim, num_classes)
        self.feature_dim = image_net.feature_dim
        self.caption_gain = float(caption_gain)
        if caption_norm not in ("layer", "none"):
            raise ValueError(f"caption_norm must be 'layer' or 'none', not {caption_norm!r}")
        self.caption_norm = caption_norm

    def caption_features(self, captions: torch.Tensor) -> torch.Tensor:
        """g * LN(P t): on the image features' scale; exactly 0 for a dropped (all-zero) caption."""
        projected = self.project(captions)
        if self.caption_norm == "layer":
            projected = F.layer_norm(projected, projected.shape[1:])
        return self.caption_gain * projected

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.image_net.embed(x)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.image_net.feature_map(x)

    def forward(self, x: torch.Tensor, captions: torch.Tensor | None = None) -> torch.Tensor:
        features = self.image_net.embed(x)
        if captions is None:
            captions = features.new_zeros(features.shape[0], self.project.in_features)
        return self.classifier(torch.cat([features, self.caption_features(captions)], dim=1))


def build_fused_seeded(name: str, seed: int, device: torch.device | str, *, caption_dim: int,
                       fusion: FusionConfig, channels: int, num_classes: int,
                       image_size: tuple[int, int]) -> CaptionFusion:
    """A fused network shaped by the ``fusion`` section, its every parameter drawn from ``seed`` (same on
    every worker)."""
    image_net = build_seeded(name, seed, "cpu", channels=channels, num_classes=num_classes, image_size=image_size)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed) ^ 0x5EED)
        fused = CaptionFusion(image_net, caption_dim, fusion.projection_dim, num_classes, fusion.caption_gain,
                              fusion.caption_norm)
    return fused.to(device)


def drop_captions(captions: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Replace each caption embedding by 0 with probability ``p`` (caption dropout)."""
    if p <= 0:
        return captions
    keep = torch.rand(captions.shape[0], generator=generator, device=generator.device) >= p
    return captions * keep.to(captions.dtype).unsqueeze(1).to(captions.device)
