"""Drawing one split: photographs, the per-sample plan of uniforms, rendering, simulated captions."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import ConfigError, DataError
from .spec import (
    ALPHA_FLOOR, BUILD_SEED, CANVAS, CONFUSABLE_SHARE, CONFUSIONS, CROP_FRACTION, GENERIC_NOUN, NOUNS,
    PALETTE, PHOTOGRAPHS, PLAN_COLUMNS, PLURAL_NOUNS, POSITION_PHRASES, SIZE_RANGE, SIZE_WORDS,
    SOURCE_NAME, SPLIT_CODES, TEMPLATES, TRAIN_REGION, _DRAWS,
)


# ----------------------------------------------------------------------------- photographs


@dataclass(frozen=True)
class Photograph:
    name: str
    phrase: str
    pixels: np.ndarray  # uint8 [H, W, 3]

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    def column_range(self, split: str) -> tuple[int, int]:
        """Columns [start, stop) background crops of ``split`` may use; the two splits' ranges touch, never overlap."""
        boundary = int(np.floor(TRAIN_REGION * self.width))
        return (0, boundary) if split == "train" else (boundary, self.width)


def load_photographs() -> list[Photograph]:
    """The photographs, RGB uint8 (greyscale ones replicated to three channels)."""
    try:
        import skimage.data
    except ImportError:
        raise ConfigError(f"{SOURCE_NAME} needs scikit-image (pip install 'raydd[multimodal]')") from None
    photos = []
    for name, phrase in PHOTOGRAPHS:
        try:
            pixels = np.asarray(getattr(skimage.data, name)())
        except Exception as error:  # pooch-only images raise ModuleNotFoundError/ValueError
            raise DataError(f"{SOURCE_NAME}: scikit-image photograph {name!r} did not load offline ({error})") from None
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        photos.append(Photograph(name, phrase, np.ascontiguousarray(pixels[:, :, :3].astype(np.uint8))))
    return photos


# ----------------------------------------------------------------------------- the plan


def draw_table(split: str, total: int) -> np.ndarray:
    """Uniforms [total, _DRAWS] for every object of the split; row i never depends on a limit."""
    generator = np.random.Generator(np.random.PCG64(np.random.SeedSequence([BUILD_SEED, SPLIT_CODES[split]])))
    return generator.random((total, _DRAWS))


def _pick(u: np.ndarray, count: np.ndarray | int) -> np.ndarray:
    """Uniform in [0, 1) -> integer in [0, count), clipped against float rounding at 1."""
    return np.minimum((u * count).astype(np.int64), np.asarray(count) - 1)


def make_plan(split: str, labels: np.ndarray, u: np.ndarray, photos: list[Photograph], q: float) -> np.ndarray:
    """Every random choice of every sample, as int32 [N, len(PLAN_COLUMNS)]."""
    n = len(labels)
    low, high = SIZE_RANGE
    colour = _pick(u[:, 0], len(PALETTE))
    size = low + _pick(u[:, 1], high - low + 1)
    x = _pick(u[:, 2], CANVAS - size + 1)
    y = _pick(u[:, 3], CANVAS - size + 1)
    photo = _pick(u[:, 4], len(photos))
    heights = np.array([p.height for p in photos])[photo]
    shorter = np.array([min(p.height, p.width) for p in photos])[photo]
    starts, stops = (np.array([p.column_range(split)[k] for p in photos])[photo] for k in (0, 1))
    side = np.maximum(8, np.floor((CROP_FRACTION[0] + u[:, 5] * (CROP_FRACTION[1] - CROP_FRACTION[0])) * shorter)).astype(np.int64)
    side = np.minimum(side, np.minimum(stops - starts, heights))  # never needed with the constants above; a guard
    crop_x = starts + _pick(u[:, 6], stops - starts - side + 1)
    crop_y = _pick(u[:, 7], heights - side + 1)
    noun = np.where(u[:, 8] < q, labels, -1)
    wrong = np.flatnonzero(u[:, 8] >= q)
    for i in wrong[u[wrong, 9] < CONFUSABLE_SHARE]:
        options = CONFUSIONS[int(labels[i])]
        noun[i] = options[int(_pick(u[i, 10], len(options)))]
    template = _pick(u[:, 11], len(TEMPLATES))
    columns = (labels, colour, size, x, y, photo, crop_x, crop_y, side, noun, template)
    plan = np.stack([np.asarray(c, dtype=np.int64) for c in columns], axis=1).astype(np.int32)
    assert plan.shape == (n, len(PLAN_COLUMNS))
    return plan


def column(plan: np.ndarray, name: str) -> np.ndarray:
    return plan[:, PLAN_COLUMNS.index(name)]


# ----------------------------------------------------------------------------- rendering


def render_backgrounds(plan: np.ndarray, photos: list[Photograph]) -> np.ndarray:
    """uint8 [N, 32, 32, 3]: each sample's photograph crop, area-resampled to the canvas."""
    import cv2

    out = np.empty((len(plan), CANVAS, CANVAS, 3), dtype=np.uint8)
    for i, (p, cx, cy, side) in enumerate(plan[:, [PLAN_COLUMNS.index(c) for c in ("photo", "crop_x", "crop_y", "crop_side")]]):
        crop = photos[p].pixels[cy : cy + side, cx : cx + side]
        out[i] = cv2.resize(crop, (CANVAS, CANVAS), interpolation=cv2.INTER_AREA)
    return out


def render_alpha(objects: np.ndarray, plan: np.ndarray) -> np.ndarray:
    """float32 [N, 32, 32]: each object scaled to its size, alpha-normalised, placed at (x, y)."""
    alpha = np.zeros((len(plan), CANVAS, CANVAS), dtype=np.float32)
    sizes, xs, ys = column(plan, "size"), column(plan, "x"), column(plan, "y")
    for size in np.unique(sizes):
        index = np.flatnonzero(sizes == size)
        source = torch.from_numpy(objects[index]).float()[:, None]
        scaled = F.interpolate(source, size=(int(size), int(size)), mode="bilinear", align_corners=False, antialias=True)
        scaled = scaled[:, 0].clamp_min(0).numpy()
        peak = scaled.reshape(len(index), -1).max(axis=1)[:, None, None]
        normalised = np.where(peak > 0, scaled / np.maximum(peak, 1e-6), 0.0)
        normalised = np.where(normalised > ALPHA_FLOOR, normalised, 0.0).astype(np.float32)
        offsets = np.arange(size)
        rows = ys[index][:, None, None] + offsets[None, :, None]
        cols = xs[index][:, None, None] + offsets[None, None, :]
        alpha[index[:, None, None], rows, cols] = normalised
    return alpha


def composite(alpha: np.ndarray, backgrounds: np.ndarray, colours: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """uint8 [N, 32, 32, 3] = alpha * tint + (1 - alpha) * background, exactly background where alpha = 0."""
    tints = np.array([rgb for _, rgb in PALETTE], dtype=np.float32)[colours]
    out = np.empty_like(backgrounds)
    for start in range(0, len(alpha), chunk):
        a = alpha[start : start + chunk, :, :, None]
        bg = backgrounds[start : start + chunk].astype(np.float32)
        mixed = a * tints[start : start + chunk, None, None, :] + (1.0 - a) * bg
        out[start : start + chunk] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out


# ----------------------------------------------------------------------------- captions


def _size_word(size: int) -> str:
    low, high = SIZE_RANGE
    third = (high - low) / 3.0
    return SIZE_WORDS[min(2, int((size - low) / third))] if third > 0 else SIZE_WORDS[1]


def position_phrase(x: int, y: int, size: int) -> str:
    """Grid cell (3x3) of the object's box centre."""
    cell = CANVAS / 3.0
    row = min(2, int((y + size / 2.0) / cell))
    col = min(2, int((x + size / 2.0) / cell))
    return POSITION_PHRASES[row][col]


def caption_for(row: np.ndarray, photos: list[Photograph]) -> str:
    values = dict(zip(PLAN_COLUMNS, (int(v) for v in row)))
    noun = GENERIC_NOUN if values["noun"] < 0 else NOUNS[values["noun"]]
    described = f"{_size_word(values['size'])} {PALETTE[values['colour']][0]} {noun}"
    obj = f"a pair of {described}" if noun in PLURAL_NOUNS else f"a {described}"
    text = TEMPLATES[values["template"]].format(
        obj=obj, pos=position_phrase(values["x"], values["y"], values["size"]), bg=photos[values["photo"]].phrase
    )
    return re.sub(r"\ba (?=[aeiou])", "an ", text)
