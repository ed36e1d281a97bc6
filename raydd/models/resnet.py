"""CIFAR-style ResNet-18: a 3x3 stem without max-pool, so 28/32-px inputs keep enough resolution."""

from __future__ import annotations

import torch
from torch import nn

from raydd.models.base import FeatureClassifier
from raydd.models.layers import make_norm
from raydd.models.registry import preset, register_model

STAGE_CHANNELS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)
BLOCKS_PER_STAGE = 2


class BasicBlock(nn.Module):
    """Two 3x3 convolutions plus a shortcut; the shortcut is a 1x1 conv + norm when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = make_norm(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.norm2 = make_norm(norm, out_channels)
        self.relu = nn.ReLU()
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                make_norm(norm, out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(FeatureClassifier):
    """ResNet-18 (batch norm by default).

    ``feature_map`` is the globally pooled [B, 512, 1, 1] map so that ``embed`` stays its
    flattening; use ``trunk`` for the spatial [B, 512, h, w] map before pooling.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        norm: str = "batchnorm",
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, STAGE_CHANNELS[0], 3, stride=1, padding=1, bias=False),
            make_norm(norm, STAGE_CHANNELS[0]),
            nn.ReLU(),
        )
        stages: list[nn.Module] = []
        in_channels = STAGE_CHANNELS[0]
        for out_channels, stride in zip(STAGE_CHANNELS, STAGE_STRIDES):
            blocks = [BasicBlock(in_channels, out_channels, stride, norm)]
            blocks += [BasicBlock(out_channels, out_channels, 1, norm) for _ in range(BLOCKS_PER_STAGE - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = in_channels
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.trunk(x))


register_model("resnet18")(preset(ResNet18, norm="batchnorm"))
register_model("resnet18_bn")(preset(ResNet18, norm="batchnorm"))
