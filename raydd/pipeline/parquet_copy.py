"""The preprocessing stage of a run: the source as partitioned Parquet, made once by Ray Data and reused.

A run's data is preprocessed (masks, caption embeddings) into a directory named after what decides its
content — source, root, validation split, image size, mask threshold, segmenter, text encoder, rows
skipped or not (``prepare.on_bad_row``), and for local folders the files' sizes and times — so a second run on the same data reads the Parquet at once
and a changed folder is preprocessed again. The manifest is written last: a directory without one is
an interrupted preprocessing and is redone.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from raydd.config import Config
from raydd.data.loader import parquet_location
from raydd.data.locate import user_cache_dir
from raydd.data.parquet import is_preprocessed_dir

PREPARED = "prepared"


def default_root() -> str:
    return str(user_cache_dir(PREPARED))


def _local_fingerprint(path: str) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime) of every file under a local dataset folder."""
    root = Path(os.path.expanduser(path))
    if not root.is_dir():
        return []
    found = []
    for directory, _, files in os.walk(root):
        for name in files:
            full = Path(directory) / name
            stat = full.stat()
            found.append((str(full.relative_to(root)), stat.st_size, int(stat.st_mtime_ns)))
    return sorted(found)


def encoder_for(cfg: Config) -> str | None:
    """Captions are embedded only for runs that use them (the eval's caption figures come with cc)."""
    return cfg.components.text_encoder if cfg.mm.uses_captions else None


def preprocessing_key(cfg: Config) -> dict:
    """Everything the preprocessed rows depend on."""
    d = cfg.data
    return {
        "source": d.name,
        "root": d.root,
        "val_fraction": d.val_fraction,
        "seed": cfg.seed,
        "image_size": d.image_size,
        "mask_threshold": d.mask_threshold,
        "segmenter": cfg.components.segmenter,
        "text_encoder": encoder_for(cfg),
        "files": _local_fingerprint(d.root or d.name),
        # Rows left out change the content; the default is left out of the key so earlier copies stay valid.
        **({"on_bad_row": cfg.prepare.on_bad_row} if cfg.prepare.on_bad_row != "fail" else {}),
    }


def prepared_dir(cfg: Config) -> str:
    """Where this configuration's preprocessed data lives (under ``prepare.root``)."""
    key = json.dumps(preprocessing_key(cfg), sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    name = Path(cfg.data.name.rstrip("/")).name or "data"
    root = (cfg.prepare.root or default_root()).rstrip("/")
    return f"{root}/{name}-{digest}"


def prepare_data(cfg: Config, *, address: str | None = None, show_progress: bool = True,
                 log=print) -> str:
    """The directory holding the run's data as Parquet, preprocessing it with Ray Data unless done before.

    A source that is already preprocessed Parquet is used as it is.
    """
    if parquet_location(cfg.data.name) is not None:
        return cfg.data.name.removeprefix("parquet:")
    from raydd.pipeline.preprocess import preprocess_to_parquet

    out = prepared_dir(cfg)
    if is_preprocessed_dir(out):
        log(f"preprocess: reusing {out}")
    else:
        p = cfg.prepare
        preprocess_to_parquet(
            cfg.data.name, out, root=cfg.data.root, val_fraction=cfg.data.val_fraction, seed=cfg.seed,
            image_size=cfg.data.image_size, mask_threshold=cfg.data.mask_threshold,
            segmenter=cfg.components.segmenter, text_encoder=encoder_for(cfg), require_captions=False, actors=p.actors,
            cpus_per_actor=p.cpus_per_actor, gpus_per_actor=p.gpus_per_actor, batch_size=p.batch_size,
            overwrite=True, address=address, show_progress=show_progress, on_bad_row=p.on_bad_row,
        )
    return out
