"""ConvNet: the small conv-norm-act-pool stack that dataset-distillation papers report on."""

from __future__ import annotations

import torch
from torch import nn

from raydd.models.base import FeatureClassifier
from raydd.models.layers import (
    conv_output_side,
    first_conv_padding,
    frame_padding,
    make_activation,
    make_norm,
    make_pool,
    require_positive_map,
)
from raydd.models.registry import preset, register_model


class ConvNet(FeatureClassifier):
    """``depth`` blocks of Conv3x3 -> norm -> activation -> pool, then one linear layer.

    Defaults (width 128, depth 3, instance norm, ReLU, average pooling) reproduce the
    benchmark network, so parameter counts match published numbers.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        width: int = 128,
        depth: int = 3,
        norm: str = "instancenorm",
        activation: str = "relu",
        pooling: str = "avgpooling",
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        height, width_px = image_size
        in_channels = channels
        for index in range(depth):
            padding = first_conv_padding(image_size, base=1) if index == 0 else (1, 1)
            blocks += [
                nn.Conv2d(in_channels, width, kernel_size=3, padding=padding),
                make_norm(norm, width),
                make_activation(activation),
                make_pool(pooling),
            ]
            height = conv_output_side(height, 3, padding[0])
            width_px = conv_output_side(width_px, 3, padding[1])
            if pooling != "none":
                height, width_px = height // 2, width_px // 2
            in_channels = width
        require_positive_map("convnet", image_size, height, width_px)
        self.features = nn.Sequential(*blocks)
        self.frame_padding = frame_padding(image_size)
        self.feature_dim = width * height * width_px
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


register_model("convnet")(ConvNet)
register_model("convnet3")(preset(ConvNet, depth=3))
register_model("convnet4")(preset(ConvNet, depth=4))
register_model("convnet_bn")(preset(ConvNet, norm="batchnorm"))
