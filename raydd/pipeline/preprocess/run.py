"""The preprocessing command as a whole: check, load, run on Ray, verify, then write the manifest."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from raydd.data import load_dataset
from raydd.data import parquet as schema
from raydd.errors import ConfigError, DataError
from raydd.pipeline.cluster import check_storage, ray_session
from raydd.storage import write_text_atomic

from .checks import SPLITS, check_arguments, describe_captioner, describe_segmenter, describe_text_encoder, none_if_off
from .execute import check_capacity, run_pipeline
from .manifest import build_manifest
from .output import Output, check_written, embedding_dim
from .rows import cut_blocks, first_missing_caption, has_any_caption, has_masks, row_counts, select_parts, split_table
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
    """
    # 1. Everything checkable without data or Ray.
    split_names = check_arguments(splits, actors, cpus_per_actor, gpus_per_actor, batch_size)
    segmenter, captioner, text_encoder = map(none_if_off, (segmenter, captioner, text_encoder))
    segmenter_parts = None if segmenter in (None, "auto") else describe_segmenter(segmenter)
    captioner_part = None if captioner is None else describe_captioner(captioner)
    encoder_part = None if text_encoder is None else describe_text_encoder(text_encoder)
    output = Output.parse(out)
    check_storage(out, write=True)
    output.check_writable(overwrite)

    # 2. The data, and what it decides.
    data = load_dataset(source, root=root, val_fraction=val_fraction, seed=seed, image_size=image_size,
                        mask_threshold=mask_threshold)
    parts = select_parts(data, split_names)
    if segmenter == "auto":
        segmenter_parts = describe_segmenter("annotations" if has_masks(parts) else "threshold")
    if segmenter_parts is not None and segmenter_parts.spec == "annotations" and not has_masks(parts):
        raise ConfigError(f"segmenter 'annotations' needs masks, and {data.name} has none; use threshold, grabcut or sam")
    has_captions = has_any_caption(parts) or captioner_part is not None
    embeds = encoder_part is not None and has_captions
    if embeds and require_captions and captioner_part is None:
        missing = first_missing_caption(parts)
        if missing is not None:
            raise DataError(f"{missing}: missing caption (captions are required; caption the images with a "
                            "captioner or allow missing captions, which embed as zeros)")

    if not any(len(part) for part in parts.values()):
        raise DataError(f"{data.name}: the splits {', '.join(split_names)} have no rows; nothing to write")
    # The captioner runs (and is recorded) only if some row lacks a caption.
    captioner_part = captioner_part if captioner_part is not None and first_missing_caption(parts) else None
    stages = plan_stages(segmenter_parts, captioner_part, encoder_part if embeds else None, cpus_per_actor,
                         gpus_per_actor, batch_size, require_captions, cache_dir)
    with_masks = segmenter_parts is not None and segmenter_parts.spec == "annotations"
    table = pa.concat_tables([split_table(parts[s], s, with_masks) for s in split_names if len(parts[s])])
    image_shape = tuple(table.schema.field("image").type.shape)
    counts = row_counts(parts, data.num_classes)

    # 3. Ray.
    with ray_session(address):
        check_capacity(stages, actors, cpus_per_actor)
        output.clear()
        started = time.perf_counter()
        run_pipeline(cut_blocks(table, actors, batch_size), stages, output, actors=actors,
                     cpus_per_actor=cpus_per_actor, batch_size=batch_size, image_shape=image_shape,
                     show_progress=show_progress)
        seconds = time.perf_counter() - started
    check_written(output, counts)

    # 4. The manifest, last.
    rows = table.num_rows
    manifest = build_manifest(
        data, split_names, image_shape, counts, val_fraction=val_fraction, seed=seed, captions=has_captions,
        segmenter=segmenter_parts, captioner=captioner_part, encoder=encoder_part if embeds else None,
        emb_dim=embedding_dim(output, counts) if embeds else None,
        pipeline={"stages": [s.name for s in stages], "actors": actors, "cpus_per_actor": cpus_per_actor,
                  "gpus_per_actor": gpus_per_actor, "batch_size": batch_size, "seconds": round(seconds, 3),
                  "rows_per_s": round(rows / seconds, 1) if seconds > 0 else None},
    )
    write_text_atomic(output.location.shown(schema.MANIFEST_FILE), json.dumps(manifest, indent=2) + "\n")
    stage_text = "+".join(s.name for s in stages) or "no model stages"
    print(f"preprocess: {rows} rows in {seconds:.1f} s ({rows / max(seconds, 1e-9):.0f} rows/s; {stage_text}; "
          f"{actors} actor(s) per stage) -> {out}", flush=True)
    return manifest
