"""Captions and masks for a run: checked before any work starts, embedded and attached to the data.

Captions become L2-normalised embeddings (cached on disk by the text encoder component); masks come
from the dataset when it has them (annotations, fashion-mnist's threshold, the cluttered testbed's
exact masks) or from the configured segmenter (the ``components`` section).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from raydd.config import Config
from raydd.data import DatasetSplits, ImageData
from raydd.errors import ConfigError

TEMPLATE = "a photo of a {}"


@dataclass
class CaptionEmbeddings:
    train: torch.Tensor
    val: torch.Tensor | None
    test: torch.Tensor | None  # None when captions are class templates: refused as a test-time input
    from_templates: bool
    encoder: str

    def split(self, name: str) -> torch.Tensor | None:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def _embedder(cfg: Config):
    from raydd.components.text import TextEmbedder

    return TextEmbedder(cfg.components.text_encoder, require_captions=True)


def embed_captions(cfg: Config, splits: DatasetSplits) -> CaptionEmbeddings | None:
    """Caption embeddings of every split, or None when no caption switch is on."""
    if not cfg.mm.uses_captions:
        return None
    if splits.train.captions is None:
        if cfg.mm.cm and cfg.mm.class_templates and not cfg.mm.cc:
            embedder = _embedder(cfg)
            texts = [TEMPLATE.format(splits.class_names[int(y)]) for y in splits.train.labels]
            return CaptionEmbeddings(embedder.embed(texts), None, None, True, cfg.components.text_encoder)
        raise ConfigError(
            f"dataset {splits.name!r} has no captions, but {'mm.cc' if cfg.mm.cc else 'mm.cm'} needs them; "
            "caption the images (raydd preprocess --captioner ...) or, for caption matching only, "
            "--set mm.class_templates=true"
        )
    stored = _stored_embeddings(cfg, splits)
    if stored is not None:
        return stored
    embedder = _embedder(cfg)

    def one(data: ImageData) -> torch.Tensor | None:
        if len(data) == 0 or data.captions is None:
            return None
        return embedder.embed(data.captions, names=data.ids)

    return CaptionEmbeddings(one(splits.train), one(splits.val), one(splits.test), False,
                             cfg.components.text_encoder)


def embed_dataset_captions(cfg: Config, splits: DatasetSplits) -> CaptionEmbeddings | None:
    """Caption embeddings whenever the dataset carries captions, caption switches on or not.

    The whole-training-set baseline reports an image+caption ceiling for any captioned dataset, so
    it needs the embeddings even for a config that distils without captions.
    """
    if splits.train.captions is None:
        return None
    return embed_captions(replace(cfg, mm=replace(cfg.mm, cc=True)), splits)


def _stored_embeddings(cfg: Config, splits: DatasetSplits) -> CaptionEmbeddings | None:
    """The embeddings a Ray Data preprocessing wrote with the run's own text encoder, or None.

    Reading them (rather than encoding again) is what makes the preprocessing stage the one place
    captions are encoded; a different encoder in the config encodes again.
    """
    from raydd.data.parquet import check_captions_present, read_caption_embeddings, read_manifest
    from raydd.run_inputs import data_location

    url = data_location(cfg)
    if url is None:
        return None
    manifest = read_manifest(url)
    encoder = manifest.get("text_encoder")
    if not encoder or encoder.get("spec") != cfg.components.text_encoder:
        return None
    check_captions_present(url, (splits.train, splits.val, splits.test), manifest)
    split_names = manifest["splits"]
    classes = sorted({int(y) for data in (splits.train, splits.val, splits.test) for y in data.labels.tolist()})

    def one(data: ImageData, split: str) -> torch.Tensor | None:
        if len(data) == 0 or data.captions is None:
            return None
        # A validation split carved at read time lives in the train files.
        return read_caption_embeddings(url, split if split in split_names else "train", data.ids, classes)

    return CaptionEmbeddings(one(splits.train, "train"), one(splits.val, "val"), one(splits.test, "test"), False,
                             cfg.components.text_encoder)


def attach_masks(cfg: Config, splits: DatasetSplits) -> DatasetSplits:
    """Make sure the train split carries masks when a mask switch is on."""
    if not cfg.mm.uses_masks:
        return splits
    if cfg.components.segmenter == "auto" and splits.train.masks is not None:
        return splits
    from raydd.components.masks import Segmenter

    spec = "threshold" if cfg.components.segmenter == "auto" else cfg.components.segmenter
    segmenter = Segmenter(spec)
    masks = segmenter.segment(splits.train.images, annotations=splits.train.masks, names=splits.train.ids)
    return replace(splits, train=replace(splits.train, masks=masks))
