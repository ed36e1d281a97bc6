"""Norm, activation and pooling layers chosen by name, shared by the convolutional models."""

from __future__ import annotations

from torch import nn

from raydd.errors import ConfigError

NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
ACTIVATIONS = ("relu", "leakyrelu", "sigmoid")
POOLINGS = ("avgpooling", "maxpooling", "none")


def make_norm(kind: str, channels: int) -> nn.Module:
    """Instance and layer norm are GroupNorm with one channel / all channels per group, as in the DC code."""
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels, affine=True)
    if kind == "layernorm":
        return nn.GroupNorm(1, channels, affine=True)
    if kind == "groupnorm":
        return nn.GroupNorm(4, channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


def make_activation(kind: str) -> nn.Module:
    if kind == "relu":
        return nn.ReLU()
    if kind == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.01)
    if kind == "sigmoid":
        return nn.Sigmoid()
    raise ConfigError(f"unknown activation {kind!r}; choose one of {', '.join(ACTIVATIONS)}")


def make_pool(kind: str) -> nn.Module:
    if kind == "avgpooling":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    if kind == "maxpooling":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"unknown pooling {kind!r}; choose one of {', '.join(POOLINGS)}")


def frame_padding(image_size: tuple[int, int]) -> tuple[int, int]:
    """Zero rows/columns the first convolution adds on each side beyond its size-keeping padding: 2 for a
    28-px side, so 28-px digits flow through a net sized for 32 px. The feature map then tiles the input
    padded by this much (what a mask must be padded by to line up with it)."""
    height, width = image_size
    return tuple(2 if side == 28 else 0 for side in (height, width))  # type: ignore[return-value]


def first_conv_padding(image_size: tuple[int, int], base: int) -> tuple[int, int]:
    """``base`` (the padding that keeps the size) plus ``frame_padding``."""
    return tuple(base + extra for extra in frame_padding(image_size))  # type: ignore[return-value]


def conv_output_side(side: int, kernel: int, padding: int) -> int:
    """Spatial size after a stride-1 convolution."""
    return side + 2 * padding - kernel + 1


def require_positive_map(name: str, image_size: tuple[int, int], height: int, width: int) -> None:
    """Fail early, with the culprit named, when an image is too small for the chosen depth."""
    if height < 1 or width < 1:
        raise ConfigError(
            f"model {name!r}: image_size {image_size} is too small; the feature map would be {height}x{width}"
        )
