"""cluttered-fashion-mnist: a controlled testbed where clutter and caption semantics exist.

Every image is 32x32 RGB: one real Fashion-MNIST object (train objects for train, test objects
for test; sample i uses object i of its split, so labels are the objects' labels), tinted with a
palette colour, scaled to 14-24 px and placed fully inside the canvas at a random position, over
a random square crop of one of the photographs scikit-image ships. Backgrounds of train images
come from the left 70% of each photograph's width, those of test images from the right 30%, so
no test background pixel was ever seen in training.

Compositing uses the object's own alpha: its intensity divided by its brightest pixel, set to 0
at or below 15%. The mask is exactly the pixels with alpha > 0, and outside the mask the image
equals the background crop.

The captions are SIMULATED, not written by a model or a person. The simulated captioner names the
true tint colour, size word (small/medium-sized/large by thirds of the size range), position
(3x3 grid cell of the object's box centre) and background, and the garment noun, which is right
with probability q (default 0.7). Otherwise, 3 times in 4 it is a confusable noun from a fixed
map (shirt <-> t-shirt/pullover/coat, sneaker <-> sandal/ankle boot, ...), else the generic word
"item" -- the way a small captioning model errs on low-resolution images. Five sentence templates.

Determinism: per split, one fixed-seed generator draws a table of uniforms for *all* objects of
the split; sample i reads row i, so it is the same whatever the limit. Options the registry's
request cannot carry come from the environment: ``RAYDD_CLUTTERED_Q`` (caption accuracy q) and
``RAYDD_CLUTTERED_LIMIT`` ("N" = at most N images per split, "N,M" = N train and M test), or
from ``load_cluttered(request, ClutteredOptions(...))`` in Python.

Cache: ``$XDG_CACHE_HOME/raydd/cluttered-fashion-mnist/v<version>-<hash of every parameter>/``
holding ``.npy`` arrays (loaded with ``allow_pickle=False``), ``captions.json`` and ``meta.json``,
built in a temporary directory and renamed into place.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import textwrap
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from .base import DatasetSplits, ImageData
from .locate import user_cache_dir
from .registry import SourceRequest, get_source, register_source
from .resize import resize_images
from .splits import carve_validation
from .stats import channel_mean_std

SOURCE_NAME = "cluttered-fashion-mnist"
OBJECT_SOURCE = "fashion-mnist"
VERSION = 1
ENV_CAPTION_ACCURACY = "RAYDD_CLUTTERED_Q"
ENV_LIMIT = "RAYDD_CLUTTERED_LIMIT"

CANVAS = 32
SIZE_RANGE = (14, 24)  # object side in pixels, inclusive
SIZE_WORDS = ("small", "medium-sized", "large")  # thirds of SIZE_RANGE
ALPHA_FLOOR = 0.15  # alpha at or below this fraction of the object's brightest pixel is 0
CROP_FRACTION = (0.1, 0.3)  # crop side as a fraction of the photograph's shorter side
TRAIN_REGION = 0.7  # train crops lie in columns [0, 0.7 W), test crops in [0.7 W, W)
DEFAULT_CAPTION_ACCURACY = 0.7
CONFUSABLE_SHARE = 0.75  # of wrong nouns: confusable noun; the rest say "item"
GENERIC_NOUN = "item"
BUILD_SEED = 20240917
SPLIT_CODES = {"train": 0, "test": 1}

PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (225, 35, 35)),
    ("green", (40, 185, 60)),
    ("blue", (45, 85, 235)),
    ("yellow", (240, 220, 40)),
    ("orange", (245, 135, 25)),
    ("purple", (150, 55, 205)),
    ("white", (245, 245, 245)),
    ("cyan", (35, 210, 225)),
)

# (skimage.data function, how the simulated captioner names it). Only real photographs that
# ship inside the scikit-image wheel (no pooch download).
PHOTOGRAPHS: tuple[tuple[str, str], ...] = (
    ("astronaut", "an astronaut"),
    ("brick", "a brick wall"),
    ("camera", "a cameraman"),
    ("chelsea", "a cat"),
    ("coffee", "a coffee cup"),
    ("coins", "old coins"),
    ("grass", "grass"),
    ("gravel", "gravel"),
    ("hubble_deep_field", "deep space"),
    ("immunohistochemistry", "a tissue sample"),
    ("moon", "the moon's surface"),
    ("page", "a printed page"),
    ("rocket", "a rocket launch"),
    ("text", "street text"),
)

# Caption noun of each Fashion-MNIST class (same order as its class names), and what a weak
# captioner mistakes it for.
NOUNS = ("t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
PLURAL_NOUNS = frozenset({"trousers"})
CONFUSIONS: dict[int, tuple[int, ...]] = {
    0: (6, 2),  # t-shirt -> shirt, pullover
    1: (3,),  # trousers -> dress
    2: (4, 6, 0),  # pullover -> coat, shirt, t-shirt
    3: (4, 6, 0),  # dress -> coat, shirt, t-shirt
    4: (2, 6, 3),  # coat -> pullover, shirt, dress
    5: (7, 9),  # sandal -> sneaker, ankle boot
    6: (0, 2, 4),  # shirt -> t-shirt, pullover, coat
    7: (5, 9),  # sneaker -> sandal, ankle boot
    8: (2, 6),  # bag -> pullover, shirt (boxy silhouettes)
    9: (7, 5),  # ankle boot -> sneaker, sandal
}
POSITION_PHRASES = (
    ("in the top-left corner", "at the top", "in the top-right corner"),
    ("on the left", "in the centre", "on the right"),
    ("in the bottom-left corner", "at the bottom", "in the bottom-right corner"),
)
TEMPLATES = (
    "{obj} {pos}, {bg} in the background",
    "a photo of {obj} {pos} with {bg} behind it",
    "{bg} behind {obj} {pos}",
    "{obj} {pos} over {bg}",
    "there is {obj} {pos} in front of {bg}",
)

# Columns of the per-sample plan, one int32 row per image: everything that was drawn.
PLAN_COLUMNS = ("label", "colour", "size", "x", "y", "photo", "crop_x", "crop_y", "crop_side", "noun", "template")
_DRAWS = 12  # uniforms per sample (fixed: adding a use must not shift the others)


@dataclass(frozen=True)
class ClutteredOptions:
    """What the generic SourceRequest cannot carry. ``None`` limits mean the whole split."""

    caption_accuracy: float = DEFAULT_CAPTION_ACCURACY
    train_limit: int | None = None
    test_limit: int | None = None

    def __post_init__(self) -> None:
        q = self.caption_accuracy
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= q <= 1.0:
            raise ConfigError(f"caption_accuracy must be a number in [0, 1], got {q!r}")
        for name in ("train_limit", "test_limit"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer or None, got {value!r}")

    def limit_for(self, split: str) -> int | None:
        return self.train_limit if split == "train" else self.test_limit


def options_from_env() -> ClutteredOptions:
    """Read ``$RAYDD_CLUTTERED_Q`` and ``$RAYDD_CLUTTERED_LIMIT`` (both optional)."""
    q_text = os.environ.get(ENV_CAPTION_ACCURACY, "").strip()
    limit_text = os.environ.get(ENV_LIMIT, "").strip()
    try:
        q = float(q_text) if q_text else DEFAULT_CAPTION_ACCURACY
    except ValueError:
        raise ConfigError(f"${ENV_CAPTION_ACCURACY} must be a number in [0, 1], got {q_text!r}") from None
    limits: list[int | None] = [None, None]
    if limit_text:
        parts = [p.strip() for p in limit_text.split(",")]
        if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ConfigError(f"${ENV_LIMIT} must be 'N' or 'N_TRAIN,N_TEST' (positive integers), got {limit_text!r}")
        limits = [int(parts[0]), int(parts[-1])]
    try:
        return ClutteredOptions(q, limits[0], limits[1])
    except ConfigError as error:
        raise ConfigError(f"${ENV_CAPTION_ACCURACY}: {error}") from None


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


# ----------------------------------------------------------------------------- building


@dataclass
class BuiltSplit:
    images: np.ndarray  # uint8 [N, 3, 32, 32]
    masks: np.ndarray  # uint8 [N, 1, 32, 32]
    labels: np.ndarray  # int64 [N]
    plan: np.ndarray  # int32 [N, len(PLAN_COLUMNS)]
    captions: list[str]


def build_split(
    split: str, objects: np.ndarray, labels: np.ndarray, photos: list[Photograph], options: ClutteredOptions
) -> BuiltSplit:
    """Render the first ``limit`` samples of a split from its Fashion-MNIST ``objects`` [N, 28, 28]."""
    limit = options.limit_for(split)
    count = len(labels) if limit is None else min(limit, len(labels))
    u = draw_table(split, len(labels))[:count]
    labels = labels[:count].astype(np.int64)
    plan = make_plan(split, labels, u, photos, options.caption_accuracy)
    alpha = render_alpha(objects[:count], plan)
    pixels = composite(alpha, render_backgrounds(plan, photos), column(plan, "colour"))
    return BuiltSplit(
        images=np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)),
        masks=(alpha > 0).astype(np.uint8)[:, None],
        labels=labels,
        plan=plan,
        captions=[caption_for(row, photos) for row in plan],
    )


def build_parameters(options: ClutteredOptions) -> dict:
    """Everything the pixels and captions depend on; its hash names the cache directory."""
    return {
        "version": VERSION,
        "options": asdict(options),
        "seed": BUILD_SEED,
        "canvas": CANVAS,
        "size_range": SIZE_RANGE,
        "alpha_floor": ALPHA_FLOOR,
        "crop_fraction": CROP_FRACTION,
        "train_region": TRAIN_REGION,
        "confusable_share": CONFUSABLE_SHARE,
        "palette": PALETTE,
        "photographs": PHOTOGRAPHS,
        "nouns": NOUNS,
        "confusions": {str(k): v for k, v in CONFUSIONS.items()},
        "positions": POSITION_PHRASES,
        "templates": TEMPLATES,
    }


def cache_dir_for(options: ClutteredOptions) -> Path:
    text = json.dumps(build_parameters(options), sort_keys=True)
    return user_cache_dir(SOURCE_NAME) / f"v{VERSION}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _objects(request: SourceRequest) -> DatasetSplits:
    loader = get_source(OBJECT_SOURCE)
    if loader is None:
        raise DataError(f"{SOURCE_NAME} needs the {OBJECT_SOURCE} source, which is not registered")
    return loader(replace(request, val_fraction=0.0, image_size=None, require_captions=False))


def _write_cache(
    directory: Path, built: dict[str, BuiltSplit], class_names: list[str], options: ClutteredOptions, seconds: float
) -> None:
    """Write into a hidden sibling directory, then rename: readers see all files or none."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    temp = directory.with_name(f".{directory.name}.{uuid.uuid4().hex[:8]}.tmp")
    temp.mkdir()
    try:
        for split, data in built.items():
            for field in ("images", "masks", "labels", "plan"):
                np.save(temp / f"{split}_{field}.npy", getattr(data, field), allow_pickle=False)
        (temp / "captions.json").write_text(json.dumps({s: b.captions for s, b in built.items()}))
        mean, std = channel_mean_std(torch.from_numpy(built["train"].images))
        meta = {
            "source": SOURCE_NAME,
            "parameters": build_parameters(options),
            "plan_columns": PLAN_COLUMNS,
            "counts": {s: len(b.labels) for s, b in built.items()},
            "class_names": class_names,
            "mean": mean,
            "std": std,
            "build_seconds": round(seconds, 2),
        }
        (temp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(temp, directory)
        except OSError:
            if not (directory / "meta.json").is_file():  # not a concurrent builder's finished copy
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def build_cache(request: SourceRequest, options: ClutteredOptions) -> Path:
    """Build both splits into the cache unless already there; return the cache directory."""
    directory = cache_dir_for(options)
    if (directory / "meta.json").is_file():
        return directory
    started = time.perf_counter()
    source = _objects(request)
    photos = load_photographs()
    built = {
        split: build_split(split, data.images[:, 0].numpy(), data.labels.numpy(), photos, options)
        for split, data in (("train", source.train), ("test", source.test))
    }
    _write_cache(directory, built, list(source.class_names), options, time.perf_counter() - started)
    return directory


def read_split(directory: Path, split: str) -> dict[str, np.ndarray]:
    """The arrays of one cached split; ``allow_pickle=False`` so a tampered cache cannot run code."""
    try:
        return {f: np.load(directory / f"{split}_{f}.npy", allow_pickle=False) for f in ("images", "masks", "labels", "plan")}
    except (OSError, ValueError) as error:
        raise DataError(f"{SOURCE_NAME}: cache {directory} is damaged ({error}); delete it to rebuild") from None


def _image_data(directory: Path, split: str, meta: dict, captions: list[str], request: SourceRequest) -> ImageData:
    arrays = read_split(directory, split)
    images, masks = torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["masks"])
    if request.image_size is not None and request.image_size != CANVAS:
        images = resize_images(images, request.image_size)
        masks = F.interpolate(masks.float(), size=(request.image_size,) * 2, mode="nearest").to(torch.uint8)
    return ImageData(
        images=images,
        labels=torch.from_numpy(arrays["labels"]).to(torch.int64),
        ids=[f"{SOURCE_NAME}/{split}/{i:05d}" for i in range(len(arrays["labels"]))],
        class_names=list(meta["class_names"]),
        captions=list(captions),
        masks=masks,
    )


def load_cluttered(request: SourceRequest, options: ClutteredOptions | None = None) -> DatasetSplits:
    """Build (first time) or read the cached testbed, then carve validation from train.

    ``request.root`` locates the Fashion-MNIST files; ``mask_threshold`` does not apply (masks
    are exact). ``mean``/``std`` are those of the whole built train split, validation included,
    like the fixed constants of fashion-mnist.
    """
    options = options if options is not None else ClutteredOptions()
    directory = build_cache(request, options)
    try:
        meta = json.loads((directory / "meta.json").read_text())
        captions = json.loads((directory / "captions.json").read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{SOURCE_NAME}: cache {directory} is damaged ({error}); delete it to rebuild") from None
    full_train = _image_data(directory, "train", meta, captions["train"], request)
    test = _image_data(directory, "test", meta, captions["test"], request)
    train, val = carve_validation(full_train, request.val_fraction, request.seed)
    return DatasetSplits(
        name=SOURCE_NAME,
        train=train,
        val=val,
        test=test,
        class_names=list(meta["class_names"]),
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        flip_ok=True,
    )


@register_source(SOURCE_NAME)
def load_cluttered_from_env(request: SourceRequest) -> DatasetSplits:
    """The registered loader: options from ``$RAYDD_CLUTTERED_Q`` / ``$RAYDD_CLUTTERED_LIMIT``."""
    return load_cluttered(request, options_from_env())


# ----------------------------------------------------------------------------- looking at it


def show_data_grid(splits: DatasetSplits, n_per_class: int, path: str) -> str:
    """PNG of the first ``n_per_class`` train images of each class, with the outline of each mask
    and the caption under each image; works for any source (no outline/caption where absent)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..storage import write_bytes_atomic

    data = splits.train
    rows = [index[:n_per_class] for index in data.indices_by_class()]
    cols = max(1, n_per_class)
    figure, axes = plt.subplots(len(rows), cols, figsize=(1.9 * cols + 1.2, 2.3 * len(rows)), squeeze=False)
    for c, index in enumerate(rows):
        for j in range(cols):
            ax = axes[c][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(splits.class_names[c], rotation=0, ha="right", va="center", fontsize=8)
            if j >= len(index):
                ax.axis("off")
                continue
            i = int(index[j])
            image = data.images[i].permute(1, 2, 0).numpy()
            ax.imshow(image[:, :, 0] if image.shape[2] == 1 else image, cmap="gray" if image.shape[2] == 1 else None,
                      vmin=0, vmax=255, interpolation="nearest")
            if data.masks is not None and data.masks[i].any():
                ax.contour(data.masks[i, 0].numpy(), levels=[0.5], colors="magenta", linewidths=0.7)
            if data.captions is not None and data.captions[i]:
                ax.set_xlabel(textwrap.fill(data.captions[i], 30), fontsize=5)
    figure.suptitle(f"{splits.name}: train images, mask outlines, captions", fontsize=9)
    figure.tight_layout(pad=0.4, rect=(0, 0, 1, 1 - 0.35 / (2.3 * len(rows))))  # leave room for the title
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    write_bytes_atomic(str(path), buffer.getvalue())
    return str(path)
