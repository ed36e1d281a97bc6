"""Building an open_clip model from a name and a weights source, with errors a user can act on.

``pretrained`` is one of: ``None`` (random weights -- for tests only), a local ``.pt``/``.bin``/
``.safetensors`` state dict, or an open_clip pretrained *tag* (fetched from the Hugging Face hub
into its cache). The build machines cannot reach the hub, so a tag that is not already cached
must fail at once with a message that says to pass a local path, rather than retry for a minute.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights come from, plus a fingerprint that changes when the weights do."""

    kind: str  # "random" | "file" | "tag"
    value: str | None
    fingerprint: str

    @property
    def is_random(self) -> bool:
        return self.kind == "random"


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.startswith((".", "~")) or text.endswith(_WEIGHT_SUFFIXES)


def file_fingerprint(path: Path) -> str:
    """Path, size and mtime: cheap (no hashing of a GB file) and changes if the file is replaced."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def check_model_name(open_clip, model_name: str) -> None:
    known = open_clip.list_models()
    if model_name.replace("/", "-") not in known:
        close = difflib.get_close_matches(model_name, known, n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown open_clip model {model_name!r}{hint} (open_clip.list_models() lists all)")


def resolve_weights(open_clip, model_name: str, pretrained: str | None) -> WeightsSource:
    """Classify ``pretrained`` without touching the network."""
    if pretrained is None or pretrained == "":
        return WeightsSource("random", None, "random")
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained in tags:
        return WeightsSource("tag", pretrained, f"tag:{pretrained}")
    path = Path(pretrained).expanduser()
    if path.is_file():
        return WeightsSource("file", str(path), f"file:{file_fingerprint(path)}")
    if _looks_like_path(pretrained):
        raise ConfigError(f"open_clip weights file {pretrained} does not exist (model {model_name})")
    known = ", ".join(tags) if tags else "none"
    raise ConfigError(
        f"{pretrained!r} is neither a weights file nor a pretrained tag of open_clip model {model_name} "
        f"(its tags: {known})"
    )


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def create_openclip_model(model_name: str, pretrained: str | None, device: str = "cpu"):
    """Return ``(model, weights)`` in eval mode; raise ConfigError when the weights are unavailable."""
    import open_clip

    check_model_name(open_clip, model_name)
    weights = resolve_weights(open_clip, model_name, pretrained)
    try:
        model = open_clip.create_model(model_name, pretrained=weights.value, device=device, weights_only=True)
    except RuntimeError as error:
        if weights.kind != "tag":
            raise ConfigError(f"cannot load open_clip {model_name} weights from {weights.value}: {error}") from None
        where = "HF_HUB_OFFLINE is set and" if _hub_offline() else "the hub was not reachable and"
        raise ConfigError(
            f"open_clip {model_name} pretrained tag {pretrained!r} needs a download from the Hugging Face hub, "
            f"but {where} the weights are not in the local hub cache. Pass a local weights file instead "
            f"(pretrained=/path/to/{model_name}.safetensors or .pt)."
        ) from None
    model.eval()
    return model, weights
