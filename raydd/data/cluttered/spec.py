"""The testbed's fixed parameters: palette, photographs, nouns and their confusions, templates, options."""

from __future__ import annotations

import os
from dataclasses import dataclass


from ...errors import ConfigError


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
