"""Object masks: named segmenters plus ``Segmenter``, the batch component.

Segmenters are chosen by a spec string:

- ``threshold[:t]``: foreground = any channel > t (default 0). For black-background images such
  as Fashion-MNIST, where it is exact.
- ``grabcut[:iterations]``: OpenCV GrabCut started from a rectangle over the central 80% of the
  image (default 3 iterations). Model-free; assumes a roughly centred object.
- ``sam:<vit_b|vit_l|vit_h|micro>:<checkpoint path>``: segment-anything prompted with a box (the
  image minus a 5% margin, default) or the centre point (option ``prompt="point"``); the mask
  with the highest predicted quality wins.
- ``annotations``: the dataset's own masks; a row without one is an error naming it.

Every mask is uint8 {0, 1} of its image's height and width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..registry import Registry
from .batch import Batch, image_rows, images_from_tensor, mask_column, masks_to_tensor, row_names
from .cache import ArrayCache, array_key, default_cache_root, producer_dir
from .openclip_loading import file_fingerprint
from .sam import SAM_VARIANTS, load_sam


class MaskBackend:
    """One way of making masks. Subclasses implement ``segment`` (one image) or ``segment_many``."""

    id: str = ""
    cacheable: bool = True  # False when the output is not a function of the pixels alone

    def segment(self, image: np.ndarray) -> np.ndarray:
        """uint8 [H, W, C] -> uint8 {0, 1} [H, W]."""
        raise NotImplementedError

    def segment_many(
        self, images: Sequence[np.ndarray], names: Sequence[str], annotations: Sequence[np.ndarray | None] | None
    ) -> list[np.ndarray]:
        masks = []
        for image, name in zip(images, names):
            try:
                masks.append(self.segment(image))
            except DataError:
                raise
            except Exception as error:  # a backend failure on one image must say which image
                raise DataError(f"{name}: segmenter {self.id} failed: {error}") from error
        return masks


SegmenterFactory = Callable[[str | None, dict[str, Any]], MaskBackend]  # (argument after "name:", options)
SEGMENTERS: Registry[SegmenterFactory] = Registry("segmenter")


def register_segmenter(name: str) -> Callable[[SegmenterFactory], SegmenterFactory]:
    """Decorator: make ``make_mask_backend("<name>[:<argument>]")`` call the factory."""
    return SEGMENTERS.register(name)


def available_segmenters() -> list[str]:
    return SEGMENTERS.names()


def make_mask_backend(spec: str, **options: Any) -> MaskBackend:
    factory, argument = SEGMENTERS.resolve(spec, "sam takes sam:<vit_b|vit_l|vit_h|micro>:<checkpoint path>")
    return factory(argument, dict(options))


def _reject_options(spec: str, options: dict[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"segmenter {spec} does not take option(s) {', '.join(unknown)} (takes: {', '.join(allowed) or 'none'})")


def _integer(spec: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"segmenter {spec}: {text!r} is not an integer") from None
    if not low <= value <= high:
        raise ConfigError(f"segmenter {spec}: {value} is outside {low}..{high}")
    return value


class ThresholdMasks(MaskBackend):
    def __init__(self, threshold: int = 0) -> None:
        self.threshold = threshold
        self.id = f"threshold:{threshold}"

    def segment(self, image: np.ndarray) -> np.ndarray:
        return (image.max(axis=2) > self.threshold).astype(np.uint8)


class GrabCutMasks(MaskBackend):
    """GrabCut from a centred rectangle: outside it is certain background, inside is uncertain."""

    def __init__(self, iterations: int = 3, margin: float = 0.1) -> None:
        self.iterations, self.margin = iterations, margin
        self.id = f"grabcut:{iterations}:{margin}"

    def segment(self, image: np.ndarray) -> np.ndarray:
        import cv2

        height, width = image.shape[:2]
        bgr = np.ascontiguousarray(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[:, :, ::-1])
        dx, dy = max(1, round(self.margin * width)), max(1, round(self.margin * height))
        rect = (dx, dy, max(1, width - 2 * dx), max(1, height - 2 * dy))
        labels = np.zeros((height, width), dtype=np.uint8)
        background_model = np.zeros((1, 65), dtype=np.float64)
        foreground_model = np.zeros((1, 65), dtype=np.float64)
        cv2.grabCut(bgr, labels, rect, background_model, foreground_model, self.iterations, cv2.GC_INIT_WITH_RECT)
        return np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)


class SamMasks(MaskBackend):
    """SAM through ``SamPredictor``, which resizes the image up to the model's input size and
    returns masks at the original size; one prompt per image, best-scoring of the three masks."""

    def __init__(
        self, variant: str, checkpoint: str | Path, prompt: str = "box", margin: float = 0.05, device: str = "cpu"
    ) -> None:
        if prompt not in ("box", "point"):
            raise ConfigError(f"SAM prompt must be 'box' or 'point', got {prompt!r}")
        from segment_anything import SamPredictor

        self.model = load_sam(variant, checkpoint, device)
        self.predictor = SamPredictor(self.model)
        self.prompt, self.margin = prompt, margin
        self.id = f"sam:{variant}:{prompt}:{margin}:{file_fingerprint(Path(checkpoint).expanduser())}"

    def segment(self, image: np.ndarray) -> np.ndarray:
        rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
        height, width = rgb.shape[:2]
        self.predictor.set_image(np.ascontiguousarray(rgb), image_format="RGB")
        if self.prompt == "box":
            dx, dy = self.margin * width, self.margin * height
            prompt = {"box": np.array([dx, dy, width - 1 - dx, height - 1 - dy], dtype=np.float32)}
        else:
            prompt = {"point_coords": np.array([[width / 2, height / 2]], dtype=np.float32), "point_labels": np.array([1])}
        masks, scores, _ = self.predictor.predict(**prompt, multimask_output=True)
        best = masks[int(np.argmax(scores))]
        if best.shape != (height, width):  # the predictor already returns the input size; guard anyway
            import cv2

            best = cv2.resize(best.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        return best.astype(np.uint8)


class AnnotationMasks(MaskBackend):
    """The dataset's own masks, validated and normalised to {0, 1}."""

    id = "annotations"
    cacheable = False

    def segment_many(
        self, images: Sequence[np.ndarray], names: Sequence[str], annotations: Sequence[np.ndarray | None] | None
    ) -> list[np.ndarray]:
        if annotations is None:
            raise DataError("segmenter 'annotations' needs the dataset's masks, and none were given")
        masks = []
        for image, name, annotation in zip(images, names, annotations):
            if annotation is None:
                raise DataError(f"{name}: no annotated mask (segmenter 'annotations' needs one per image)")
            mask = np.asarray(annotation).squeeze()
            if mask.shape != image.shape[:2]:
                raise DataError(f"{name}: annotated mask is {mask.shape}, its image is {image.shape[:2]}")
            masks.append((mask > 0).astype(np.uint8))
        return masks


@register_segmenter("threshold")
def _threshold(argument: str | None, options: dict[str, Any]) -> MaskBackend:
    _reject_options("threshold", options, ())
    return ThresholdMasks(0 if argument is None else _integer("threshold", argument, 0, 255))


@register_segmenter("grabcut")
def _grabcut(argument: str | None, options: dict[str, Any]) -> MaskBackend:
    _reject_options("grabcut", options, ("margin",))
    iterations = 3 if argument is None else _integer("grabcut", argument, 1, 50)
    return GrabCutMasks(iterations, float(options.get("margin", 0.1)))


@register_segmenter("sam")
def _sam(argument: str | None, options: dict[str, Any]) -> MaskBackend:
    _reject_options("sam", options, ("prompt", "margin", "device"))
    variant, _, checkpoint = (argument or "").partition(":")
    if variant not in SAM_VARIANTS or not checkpoint:
        raise ConfigError(
            f"segmenter 'sam:{argument or ''}' must be sam:<{'|'.join(SAM_VARIANTS)}>:<checkpoint path>"
        )
    return SamMasks(variant, checkpoint, **options)


@register_segmenter("annotations")
def _annotations(argument: str | None, options: dict[str, Any]) -> MaskBackend:
    _reject_options("annotations", options, ())
    if argument:
        raise ConfigError(f"segmenter 'annotations' takes no argument, got 'annotations:{argument}'")
    return AnnotationMasks()


def _annotation_rows(column: np.ndarray | None, count: int) -> list[np.ndarray | None] | None:
    if column is None:
        return None
    if column.dtype == object:
        return [None if value is None else np.asarray(value) for value in column]
    return [column[i] for i in range(count)]


class Segmenter:
    """Images -> masks; a Ray Data actor (adds ``mask``) or a plain object.

    With ``use_cache`` masks are stored on disk by (segmenter id, image hash) -- worth it for SAM,
    pointless for ``threshold``.
    """

    def __init__(
        self,
        segmenter: str | MaskBackend = "threshold",
        *,
        use_cache: bool = False,
        cache_dir: str | Path | None = None,
        **options: Any,
    ) -> None:
        self.backend = make_mask_backend(segmenter, **options) if isinstance(segmenter, str) else segmenter
        self.cache: ArrayCache | None = None
        if use_cache and self.backend.cacheable:
            root = Path(cache_dir) if cache_dir is not None else default_cache_root("masks")
            self.cache = ArrayCache(producer_dir(root, self.backend.id), self.backend.id)

    def segment(
        self,
        images: torch.Tensor,
        *,
        annotations: torch.Tensor | None = None,
        names: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """uint8 ``[N, C, H, W]`` (raydd layout) -> uint8 ``[N, 1, H, W]`` (``ImageData.masks`` layout)."""
        rows = images_from_tensor(images)
        names = list(names) if names is not None else [f"image {i}" for i in range(len(rows))]
        given = None if annotations is None else [m[0].cpu().numpy() for m in annotations]
        return masks_to_tensor(self._masks(rows, names, given))

    def __call__(self, batch: Batch) -> Batch:
        """Add (or replace) the ``mask`` column, uint8 [B, H, W]; for ``annotations`` the batch's own."""
        images = image_rows(batch)
        names = row_names(batch, len(images))
        masks = self._masks(images, names, _annotation_rows(batch.get("mask"), len(images)))
        out = dict(batch)
        out["mask"] = mask_column(masks, batch["image"])
        return out

    def _masks(
        self, images: list[np.ndarray], names: list[str], annotations: list[np.ndarray | None] | None
    ) -> list[np.ndarray]:
        if self.cache is None:
            return self.backend.segment_many(images, names, annotations)
        keys = [array_key(image) for image in images]
        found = self.cache.get_many(keys)
        todo = [i for i, mask in enumerate(found) if mask is None]
        made = self.backend.segment_many([images[i] for i in todo], [names[i] for i in todo], None)
        self.cache.put_many([keys[i] for i in todo], made)
        for i, mask in zip(todo, made):
            found[i] = mask
        return found  # type: ignore[return-value]
