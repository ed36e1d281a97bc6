"""The contract every network in the zoo keeps, so distillation code can treat them alike."""

from __future__ import annotations

import torch
from torch import nn


class FeatureClassifier(nn.Module):
    """A trunk producing a feature map, flattened into ``embed`` and read out by ``classifier``.

    Feature-matching methods need the features without the read-out, hence ``embed``;
    methods that match spatial statistics need them before flattening, hence ``feature_map``.
    Subclasses set ``self.classifier`` (an ``nn.Linear``) and ``self.feature_dim`` and
    implement ``feature_map``; ``embed(x) == feature_map(x).flatten(1)`` always holds.
    """

    classifier: nn.Linear
    feature_dim: int
    # Zeros the network adds around the input before its first layer keeps the size (rows, columns per
    # side): the feature map tiles the input padded by this much. 28-px inputs of the 32-px nets: (2, 2).
    frame_padding: tuple[int, int] = (0, 0)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
