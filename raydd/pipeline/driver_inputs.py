"""What the Ray driver keeps of the data: the initial synthetic set, the members list, the checks.

The workers read their own classes' partitions of a preprocessed (Parquet) source. The driver needs
only what they share: the initial set (every class's rows, as one process draws them), the ids of the
training images (members.json), the checks that must fail before anything is written, and at the end
the real captions the caption bank is chosen from. For a preprocessed source it reads those one class
at a time, so its peak memory is one class's rows, not the training split; a trained model pool reads
its batches the same way (``raydd.pipeline.pool_rows``). A source read whole (a registered dataset, an
imagefolder) keeps the whole-split path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from raydd.config import Config
from raydd.data.parquet import partition_order
from raydd.distill import CaptionChunk, DistillState, caption_chunks, initial_state, load_inputs, open_run, preflight
from raydd.methods.dm_setup import ensure_model_pool, network_spec
from raydd.modalities import CaptionEmbeddings
from raydd.run_inputs import check_names, dataset_class_count, load_splits
from raydd.rundir import RunDir
from raydd.synthetic import SyntheticSet


@dataclass
class DriverInputs:
    syn: SyntheticSet  # the initial set of every class
    members: list[str]  # training ids the distillation can see, in the order one process lists them
    dataset: str
    caption_source: Callable[[], Iterable[CaptionChunk]]  # the real captions, read again when publishing
    whole: DistillState | None = None  # the whole-split state, when the driver read the split whole
    captions: CaptionEmbeddings | None = None  # and its caption embeddings
    class_sizes: dict[int, int] | None = None  # training rows per class, when read class by class


def reads_by_class(cfg: Config) -> bool:
    """A preprocessed source: the driver never holds the training split."""
    return dataset_class_count(cfg) is not None


def driver_inputs(cfg: Config, out: str, *, resume: bool, checks: Sequence[Callable] = (),
                  show_progress: bool = True) -> tuple[RunDir, DriverInputs]:
    """Checks first (an error leaves nothing behind), then the run directory and the driver's inputs."""
    if not reads_by_class(cfg):
        return _whole(cfg, out, resume=resume, checks=checks, show_progress=show_progress)
    check_names(cfg)
    syn, members, name, sizes = None, [], "", {}
    for c in partition_order(dataset_class_count(cfg)):
        splits, captions = load_inputs(cfg, load_splits(cfg, classes=[c]))
        preflight(cfg, splits, captions)
        for check in checks:
            check(splits)
        state = initial_state(cfg, splits, torch.device("cpu"), captions, classes=[c])
        syn = state.syn if syn is None else _with_class(syn, state.syn, c)
        members += state.pool.ids
        name, sizes[c] = splits.name, len(splits.train)
    run = RunDir(out)
    run.create_or_check(cfg, resume=resume)
    return run, DriverInputs(syn, members, name, lambda: _captions_by_class(cfg), class_sizes=sizes)


def driver_model_pool(cfg: Config, run: RunDir, inputs: DriverInputs, device: torch.device,
                      show_progress: bool) -> None:
    """Train (or read back) the run's trained model pool on ``device`` before the workers start."""
    from raydd.methods.model_pool import ResidentImages
    from raydd.pipeline.pool_rows import ClassPartitionImages

    syn = inputs.syn
    if inputs.whole is not None:
        source = ResidentImages(inputs.whole.pool)
    else:
        source = ClassPartitionImages(cfg, inputs.class_sizes, (syn.channels, *syn.image_size))
    spec = network_spec(cfg, syn.channels, syn.num_classes, syn.image_size)
    pool = ensure_model_pool(cfg, run, source, spec, bool(syn.meta["flip_ok"]), inputs.dataset, device,
                             show_progress=show_progress)
    if pool is not None:
        syn.meta["model_pool_seconds"] = round(pool.seconds, 3)


def _whole(cfg: Config, out: str, *, resume: bool, checks: Sequence[Callable],
           show_progress: bool) -> tuple[RunDir, DriverInputs]:
    run, splits, captions = open_run(cfg, out, resume=resume, checks=tuple(checks))
    state = initial_state(cfg, splits, torch.device("cpu"), captions)
    chunks = caption_chunks(splits, captions)
    return run, DriverInputs(state.syn, state.pool.ids, splits.name, lambda: chunks, whole=state, captions=captions)


def _with_class(syn: SyntheticSet, part: SyntheticSet, c: int) -> SyntheticSet:
    """``syn`` with class ``c``'s rows (images, caption embeddings, init ids) taken from ``part``."""
    rows = syn.class_rows(c)
    syn.images[rows] = part.images[rows]
    if syn.caption_emb is not None and part.caption_emb is not None:
        syn.caption_emb[rows] = part.caption_emb[rows]
    per_class = len(syn.init_ids) // syn.num_classes  # IPC x formation^2 decoded images
    ids = slice(c * per_class, (c + 1) * per_class)
    syn.init_ids[ids] = part.init_ids[ids]
    return syn


def _captions_by_class(cfg: Config) -> Iterator[CaptionChunk]:
    for c in partition_order(dataset_class_count(cfg)):
        splits, captions = load_inputs(cfg, load_splits(cfg, classes=[c]))
        yield from caption_chunks(splits, captions)


