"""Run a distillation from a resolved config into a run directory (the plain-PyTorch driver).

The same functions are called by the CLI, by jobs/ and by the Ray Train workers; here the loop owns
progress, metrics, checkpoints and the final artifacts.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch

from raydd.artifacts import CAPTIONS, GRID, INIT_GRID, MEMBERS
from raydd.config import Config
from raydd.data import DatasetSplits, load_dataset
from raydd.data.loader import parquet_location
from raydd.data.parquet import is_preprocessed_dir, read_manifest, read_parquet_splits
from raydd.errors import ConfigError
from raydd.formation import check_factor
from raydd.methods import dm_setup, method_class
from raydd.modalities import CaptionEmbeddings, attach_masks, embed_captions
from raydd.models import available_models
from raydd.progress import progress_bar
from raydd.realpool import RealPool
from raydd.report.grid import write_grid
from raydd.rundir import RunDir
from raydd.synthetic import SyntheticSet


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def data_location(cfg: Config) -> str | None:
    """The preprocessed (Parquet) directory the run reads, or None when it reads its source directly.

    A run whose preprocessing stage wrote ``data.prepared`` reads that copy while it exists; if it
    was deleted since, the source itself gives the same rows.
    """
    d = cfg.data
    if d.prepared and is_preprocessed_dir(d.prepared.removeprefix("parquet:")):
        return d.prepared.removeprefix("parquet:")
    return parquet_location(d.name)


def load_splits(cfg: Config, classes: list[int] | None = None) -> DatasetSplits:
    """The run's dataset; with ``classes``, a preprocessed (Parquet) dataset reads only those partitions."""
    d = cfg.data
    location = data_location(cfg)
    if location is not None:
        splits = read_parquet_splits(location, classes=classes, image_size=d.image_size,
                                     val_fraction=d.val_fraction, seed=cfg.seed)
        return splits if parquet_location(d.name) is not None else replace(splits, name=d.name)
    return load_dataset(d.name, root=d.root, val_fraction=d.val_fraction, seed=cfg.seed,
                        image_size=d.image_size, mask_threshold=d.mask_threshold)


def dataset_class_count(cfg: Config) -> int | None:
    """Number of classes of a preprocessed dataset, read from its manifest alone (None otherwise)."""
    location = data_location(cfg)
    return len(read_manifest(location)["classes"]) if location is not None else None


def check_names(cfg: Config) -> None:
    """Fail on unknown method/model names before anything is written."""
    method_class(cfg.distill.method)
    for name in [cfg.distill.model, cfg.eval.model, *cfg.eval.cross_arch]:
        if name not in available_models():
            raise ConfigError(f"unknown model {name!r}; available: {', '.join(available_models())}")


@dataclass
class DistillState:
    splits: DatasetSplits
    pool: RealPool
    syn: SyntheticSet


def load_inputs(cfg: Config, splits: DatasetSplits | None = None) -> tuple[DatasetSplits, CaptionEmbeddings | None]:
    """The dataset with the masks and caption embeddings the switches need (errors before any write)."""
    splits = splits if splits is not None else load_splits(cfg)
    splits = attach_masks(cfg, splits)
    return splits, embed_captions(cfg, splits)


def prepare(cfg: Config, splits: DatasetSplits, device: torch.device, captions: CaptionEmbeddings | None = None,
            classes: list[int] | None = None) -> DistillState:
    """Real pool (only ``classes`` when given) and the initial synthetic set with its metadata."""
    data, emb = splits.train, captions.train if captions is not None else None
    if classes is not None:
        by_class = data.indices_by_class()
        mine = torch.cat([by_class[c] for c in classes]).sort().values
        data, emb = data.subset(mine), emb[mine] if emb is not None else None
    pool = RealPool.from_data(splits, data, device, caption_emb=emb)
    syn = SyntheticSet.initialise(pool, ipc=cfg.distill.ipc, init=cfg.distill.init, seed=cfg.seed,
                                  class_names=splits.class_names, mean=splits.mean, std=splits.std, classes=classes,
                                  isolate_fill=cfg.mm.fill if cfg.mm.mask_init else None,
                                  formation=cfg.dm.formation if cfg.distill.method == "dm" else 1)
    syn.meta.update({
        "method": cfg.distill.method,
        "dataset": splits.name,
        "init": cfg.distill.init,
        "flip_ok": splits.flip_ok,
        "preset": cfg.preset,
        "enhancements": cfg.mm.switches(),
        "multimodal": asdict(cfg.mm),
        "caption_encoder": captions.encoder if captions is not None else None,
        "captions_from_templates": bool(captions and captions.from_templates),
    })
    return DistillState(splits, pool, syn)


def build_distiller(cfg: Config, state: DistillState, device: torch.device, classes: list[int] | None = None,
                    **kwargs):
    cls = method_class(cfg.distill.method)
    section = getattr(cfg, cls.config_section) if cls.config_section else None
    return cls(cfg.distill, state.pool, state.syn, classes=classes, seed=cfg.seed, device=device,
               flip_ok=state.splits.flip_ok, mm=cfg.mm, section=section, **kwargs)


def preflight(cfg: Config, splits: DatasetSplits, captions: CaptionEmbeddings | None) -> None:
    """Checks that need the data's shape, before anything is written (the bank's memory)."""
    caption_dim = captions.train.shape[1] if captions is not None else 0
    if cfg.distill.method == "dm":
        check_factor(cfg.dm.formation, splits.image_size)
    dm_setup.check_memory(cfg, splits.channels, splits.num_classes, splits.image_size, caption_dim)


def model_pool(cfg: Config, run: RunDir, state: DistillState, device: torch.device, show_progress: bool):
    """The trained model pool (None unless dm.pool=trained), from the process that sees every class."""
    syn = state.syn
    spec = dm_setup.network_spec(cfg, syn.channels, syn.num_classes, syn.image_size)
    pool = dm_setup.ensure_model_pool(cfg, run, state.pool, spec, state.splits.flip_ok, state.splits.name, device,
                                      show_progress=show_progress)
    if pool is not None:
        syn.meta["model_pool_seconds"] = round(pool.seconds, 3)
    return pool


def run_distillation(
    cfg: Config,
    out: str,
    *,
    resume: bool = False,
    splits: DatasetSplits | None = None,
    show_progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> SyntheticSet:
    """Distill into ``out``; with ``resume`` continue from its last checkpoint.

    ``on_step(iteration)`` is called after each finished iteration (used to simulate a kill in tests).
    """
    started = time.perf_counter()  # the run's clock includes loading, the model pool and the bank
    check_names(cfg)
    device = resolve_device(cfg.device)
    splits, captions = load_inputs(cfg, splits)  # data errors surface before any write
    preflight(cfg, splits, captions)
    run = RunDir(out)
    run.prepare(cfg, resume=resume)
    state = prepare(cfg, splits, device, captions)
    trained = model_pool(cfg, run, state, device, show_progress)
    distiller = build_distiller(cfg, state, device, model_pool=trained) if trained is not None \
        else build_distiller(cfg, state, device)
    total = distiller.iterations

    start_iteration = 0
    checkpoint = run.load_checkpoint() if resume else None
    if checkpoint is not None:
        tensors, done = checkpoint
        distiller.load_state_dict(tensors)
        start_iteration = done
    if resume:
        run.truncate_metrics(start_iteration)
    if not resume or not run.has(MEMBERS):
        run.write_config(cfg)
        run.write_members(state.pool.ids, splits.name)
        write_initial(run, state.syn)

    t0 = started - (run.seconds_at(start_iteration) if resume else 0.0)
    snapshots = set(cfg.distill.snapshots)
    bar = progress_bar(range(start_iteration, total), desc=f"{cfg.distill.method} ipc{cfg.distill.ipc}",
                       total=total, initial=start_iteration, disable=not show_progress)
    for iteration in bar:
        metrics = distiller.step(iteration)
        done = iteration + 1
        if done % cfg.distill.log_every == 0 or done == total:
            row = {"iteration": done, **{k: float(v) for k, v in metrics.items()},
                   "seconds": round(time.perf_counter() - t0, 3)}
            run.log_metrics(row)
            bar.set_postfix(loss=f"{row['loss']:.4g}")
        if done % cfg.distill.checkpoint_every == 0 or done == total:
            run.save_checkpoint(distiller.state_dict(), done, seconds=time.perf_counter() - t0)
        if done in snapshots:
            write_snapshot(run, state.syn, distiller.state_dict(), done, time.perf_counter() - t0)
        if on_step is not None:
            on_step(done)

    syn = distiller.export()
    syn.meta["iterations"] = total
    syn.meta["distill_seconds"] = round(time.perf_counter() - t0, 3)
    finish(run, syn)
    write_caption_bank(run, syn, splits, captions)
    return syn


def write_snapshot(run: RunDir, syn: SyntheticSet, tensors: dict[str, torch.Tensor], iteration: int,
                   seconds: float) -> None:
    """The set at ``iteration`` as a loadable synthetic set (``raydd evaluate RUN/snapshots/iteration-N``)."""
    snap = replace(syn, images=tensors["images"], caption_emb=tensors.get("captions", syn.caption_emb),
                   meta={**syn.meta, "iterations": iteration, "distill_seconds": round(seconds, 3)})
    snap.save(run.snapshot_dir(iteration))


def write_initial(run: RunDir, syn: SyntheticSet) -> None:
    """The starting point, for the report's before/after view."""
    write_grid(run.file(INIT_GRID), syn.denormalized(), syn.labels, syn.class_names,
               title=f"initial ({syn.meta.get('init', '')}) ipc={syn.ipc}")


def write_caption_bank(run: RunDir, syn: SyntheticSet, splits: DatasetSplits, captions: CaptionEmbeddings | None) -> None:
    """captions.json: for each synthetic caption embedding, the nearest real caption (text + embedding).

    Lets the report print a sentence beside each synthetic image without shipping every real caption.
    """
    if syn.caption_emb is None or captions is None or captions.from_templates or splits.train.captions is None:
        return
    u = torch.nn.functional.normalize(syn.caption_emb.float(), dim=1)
    t = torch.nn.functional.normalize(captions.train.float(), dim=1)
    nearest = (u @ t.T).argmax(dim=1).tolist()
    bank = {"captions": [splits.train.captions[i] for i in nearest],
            "caption_emb": captions.train[nearest].tolist(),
            "source": "nearest real training caption of each synthetic caption embedding (cosine)"}
    run.write_json(CAPTIONS, bank)


def finish(run: RunDir, syn: SyntheticSet) -> None:
    syn.save(run.path)
    write_grid(run.file(GRID), syn.denormalized(), syn.labels, syn.class_names,
               title=f"{syn.meta.get('method', '')} {syn.meta.get('dataset', '')} ipc={syn.ipc}")
