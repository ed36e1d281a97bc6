"""Name -> model builder lookup, so configs can pick a network by a string."""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable

from torch import nn

from raydd.errors import ConfigError
from raydd.registry import Registry

ModelBuilder = Callable[..., nn.Module]

# Filled once at import time by the @register_model decorators in the model modules.
MODELS: Registry[ModelBuilder] = Registry("model", lowercase=True)

_REQUIRED_ARGUMENTS = ("channels", "num_classes", "image_size")


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: make ``builder(channels=, num_classes=, image_size=, **options)`` reachable as ``name``."""

    return MODELS.register(name)


def available_models() -> list[str]:
    """Registered model names, sorted, for error messages and CLIs."""
    return MODELS.names()


def get_model(
    name: str,
    *,
    channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    **options: Any,
) -> nn.Module:
    """Build a freshly initialised model; bad names or options become a ``ConfigError``."""
    builder = MODELS.get(name)
    if builder is None:
        raise ConfigError(f"unknown model {name!r}; available models: {', '.join(available_models())}")
    _check_options(name, builder, options)
    _check_positive_int("channels", channels)
    _check_positive_int("num_classes", num_classes)
    return builder(
        channels=int(channels),
        num_classes=int(num_classes),
        image_size=_as_image_size(image_size),
        **options,
    )


def preset(builder: ModelBuilder, **pinned: Any) -> ModelBuilder:
    """A builder with some options fixed, so that e.g. ``convnet4`` cannot be given ``depth=3``."""
    signature = inspect.signature(builder)
    kept = [p for n, p in signature.parameters.items() if n not in pinned]

    def build(**arguments: Any) -> nn.Module:
        return builder(**pinned, **arguments)

    build.__signature__ = signature.replace(parameters=kept)  # type: ignore[attr-defined]
    build.__doc__ = builder.__doc__
    return build


def _accepted_options(builder: ModelBuilder) -> list[str] | None:
    """Option names the builder takes besides the required ones; None if it takes anything."""
    parameters = inspect.signature(builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters if p.name not in _REQUIRED_ARGUMENTS]


def _check_options(name: str, builder: ModelBuilder, options: dict[str, Any]) -> None:
    accepted = _accepted_options(builder)
    if accepted is None:
        return
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        allowed = ", ".join(accepted) if accepted else "none"
        raise ConfigError(f"model {name!r} does not accept option(s) {', '.join(unknown)}; accepted options: {allowed}")


def _check_positive_int(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"model {field} must be a positive integer, got {value!r}")


def _as_image_size(image_size: Any) -> tuple[int, int]:
    try:
        height, width = image_size
    except (TypeError, ValueError):
        raise ConfigError(f"model image_size must be (height, width), got {image_size!r}") from None
    for value in (height, width):
        _check_positive_int("image_size entry", value)
    return int(height), int(width)
