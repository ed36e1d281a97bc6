"""AlexNet as cut down for 28/32-px images in the dataset-condensation benchmark."""

from __future__ import annotations

import torch
from torch import nn

from raydd.models.base import FeatureClassifier
from raydd.models.layers import conv_output_side, first_conv_padding, frame_padding, require_positive_map
from raydd.models.registry import register_model


@register_model("alexnet")
class AlexNet(FeatureClassifier):
    """Five convolutions (128-192-256-192-192) with three 2x2 max-pools, then one linear layer."""

    def __init__(self, channels: int, num_classes: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        first_padding = first_conv_padding(image_size, base=2)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 128, kernel_size=5, padding=first_padding),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(128, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(192, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 192, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(192, 192, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        # Only the first convolution changes the size; the others keep it, the pools halve it.
        height, width = (
            conv_output_side(side, 5, pad) // 8 for side, pad in zip(image_size, first_padding)
        )
        require_positive_map("alexnet", image_size, height, width)
        self.frame_padding = frame_padding(image_size)
        self.feature_dim = 192 * height * width
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
