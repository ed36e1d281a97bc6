"""Building a split, the on-disk cache, and the registered source."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import DataError
from ..base import DatasetSplits, ImageData
from ..locate import user_cache_dir
from ..registry import SourceRequest, get_source, register_source
from ..resize import resize_images
from ..splits import carve_validation
from ..stats import channel_mean_std
from .scene import (
    Photograph, caption_for, column, composite, draw_table, load_photographs, make_plan, render_alpha,
    render_backgrounds,
)
from .spec import (
    ALPHA_FLOOR, BUILD_SEED, CANVAS, CONFUSABLE_SHARE, CONFUSIONS, CROP_FRACTION, ClutteredOptions,
    NOUNS, OBJECT_SOURCE, PALETTE, PHOTOGRAPHS, PLAN_COLUMNS, POSITION_PHRASES, SIZE_RANGE, SOURCE_NAME,
    TEMPLATES, TRAIN_REGION, VERSION, options_from_env,
)


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


@register_source(SOURCE_NAME, captions=True)
def load_cluttered_from_env(request: SourceRequest) -> DatasetSplits:
    """The registered loader: options from ``$RAYDD_CLUTTERED_Q`` / ``$RAYDD_CLUTTERED_LIMIT``."""
    return load_cluttered(request, options_from_env())
