"""Differentiable Siamese augmentation (DSA; Zhao & Bilen, ICML 2021).

Distillation compares real and synthetic batches through a network; augmenting both with
the *same* random transform per class (Siamese) keeps the comparison fair, and keeping
every transform differentiable lets the gradient reach the synthetic pixels.

The randomness is split from the arithmetic: ``DSA.draw`` samples one family and a set of
parameters per group from an explicit ``torch.Generator``; ``DSA.apply`` gathers each
sample's parameters through ``groups`` and transforms the whole batch in one vectorised
pass, so one draw can be applied to the real and to the synthetic batch.

Keys of ``AugDraw.values`` per family (each tensor has ``n_groups`` as its leading dim):

* ``color``: ``brightness`` (added offset), ``saturation`` and ``contrast`` (factors)
* ``crop``: ``shift_y``, ``shift_x`` (int64; output pixel ``i`` takes input pixel ``i - shift``)
* ``cutout``: ``center_y``, ``center_x`` (int64; the centre of the zeroed square)
* ``flip``: ``flip`` (bool; mirror left-right)
* ``scale``: ``scale_x``, ``scale_y`` (sampling-grid factors)
* ``rotate``: ``angle`` (radians)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from raydd.errors import ConfigError

FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")
GEOMETRIC_FAMILIES = frozenset({"crop", "flip", "scale", "rotate"})
IDENTITY = "none"
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"


@dataclass(frozen=True)
class DSAParams:
    """Ranges of the random transforms; the defaults are those of the DSA paper's code."""

    scale_ratio: float = 1.2  # scale factors uniform in [1/ratio, ratio], x and y independently
    rotate_degrees: float = 15.0  # angle uniform in [-deg, +deg]
    crop_ratio: float = 0.125  # integer shift up to +-round(ratio * side) pixels
    cutout_ratio: float = 0.5  # square side int(ratio * side + 0.5)
    flip_probability: float = 0.5
    brightness: float = 1.0  # offset (uniform(0,1) - 0.5) * brightness
    saturation: float = 2.0  # factor uniform(0,1) * saturation
    contrast: float = 0.5  # factor uniform(0,1) + contrast

    def __post_init__(self) -> None:
        if self.scale_ratio < 1.0:
            raise ConfigError(f"DSA scale_ratio must be >= 1, got {self.scale_ratio}")
        if not 0.0 <= self.flip_probability <= 1.0:
            raise ConfigError(f"DSA flip_probability must be in [0, 1], got {self.flip_probability}")
        for name in ("rotate_degrees", "crop_ratio", "cutout_ratio", "brightness", "saturation", "contrast"):
            if getattr(self, name) < 0:
                raise ConfigError(f"DSA {name} must be >= 0, got {getattr(self, name)}")


@dataclass
class AugDraw:
    """One random transform family with its parameters for each of ``n_groups`` groups."""

    family: str
    values: dict[str, torch.Tensor]


class DSA:
    """Chooses one augmentation family per call and applies it per group, differentiably."""

    def __init__(self, strategy: str = DEFAULT_STRATEGY, params: DSAParams = DSAParams(), flip: bool = True) -> None:
        self.families = parse_strategy(strategy, flip=flip)
        self.params = params

    def __repr__(self) -> str:
        return f"DSA(families={self.families}, params={self.params})"

    def draw(self, n_groups: int, image_size: tuple[int, int], generator: torch.Generator) -> AugDraw:
        """Pick a family uniformly, then its parameters for each group (tensors on ``generator.device``)."""
        if n_groups < 1:
            raise ValueError(f"n_groups must be >= 1, got {n_groups}")
        if not self.families:
            return AugDraw(IDENTITY, {})
        pick = torch.randint(len(self.families), (1,), generator=generator, device=generator.device)
        family = self.families[int(pick.item())]
        height, width = (int(side) for side in image_size)
        values = _SAMPLERS[family](n_groups, (height, width), self.params, generator)
        return AugDraw(family, values)

    def apply(
        self,
        x: torch.Tensor,
        draw: AugDraw,
        groups: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Transform each sample with its group's parameters; masks follow geometric families only."""
        if x.dim() != 4:
            raise ValueError(f"DSA expects images [B, C, H, W], got shape {tuple(x.shape)}")
        if draw.family == IDENTITY:
            return x if masks is None else (x, masks)
        transform = _TRANSFORMS.get(draw.family)
        if transform is None:
            raise ConfigError(f"unknown DSA family {draw.family!r}; known: {', '.join(FAMILIES)}")
        per_sample = _gather_per_sample(draw.values, groups, x)
        augmented = transform(x, per_sample, self.params)
        if masks is None:
            return augmented
        if draw.family in GEOMETRIC_FAMILIES:
            masks = transform(masks, per_sample, self.params)
        return augmented, masks

    def __call__(
        self,
        x: torch.Tensor,
        generator: torch.Generator,
        masks: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Training-time use: one family per call, independent parameters for every sample."""
        batch = x.shape[0]
        draw = self.draw(batch, (x.shape[-2], x.shape[-1]), generator)
        groups = torch.arange(batch, device=x.device)
        return self.apply(x, draw, groups=groups, masks=masks)


def parse_strategy(strategy: str | None, *, flip: bool = True) -> tuple[str, ...]:
    """Split ``"color_crop_..."`` into family names; ``""``/``"none"`` mean no augmentation."""
    text = (strategy or "").strip().lower()
    if text in ("", IDENTITY):
        return ()
    names = tuple(text.split("_"))
    unknown = [name for name in names if name not in FAMILIES]
    if unknown:
        raise ConfigError(
            f"unknown DSA family {', '.join(map(repr, unknown))} in strategy {strategy!r}; "
            f"known families: {', '.join(FAMILIES)} (or 'none')"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"DSA strategy {strategy!r} names a family twice")
    if not flip:
        names = tuple(name for name in names if name != "flip")
    return names


def _gather_per_sample(
    values: dict[str, torch.Tensor], groups: torch.Tensor | None, x: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Index every group-level parameter by each sample's group: one gather, no loop."""
    batch = x.shape[0]
    if groups is None:
        groups = torch.zeros(batch, dtype=torch.long, device=x.device)
    groups = groups.to(device=x.device, dtype=torch.long)
    if groups.shape != (batch,):
        raise ValueError(f"groups must have shape ({batch},), got {tuple(groups.shape)}")
    return {key: value.to(x.device)[groups] for key, value in values.items()}


# --- sampling: group-level parameters -------------------------------------------------------

def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device) * (high - low) + low


def _randint(n: int, low: int, high_inclusive: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(low, high_inclusive + 1, (n,), generator=generator, device=generator.device)


def max_crop_shift(side: int, params: DSAParams) -> int:
    """Largest shift in pixels, rounding half up as the reference code does."""
    return int(side * params.crop_ratio + 0.5)


def cutout_side(side: int, params: DSAParams) -> int:
    return int(side * params.cutout_ratio + 0.5)


def _sample_color(n: int, size: tuple[int, int], p: DSAParams, g: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "brightness": (_uniform(n, 0.0, 1.0, g) - 0.5) * p.brightness,
        "saturation": _uniform(n, 0.0, 1.0, g) * p.saturation,
        "contrast": _uniform(n, 0.0, 1.0, g) + p.contrast,
    }


def _sample_crop(n: int, size: tuple[int, int], p: DSAParams, g: torch.Generator) -> dict[str, torch.Tensor]:
    limit_y, limit_x = (max_crop_shift(side, p) for side in size)
    return {"shift_y": _randint(n, -limit_y, limit_y, g), "shift_x": _randint(n, -limit_x, limit_x, g)}


def _sample_cutout(n: int, size: tuple[int, int], p: DSAParams, g: torch.Generator) -> dict[str, torch.Tensor]:
    # An even-sided square has no central pixel, so its "centre" may also sit one past the last row.
    height, width = size
    side_y, side_x = cutout_side(height, p), cutout_side(width, p)
    return {
        "center_y": _randint(n, 0, height - side_y % 2, g),
        "center_x": _randint(n, 0, width - side_x % 2, g),
    }


def _sample_flip(n: int, size: tuple[int, int], p: DSAParams, g: torch.Generator) -> dict[str, torch.Tensor]:
    return {"flip": _uniform(n, 0.0, 1.0, g) < p.flip_probability}


def _sample_scale(n: int, size: tuple[int, int], p: DSAParams, g: torch.Generator) -> dict[str, torch.Tensor]:
    low, high = 1.0 / p.scale_ratio, p.scale_ratio
    return {"scale_x": _uniform(n, low, high, g), "scale_y": _uniform(n, low, high, g)}


def _sample_rotate(n: int, size: tuple[int, int], p: DSAParams, g: torch.Generator) -> dict[str, torch.Tensor]:
    limit = math.radians(p.rotate_degrees)
    return {"angle": _uniform(n, -limit, limit, g)}


Sampler = Callable[[int, tuple[int, int], DSAParams, torch.Generator], dict[str, torch.Tensor]]
_SAMPLERS: dict[str, Sampler] = {
    "color": _sample_color,
    "crop": _sample_crop,
    "cutout": _sample_cutout,
    "flip": _sample_flip,
    "scale": _sample_scale,
    "rotate": _sample_rotate,
}


# --- transforms: per-sample parameters, whole batch at once --------------------------------

def _per_image(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A [B] parameter as [B, 1, 1, 1] in the images' dtype, ready to broadcast."""
    return value.to(x.dtype).view(-1, 1, 1, 1)


def _color(x: torch.Tensor, v: dict[str, torch.Tensor], p: DSAParams) -> torch.Tensor:
    x = x + _per_image(v["brightness"], x)
    channel_mean = x.mean(dim=1, keepdim=True)
    x = (x - channel_mean) * _per_image(v["saturation"], x) + channel_mean
    image_mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - image_mean) * _per_image(v["contrast"], x) + image_mean


def _crop(x: torch.Tensor, v: dict[str, torch.Tensor], p: DSAParams) -> torch.Tensor:
    """Integer translation with zero fill: a gather along rows, then along columns."""
    batch, channels, height, width = x.shape
    source_rows = torch.arange(height, device=x.device) - v["shift_y"][:, None]  # [B, H]
    source_cols = torch.arange(width, device=x.device) - v["shift_x"][:, None]  # [B, W]
    rows_inside = (source_rows >= 0) & (source_rows < height)
    cols_inside = (source_cols >= 0) & (source_cols < width)
    row_index = source_rows.clamp(0, height - 1)[:, None, :, None].expand(batch, channels, height, width)
    col_index = source_cols.clamp(0, width - 1)[:, None, None, :].expand(batch, channels, height, width)
    shifted = torch.gather(torch.gather(x, 2, row_index), 3, col_index)
    inside = (rows_inside[:, :, None] & cols_inside[:, None, :])[:, None]
    return torch.where(inside, shifted, torch.zeros((), dtype=x.dtype, device=x.device))


def _cutout(x: torch.Tensor, v: dict[str, torch.Tensor], p: DSAParams) -> torch.Tensor:
    _, _, height, width = x.shape
    side_y, side_x = cutout_side(height, p), cutout_side(width, p)
    top = (v["center_y"] - side_y // 2)[:, None]
    left = (v["center_x"] - side_x // 2)[:, None]
    rows = torch.arange(height, device=x.device)
    cols = torch.arange(width, device=x.device)
    in_rows = (rows >= top) & (rows < top + side_y)  # [B, H]
    in_cols = (cols >= left) & (cols < left + side_x)  # [B, W]
    hole = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
    return torch.where(hole, torch.zeros((), dtype=x.dtype, device=x.device), x)


def _flip(x: torch.Tensor, v: dict[str, torch.Tensor], p: DSAParams) -> torch.Tensor:
    return torch.where(v["flip"].view(-1, 1, 1, 1), x.flip(3), x)


def _resample(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling under a per-sample affine map, zeros outside the image."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _affine_rows(first: list[torch.Tensor], second: list[torch.Tensor]) -> torch.Tensor:
    """Stack per-sample entries into [B, 2, 3] affine matrices."""
    return torch.stack([torch.stack(first, dim=-1), torch.stack(second, dim=-1)], dim=1)


def _scale(x: torch.Tensor, v: dict[str, torch.Tensor], p: DSAParams) -> torch.Tensor:
    sx, sy = v["scale_x"], v["scale_y"]
    zero = torch.zeros_like(sx)
    return _resample(x, _affine_rows([sx, zero, zero], [zero, sy, zero]))


def _rotate(x: torch.Tensor, v: dict[str, torch.Tensor], p: DSAParams) -> torch.Tensor:
    cos, sin = torch.cos(v["angle"]), torch.sin(v["angle"])
    zero = torch.zeros_like(cos)
    return _resample(x, _affine_rows([cos, sin, zero], [-sin, cos, zero]))


Transform = Callable[[torch.Tensor, dict[str, torch.Tensor], DSAParams], torch.Tensor]
_TRANSFORMS: dict[str, Transform] = {
    "color": _color,
    "crop": _crop,
    "cutout": _cutout,
    "flip": _flip,
    "scale": _scale,
    "rotate": _rotate,
}
