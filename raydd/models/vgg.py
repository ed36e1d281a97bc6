"""VGG-11 for 28/32-px images: five max-pools take 32 px down to a 1x1 map."""

from __future__ import annotations

import torch
from torch import nn

from raydd.models.base import FeatureClassifier
from raydd.models.layers import conv_output_side, first_conv_padding, frame_padding, make_norm, require_positive_map
from raydd.models.registry import preset, register_model

# Output channels of each 3x3 convolution; "M" is a 2x2 max-pool.
VGG11_LAYOUT = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(FeatureClassifier):
    """VGG-11 with a per-layer norm (instance norm by default, as in the DC benchmark)."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        norm: str = "instancenorm",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        height, width = image_size
        in_channels = channels
        for entry in VGG11_LAYOUT:
            if entry == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                height, width = height // 2, width // 2
                continue
            padding = first_conv_padding(image_size, base=1) if not layers else (1, 1)
            layers += [
                nn.Conv2d(in_channels, entry, kernel_size=3, padding=padding),
                make_norm(norm, entry),
                nn.ReLU(),
            ]
            height = conv_output_side(height, 3, padding[0])
            width = conv_output_side(width, 3, padding[1])
            in_channels = entry
        require_positive_map("vgg11", image_size, height, width)
        self.features = nn.Sequential(*layers)
        self.frame_padding = frame_padding(image_size)
        self.feature_dim = in_channels * height * width
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


register_model("vgg11")(VGG11)
register_model("vgg11_bn")(preset(VGG11, norm="batchnorm"))
