"""The preprocessing command as a whole: check, load, run on Ray, verify, then write the manifest."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from raydd.data import ImageData, load_dataset
from raydd.data.loader import folder_source
from raydd.data.registry import SourceRequest, get_source
from raydd.data import parquet as schema
from raydd.errors import ConfigError, DataError
from raydd.pipeline.cluster import check_storage, ray_session
from raydd.storage import write_text_atomic

from .checks import SPLITS, Component, check_arguments, describe_captioner, describe_segmenter, describe_text_encoder, none_if_off
from .execute import check_capacity, run_pipeline
from .ingest import FolderSource, SourcePlan, check_on_bad_row, rejected_lines
from .manifest import build_manifest
from .output import REJECTED_FILE, Output, check_written, embedding_dim
from .rows import BATCHES_PER_BLOCK, cut_blocks, first_missing_caption, has_any_caption, has_masks, row_counts, select_parts, split_table
from .stages import plan_stages


def preprocess_to_parquet(
    source: str,
    out: str,
    *,
    root: str | None = None,
    splits: Sequence[str] = SPLITS,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_size: int | None = None,
    mask_threshold: int = 0,
    segmenter: str | None = "auto",
    captioner: str | None = None,
    text_encoder: str | None = "minilm",
    require_captions: bool = True,
    actors: int = 1,
    cpus_per_actor: float = 0.5,
    gpus_per_actor: float = 0,
    batch_size: int = 256,
    cache_dir: str | None = None,
    overwrite: bool = False,
    address: str | None = None,
    show_progress: bool = True,
    on_bad_row: str = "fail",
) -> dict[str, Any]:
    """Preprocess a dataset source into partitioned Parquet at ``out``; return the manifest.

    ``mask_threshold``: the foreground threshold of sources whose masks come from one (fashion-mnist).
    ``segmenter``: ``"auto"`` uses the dataset's own masks when it has them (``annotations``), else
    ``threshold``; ``None`` writes no masks. ``captioner`` (``<coca model>:<weights>``) captions rows
    that have none. ``text_encoder`` embeds the captions when there are any. With ``require_captions``
    a row left without a caption is an error naming it; without, it embeds as the zero vector.
    Each stage gets ``actors`` actors of ``cpus_per_actor`` CPU (fractional, so reads and writes keep
    a CPU) and ``gpus_per_actor`` GPU (model stages only). ``cache_dir``: embedding/mask cache root
    for the actors (default: each node's ``$XDG_CACHE_HOME/raydd``).

    An imagefolder, a folder of WebDataset shards or image Parquet files is read, checked and decoded by Ray Data tasks (the
    driver holds metadata only); other sources load in this process. ``on_bad_row``: ``"fail"`` stops at
    the first unusable row (an unreadable image or mask, a mask of the wrong size, a sample without a
    label...) naming its file; ``"skip"`` leaves such rows out, lists them in ``out/rejected.jsonl`` and
    counts them in the manifest.
    """
    # 1. Everything checkable without data or Ray.
    split_names = check_arguments(splits, actors, cpus_per_actor, gpus_per_actor, batch_size)
    check_on_bad_row(on_bad_row)
    segmenter, captioner, text_encoder = map(none_if_off, (segmenter, captioner, text_encoder))
    segmenter_parts = None if segmenter in (None, "auto") else describe_segmenter(segmenter)
    captioner_part = None if captioner is None else describe_captioner(captioner)
    encoder_part = None if text_encoder is None else describe_text_encoder(text_encoder)
    output = Output.parse(out)
    check_storage(out, write=True)
    output.check_writable(overwrite)

    # 2. The data, and what it decides. A folder source is read on the cluster; others load here.
    folder = None if root is not None and get_source(source) is not None else folder_source(source)
    if folder is not None:
        ingest = FolderSource(folder[0], _request(folder[1], val_fraction, seed, image_size, mask_threshold),
                              on_bad_row)
        if (encoder_part is not None and require_captions and captioner_part is None and on_bad_row == "fail"
                and ingest.has_any_caption()):
            missing = ingest.first_missing_caption(split_names)  # imagefolder: its metadata says, before Ray
            if missing is not None:
                raise DataError(_missing_caption(missing))
        with ray_session(address):
            plan = ingest.plan(ingest.scan(2 * actors * BATCHES_PER_BLOCK, show_progress), split_names)
            run = _decide(plan, segmenter, segmenter_parts, captioner_part, encoder_part, require_captions,
                          split_names, cpus_per_actor, gpus_per_actor, batch_size, cache_dir)
            check_capacity(run.stages, actors, cpus_per_actor)
            output.clear()
            started = time.perf_counter()
            run_pipeline(lambda: ingest.decoded(plan, run.with_masks, 2 * actors * BATCHES_PER_BLOCK), run.stages,
                         output, actors=actors, cpus_per_actor=cpus_per_actor, batch_size=batch_size,
                         image_shape=plan.image_shape, show_progress=show_progress, shown=plan.shown)
            seconds = time.perf_counter() - started
        data, image_shape, counts, rejected = plan, plan.image_shape, plan_counts(plan), plan.rejected
    else:
        data = load_dataset(source, root=root, val_fraction=val_fraction, seed=seed, image_size=image_size,
                            mask_threshold=mask_threshold)
        parts = select_parts(data, split_names)
        run = _decide(_Parts(parts, data.name), segmenter, segmenter_parts, captioner_part, encoder_part,
                      require_captions, split_names, cpus_per_actor, gpus_per_actor, batch_size, cache_dir)
        table = pa.concat_tables([split_table(parts[s], s, run.with_masks) for s in split_names if len(parts[s])])
        image_shape = tuple(table.schema.field("image").type.shape)
        counts = row_counts(parts, data.num_classes)
        rejected = []

        # 3. Ray.
        with ray_session(address):
            check_capacity(run.stages, actors, cpus_per_actor)
            output.clear()
            started = time.perf_counter()
            run_pipeline(cut_blocks(table, actors, batch_size), run.stages, output, actors=actors,
                         cpus_per_actor=cpus_per_actor, batch_size=batch_size, image_shape=image_shape,
                         show_progress=show_progress)
            seconds = time.perf_counter() - started
    check_written(output, counts)
    if rejected:  # beside the rows, before the manifest: a directory with a manifest is complete
        write_text_atomic(output.location.shown(REJECTED_FILE), rejected_lines(rejected))

    # 4. The manifest, last.
    rows = sum(c["total"] for c in counts.values())
    manifest = build_manifest(
        data, split_names, image_shape, counts, val_fraction=val_fraction, seed=seed, captions=run.has_captions,
        segmenter=run.segmenter, captioner=run.captioner, encoder=run.encoder,
        emb_dim=embedding_dim(output, counts) if run.encoder is not None else None,
        rejected=_rejected_summary(rejected, on_bad_row) if folder is not None else None,
        pipeline={"stages": [s.name for s in run.stages], "actors": actors, "cpus_per_actor": cpus_per_actor,
                  "gpus_per_actor": gpus_per_actor, "batch_size": batch_size, "seconds": round(seconds, 3),
                  "rows_per_s": round(rows / seconds, 1) if seconds > 0 else None},
    )
    write_text_atomic(output.location.shown(schema.MANIFEST_FILE), json.dumps(manifest, indent=2) + "\n")
    stage_text = "+".join(s.name for s in run.stages) or "no model stages"
    rejected_text = (f"; {len(rejected)} rejected, listed in {output.location.shown(REJECTED_FILE)}"
                     if rejected else "")
    print(f"preprocess: {rows} rows in {seconds:.1f} s ({rows / max(seconds, 1e-9):.0f} rows/s; {stage_text}; "
          f"{actors} actor(s) per stage{rejected_text}) -> {out}", flush=True)
    return manifest


@dataclass(frozen=True)
class _Run:
    """What the data decided: the stages to run and what the manifest will say about them."""

    stages: list
    segmenter: Component | None
    captioner: Component | None
    encoder: Component | None
    has_captions: bool
    with_masks: bool


class _Parts:
    """Loaded splits, seen the way ``_decide`` asks about a source."""

    def __init__(self, parts: dict[str, ImageData], name: str) -> None:
        self.parts, self.name = parts, name

    def has_masks(self) -> bool:
        return has_masks(self.parts)

    def has_any_caption(self) -> bool:
        return has_any_caption(self.parts)

    def first_missing_caption(self) -> str | None:
        return first_missing_caption(self.parts)

    def is_empty(self) -> bool:
        return not any(len(part) for part in self.parts.values())


class _Planned(_Parts):
    """A folder source's plan (columns of metadata), seen the same way."""

    def __init__(self, plan: SourcePlan) -> None:
        self.plan, self.name = plan, plan.name

    def has_masks(self) -> bool:
        return self.plan.has_masks

    def has_any_caption(self) -> bool:
        return self.plan.any_caption

    def first_missing_caption(self) -> str | None:
        return self.plan.missing_caption

    def is_empty(self) -> bool:
        return not any(len(labels) for labels in self.plan.labels.values())


def _missing_caption(row_id: str) -> str:
    return (f"{row_id}: missing caption (captions are required; caption the images with a "
            "captioner or allow missing captions, which embed as zeros)")


def _decide(data, segmenter: str | None, segmenter_parts: Component | None, captioner_part: Component | None,
            encoder_part: Component | None, require_captions: bool, split_names: Sequence[str], cpus_per_actor: float,
            gpus_per_actor: float, batch_size: int, cache_dir: str | None) -> _Run:
    if isinstance(data, SourcePlan):
        data = _Planned(data)
    if segmenter == "auto":
        segmenter_parts = describe_segmenter("annotations" if data.has_masks() else "threshold")
    if segmenter_parts is not None and segmenter_parts.spec == "annotations" and not data.has_masks():
        raise ConfigError(f"segmenter 'annotations' needs masks, and {data.name} has none; use threshold, grabcut or sam")
    has_captions = data.has_any_caption() or captioner_part is not None
    embeds = encoder_part is not None and has_captions
    missing = data.first_missing_caption()
    if embeds and require_captions and captioner_part is None and missing is not None:
        raise DataError(_missing_caption(missing))
    if data.is_empty():
        raise DataError(f"{data.name}: the splits {', '.join(split_names)} have no rows; nothing to write")
    # The captioner runs (and is recorded) only if some row lacks a caption.
    captioner_part = captioner_part if captioner_part is not None and missing else None
    stages = plan_stages(segmenter_parts, captioner_part, encoder_part if embeds else None, cpus_per_actor,
                         gpus_per_actor, batch_size, require_captions, cache_dir)
    with_masks = segmenter_parts is not None and segmenter_parts.spec == "annotations"
    return _Run(stages, segmenter_parts, captioner_part, encoder_part if embeds else None, has_captions, with_masks)


def _request(path: str, val_fraction: float, seed: int, image_size: int | None,
             mask_threshold: int) -> SourceRequest:
    """The request ``load_dataset`` would build (same checks), for a folder source read on Ray."""
    from raydd.data.loader import _request as checked

    return replace(checked(None, val_fraction, seed, image_size, mask_threshold, False), root=path)


def plan_counts(plan: SourcePlan) -> dict[str, dict[str, Any]]:
    counts = {}
    for split, labels in plan.labels.items():
        per_class = np.bincount(np.asarray(labels, dtype=np.int64), minlength=plan.num_classes)
        counts[split] = {"total": len(labels), "per_class": [int(n) for n in per_class]}
    return counts


def _rejected_summary(rejected: Sequence[dict[str, str]], on_bad_row: str) -> dict[str, Any]:
    per_split: dict[str, int] = {}
    for row in rejected:
        per_split[row["split"]] = per_split.get(row["split"], 0) + 1
    return {"on_bad_row": on_bad_row, "total": len(rejected), "per_split": per_split,
            "file": REJECTED_FILE if rejected else None}
