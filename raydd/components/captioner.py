"""Captioning images that have none, with an open_clip CoCa model.

Weights come from a local file or a pretrained tag (see ``openclip_loading``). Without weights
the captioner refuses to start: random weights produce fluent-looking nonsense, which is worse
than an error. Tests opt in to random weights explicitly with ``allow_random_weights=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .batch import Batch, caption_rows, image_rows, images_from_tensor, text_column
from .decoding import DecodingSettings, decode
from .openclip_loading import create_openclip_model

_SPECIAL_TOKEN_TEXT = ("<start_of_text>", "<end_of_text>")


class Captioner:
    """Images -> one caption string each; a Ray Data actor (fills ``caption``) or a plain object."""

    def __init__(
        self,
        model: str = "coca_ViT-B-32",
        pretrained: str | Path | None = None,
        *,
        decoding: str = "greedy",
        num_beams: int = 3,
        max_tokens: int = 20,
        min_tokens: int = 3,
        allow_random_weights: bool = False,
        overwrite: bool = False,
        batch_size: int = 16,
        device: str = "cpu",
    ) -> None:
        import open_clip

        if pretrained is None and not allow_random_weights:
            tags = open_clip.list_pretrained_tags_by_model(model) if model in open_clip.list_models() else []
            raise ConfigError(
                f"no captioner weights for {model}: pass pretrained=<local .pt/.safetensors file>"
                + (f" or one of its pretrained tags ({', '.join(tags)}) when the hub is reachable" if tags else "")
            )
        self.model, self.weights = create_openclip_model(model, None if pretrained is None else str(pretrained), device)
        if not hasattr(self.model, "text_decoder"):
            raise ConfigError(f"open_clip model {model} is not a CoCa model (it has no text decoder); use a coca_* model")
        self.tokenizer = open_clip.get_tokenizer(model)
        self.settings = DecodingSettings(decoding, num_beams, max_tokens, min_tokens)
        preprocess = open_clip.get_model_preprocess_cfg(self.model)
        size = preprocess.get("size", 224)
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        self.mean = torch.tensor(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)).view(1, 3, 1, 1)
        self.std = torch.tensor(preprocess.get("std", open_clip.OPENAI_DATASET_STD)).view(1, 3, 1, 1)
        self.start = int(getattr(self.tokenizer, "sot_token_id", 49406))
        self.end = int(getattr(self.tokenizer, "eot_token_id", 49407))
        self.overwrite = overwrite
        self.batch_size = batch_size
        self.device = device

    def caption(self, images: torch.Tensor | Sequence[np.ndarray]) -> list[str]:
        """uint8 ``[N, C, H, W]`` tensor (raydd layout) or a list of ``[H, W, C]`` arrays -> N strings."""
        rows = images_from_tensor(images) if isinstance(images, (torch.Tensor, np.ndarray)) else list(images)
        captions: list[str] = []
        for start in range(0, len(rows), self.batch_size):
            pixels = torch.stack([self._pixels(row) for row in rows[start : start + self.batch_size]])
            tokens = decode(self.model, pixels.to(self.device), self.start, self.end, self.settings)
            captions += [self._text(t) for t in tokens]
        return captions

    def __call__(self, batch: Batch) -> Batch:
        """Fill the ``caption`` column: rows without one (all rows when ``overwrite``)."""
        images = image_rows(batch)
        existing = caption_rows(batch) if "caption" in batch else [None] * len(images)
        todo = [i for i, c in enumerate(existing) if self.overwrite or c is None or not c.strip()]
        made = self.caption([images[i] for i in todo]) if todo else []
        captions = list(existing)
        for i, text in zip(todo, made):
            captions[i] = text
        out = dict(batch)
        out["caption"] = text_column(captions)
        return out

    def _pixels(self, image: np.ndarray) -> torch.Tensor:
        """HWC uint8 -> the model's input: RGB, shorter side resized then centre-cropped, normalised."""
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255.0)
        if x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        target_h, target_w = self.image_size
        scale = max(target_h / x.shape[1], target_w / x.shape[2])
        resized = (max(target_h, round(x.shape[1] * scale)), max(target_w, round(x.shape[2] * scale)))
        x = F.interpolate(x[None], size=resized, mode="bicubic", align_corners=False, antialias=True)[0]
        top, left = (resized[0] - target_h) // 2, (resized[1] - target_w) // 2
        x = x[:, top : top + target_h, left : left + target_w].clamp(0, 1)
        return ((x[None] - self.mean) / self.std)[0]

    def _text(self, tokens: list[int]) -> str:
        text = self.tokenizer.decode(tokens) if hasattr(self.tokenizer, "decode") else " ".join(map(str, tokens))
        for special in _SPECIAL_TOKEN_TEXT:
            text = text.replace(special, " ")
        return " ".join(text.split())
