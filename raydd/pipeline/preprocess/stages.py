"""The Ray Data actor stages (one per model), and the plan of which run with what resources.

Model libraries are imported inside the actors only, so the driver never loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from raydd.errors import RayddError

from .checks import Component


class _Stage:
    """One Ray Data actor: builds its component once, then maps numpy batches.

    A construction error is kept and raised at the first batch: Ray reports an actor that dies in
    ``__init__`` only as a flattened traceback, while a batch error keeps its type and message.
    """

    def __init__(self, cpus: float) -> None:
        import torch

        torch.set_num_threads(max(1, int(cpus)))  # more threads than granted CPUs slows everyone down
        self.component: Any = None
        self.error: RayddError | None = None

    def _build(self, make) -> None:
        try:
            self.component = make()
        except RayddError as error:
            self.error = error

    @staticmethod
    def _device(gpus: float) -> str:
        import torch

        return "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.error is not None:
            raise self.error
        return self.component(batch)


class MaskStage(_Stage):
    """Adds ``mask`` with the ``Segmenter`` (for ``annotations``: checks the dataset's own)."""

    def __init__(self, segmenter: str, cpus: float, gpus: float, cache_dir: str | None) -> None:
        super().__init__(cpus)
        from raydd.components import Segmenter

        is_sam = segmenter.startswith("sam:")
        options = {"device": self._device(gpus)} if is_sam else {}
        # Only SAM is slow enough for its masks to be worth caching.
        self._build(lambda: Segmenter(segmenter, use_cache=is_sam, cache_dir=cache_dir, **options))


class CaptionStage(_Stage):
    """Fills missing ``caption`` values with the CoCa ``Captioner``."""

    def __init__(self, captioner: str, cpus: float, gpus: float, batch_size: int) -> None:
        super().__init__(cpus)
        from raydd.components import Captioner

        model, _, pretrained = captioner.partition(":")
        device = self._device(gpus)
        self._build(lambda: Captioner(model, pretrained, device=device, batch_size=min(batch_size, 64)))


class EmbedStage(_Stage):
    """Adds ``caption_emb`` with the ``TextEmbedder``; checks the encoder is the one the manifest names."""

    def __init__(self, encoder: str, expected_id: str, cpus: float, gpus: float, require_captions: bool,
                 cache_dir: str | None) -> None:
        super().__init__(cpus)
        from raydd.components import TextEmbedder

        device = self._device(gpus)
        self._build(lambda: TextEmbedder(encoder, cache_dir=cache_dir, require_captions=require_captions,
                                         device=device))
        if self.component is not None and expected_id not in (encoder, self.component.encoder.id):
            raise RuntimeError(f"text encoder {encoder} reports id {self.component.encoder.id}, "
                               f"the driver expected {expected_id}: describe_text_encoder is out of date")


@dataclass(frozen=True)
class StagePlan:
    name: str
    actor: type
    kwargs: dict[str, Any]
    gpus: float


def plan_stages(segmenter: Component | None, captioner: Component | None, encoder: Component | None,
                cpus: float, gpus: float, batch_size: int, require_captions: bool,
                cache_dir: str | None) -> list[StagePlan]:
    stages = []
    if segmenter is not None:
        gpu = gpus if segmenter.uses_gpu else 0
        stages.append(StagePlan("masks", MaskStage, {"segmenter": segmenter.spec, "cpus": cpus, "gpus": gpu,
                                                     "cache_dir": cache_dir}, gpu))
    if captioner is not None:
        stages.append(StagePlan("captions", CaptionStage, {"captioner": captioner.spec, "cpus": cpus, "gpus": gpus,
                                                           "batch_size": batch_size}, gpus))
    if encoder is not None:
        stages.append(StagePlan("caption_emb", EmbedStage, {"encoder": encoder.spec, "expected_id": encoder.id,
                                                            "cpus": cpus, "gpus": gpus,
                                                            "require_captions": require_captions,
                                                            "cache_dir": cache_dir}, gpus))
    return stages
