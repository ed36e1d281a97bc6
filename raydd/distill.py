"""Distillation in one process, and the setup both drivers share (this one and Ray Train's).

Both drivers check the config and the data before anything is written, open the run directory, build
the initial synthetic set and the trained model pool, then hand the iterations to the one loop in
:mod:`raydd.distill_loop`, and publish the final set the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch

from raydd.artifacts import CAPTIONS, GRID, INIT_GRID, MEMBERS
from raydd.config import Config
from raydd.data import DatasetSplits
from raydd.distill_loop import LoopBackend, distill_loop, run_clock
from raydd.formation import check_factor
from raydd.methods import dm_setup, method_class
from raydd.methods.dm import check_object_masks
from raydd.methods.model_pool import ResidentImages
from raydd.errors import ConfigError
from raydd.models import get_model
from raydd.modalities import CaptionEmbeddings, attach_masks, embed_captions, embed_dataset_captions
from raydd.realpool import RealPool
from raydd.grid import write_grid
from raydd.run_inputs import check_names, load_splits, resolve_device
from raydd.rundir import RunDir
from raydd.synthetic import SyntheticSet


CaptionChunk = tuple[Sequence[str | None], torch.Tensor]  # real captions and their embeddings, row by row


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


def init_choice_embeddings(cfg: Config, splits: DatasetSplits,
                           captions: CaptionEmbeddings | None) -> torch.Tensor | None:
    """The training captions' embeddings a caption-aware ``distill.init_choice`` picks by (None for random).

    The run's own embeddings when it has them; else the dataset's, embedded for this choice alone
    (an image-only run stays image-only: nothing else sees them).
    """
    choice = cfg.distill.init_choice
    if choice == "random":
        return None
    source = captions if captions is not None and not captions.from_templates else embed_dataset_captions(cfg, splits)
    if source is None or source.train is None:
        raise ConfigError(f"distill.init_choice={choice} picks the initial images by their captions, and dataset "
                          f"{splits.name!r} has none; use distill.init_choice=random or a captioned dataset")
    return source.train


def initial_state(cfg: Config, splits: DatasetSplits, device: torch.device,
                  captions: CaptionEmbeddings | None = None, classes: list[int] | None = None) -> DistillState:
    """Real pool (only ``classes`` when given) and the initial synthetic set with its metadata."""
    data, emb = splits.train, captions.train if captions is not None else None
    choice_emb = init_choice_embeddings(cfg, splits, captions)
    if classes is not None:
        by_class = data.indices_by_class()
        mine = torch.cat([by_class[c] for c in classes]).sort().values
        data, emb = data.subset(mine), emb[mine] if emb is not None else None
        choice_emb = choice_emb[mine] if choice_emb is not None else None
    pool = RealPool.from_data(splits, data, device, caption_emb=emb)
    syn = SyntheticSet.initialise(pool, ipc=cfg.distill.ipc, init=cfg.distill.init, seed=cfg.seed,
                                  class_names=splits.class_names, mean=splits.mean, std=splits.std, classes=classes,
                                  isolate_fill=cfg.mm.fill if cfg.mm.mask_init else None,
                                  formation=cfg.dm.formation if cfg.distill.method == "dm" else 1,
                                  choice=cfg.distill.init_choice, choice_emb=choice_emb)
    syn.meta.update({
        "method": cfg.distill.method,
        "dataset": splits.name,
        "init": cfg.distill.init,
        "init_choice": cfg.distill.init_choice,
        "flip_ok": splits.flip_ok,
        "preset": cfg.preset,
        "enhancements": cfg.mm.switches(),
        "multimodal": asdict(cfg.mm),
        "fusion": asdict(cfg.fusion),
        "caption_encoder": captions.encoder if captions is not None else None,
        "captions_from_templates": bool(captions and captions.from_templates),
    })
    return DistillState(splits, pool, syn)


def build_distiller(cfg: Config, state: DistillState, device: torch.device, classes: list[int] | None = None,
                    **kwargs):
    cls = method_class(cfg.distill.method)
    section = getattr(cfg, cls.config_section) if cls.config_section else None
    return cls(cfg.distill, state.pool, state.syn, classes=classes, seed=cfg.seed, device=device,
               flip_ok=state.splits.flip_ok, mm=cfg.mm, fusion=cfg.fusion, section=section, **kwargs)


def preflight(cfg: Config, splits: DatasetSplits, captions: CaptionEmbeddings | None) -> None:
    """Checks that need the data's shape, before anything is written (the bank's memory, object masks)."""
    caption_dim = captions.train.shape[1] if captions is not None else 0
    for name in dict.fromkeys([cfg.distill.model, cfg.eval.model, *cfg.eval.cross_arch]):
        # A network that cannot take the data's image size fails here, not in a worker after the start.
        get_model(name, channels=splits.channels, num_classes=splits.num_classes, image_size=splits.image_size)
    if cfg.distill.method == "dm":
        check_factor(cfg.dm.formation, splits.image_size)
        if cfg.mm.mfa and cfg.mm.mfa_level == "feature":
            check_object_masks(splits.train.masks, splits.train.indices_by_class(), splits.class_names)
    dm_setup.check_memory(cfg, splits.channels, splits.num_classes, splits.image_size, caption_dim)


def model_pool(cfg: Config, run: RunDir, state: DistillState, device: torch.device, show_progress: bool):
    """The trained model pool (None unless dm.pool=trained), from the process that sees every class."""
    syn = state.syn
    spec = dm_setup.network_spec(cfg, syn.channels, syn.num_classes, syn.image_size)
    pool = dm_setup.ensure_model_pool(cfg, run, ResidentImages(state.pool), spec, state.splits.flip_ok,
                                      state.splits.name, device, show_progress=show_progress)
    if pool is not None:
        syn.meta["model_pool_seconds"] = round(pool.seconds, 3)
    return pool


def open_run(cfg: Config, out: str, *, resume: bool, splits: DatasetSplits | None = None,
             checks: tuple = ()) -> tuple[RunDir, DatasetSplits, CaptionEmbeddings | None]:
    """Names, data and ``checks(splits)`` first (an error leaves nothing behind), then the run directory."""
    check_names(cfg)
    splits, captions = load_inputs(cfg, splits)
    preflight(cfg, splits, captions)
    for check in checks:
        check(splits)
    run = RunDir(out)
    run.create_or_check(cfg, resume=resume)
    return run, splits, captions


def record_start(cfg: Config, run: RunDir, syn: SyntheticSet, members: list[str], dataset: str, resume: bool) -> float:
    """Write a new run's config, members and initial picture; return a resumed run's seconds so far."""
    if not resume or not run.has(MEMBERS):
        run.write_config(cfg)
        run.write_members(members, dataset)
        write_initial(run, syn)
    return run.seconds_at(run.checkpoint_iteration()) if resume else 0.0


def publish(run: RunDir, syn: SyntheticSet, caption_source: Iterable[CaptionChunk], *,
            iterations: int, seconds: float, **meta) -> SyntheticSet:
    """The final set, its picture and caption bank: what both drivers leave in the run directory."""
    syn.meta.update({"iterations": iterations, **meta, "distill_seconds": round(seconds, 3)})
    finish(run, syn)
    write_caption_bank(run, syn, caption_source)
    return syn


def run_distillation(
    cfg: Config,
    out: str,
    *,
    resume: bool = False,
    splits: DatasetSplits | None = None,
    show_progress: bool = True,
    backend: LoopBackend | None = None,
) -> SyntheticSet:
    """Distill into ``out`` in this process; with ``resume`` continue from its last checkpoint."""
    started = time.time()  # the run's clock includes loading, the model pool and the bank
    device = resolve_device(cfg.device)
    run, splits, captions = open_run(cfg, out, resume=resume, splits=splits)
    state = initial_state(cfg, splits, device, captions)
    trained = model_pool(cfg, run, state, device, show_progress)
    extra = {"model_pool": trained} if trained is not None else {}
    distiller = build_distiller(cfg, state, device, **extra)
    clock = run_clock(started, record_start(cfg, run, state.syn, state.pool.ids, splits.name, resume))
    done = distill_loop(distiller, run, cfg.distill, state.syn, backend or LoopBackend(), clock,
                        show_progress=show_progress)
    return publish(run, distiller.export(), caption_chunks(splits, captions), iterations=done, seconds=clock())


def write_initial(run: RunDir, syn: SyntheticSet) -> None:
    """The starting point, for the report's before/after view."""
    write_grid(run.file(INIT_GRID), syn.denormalized(), syn.labels, syn.class_names,
               title=f"initial ({syn.meta.get('init', '')}) ipc={syn.ipc}")


def caption_chunks(splits: DatasetSplits, captions: CaptionEmbeddings | None) -> list[CaptionChunk]:
    """The real training captions a caption bank is chosen from (none for template or missing captions)."""
    if captions is None or captions.from_templates or splits.train.captions is None:
        return []
    return [(splits.train.captions, captions.train)]


def write_caption_bank(run: RunDir, syn: SyntheticSet, caption_source: Iterable[CaptionChunk]) -> None:
    """captions.json: for each synthetic caption embedding, the nearest real caption (text + embedding).

    Lets the report print a sentence beside each synthetic image without shipping every real caption.
    ``caption_source`` may come in chunks (a driver reading class by class): the nearest over all of
    them, the earlier chunk winning a tie, is what one argmax over their concatenation picks.
    """
    if syn.caption_emb is None:
        return
    u = torch.nn.functional.normalize(syn.caption_emb.float(), dim=1)
    best = torch.full((len(u),), -float("inf"))
    texts: list[str | None] = [None] * len(u)
    embeddings = torch.zeros_like(syn.caption_emb, dtype=torch.float32)
    for chunk_texts, chunk_emb in caption_source:
        if len(chunk_texts) == 0:
            continue
        similarity = u @ torch.nn.functional.normalize(chunk_emb.float(), dim=1).T
        value, index = similarity.max(dim=1)
        for row in torch.nonzero(value > best).flatten().tolist():
            best[row] = value[row]
            texts[row] = chunk_texts[int(index[row])]
            embeddings[row] = chunk_emb[int(index[row])].float()
    if not torch.isfinite(best).all():
        return  # no real caption was offered
    bank = {"captions": texts, "caption_emb": embeddings.tolist(),
            "source": "nearest real training caption of each synthetic caption embedding (cosine)"}
    run.write_json(CAPTIONS, bank)


def finish(run: RunDir, syn: SyntheticSet) -> None:
    syn.save(run.path)
    write_grid(run.file(GRID), syn.denormalized(), syn.labels, syn.class_names,
               title=f"{syn.meta.get('method', '')} {syn.meta.get('dataset', '')} ipc={syn.ipc}")
