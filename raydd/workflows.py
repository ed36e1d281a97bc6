"""Run-level steps on top of the core: evaluate a run directory, and the two reference baselines."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from raydd.artifacts import EVAL, EVAL_MODELS, EVAL_VAL
from raydd.config import Config
from raydd.data import DatasetSplits
from raydd.distill import finish
from raydd.run_inputs import check_names, load_splits, resolve_device
from raydd.errors import RunDirError
from raydd.evaluate import EvalJob, caption_only_accuracy, evaluate_images, protocol
from raydd.modalities import CaptionEmbeddings, embed_captions, embed_dataset_captions
from raydd.realpool import RealPool
from raydd.results import EvalResult
from raydd.rundir import RunDir
from raydd.storage import check_writable, remove
from raydd.synthetic import SyntheticSet

Runner = Callable[[list[EvalJob]], list[dict[str, Any]]]


def _test_tensors(splits: DatasetSplits, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = splits.test if split == "test" else splits.val
    if data.pixels_left_out:
        raise RuntimeError(f"the {split} split was read without its images")  # a caller's bug, not the user's
    return splits.normalize(data.images), data.labels


def check_compatible(syn: SyntheticSet, splits: DatasetSplits, where: str) -> None:
    if syn.class_names != splits.class_names:
        raise RunDirError(f"{where}: the synthetic set's classes differ from dataset {splits.name!r}'s")
    if (syn.channels, *syn.image_size) != (splits.channels, *splits.image_size):
        raise RunDirError(
            f"{where}: synthetic images are {syn.channels}x{syn.image_size[0]}x{syn.image_size[1]}, "
            f"dataset {splits.name!r} has {splits.channels}x{splits.image_size[0]}x{splits.image_size[1]}"
        )


def evaluate_set(syn: SyntheticSet, splits: DatasetSplits, cfg: Config, *, split: str = "test",
                 runner: Runner | None = None, show_progress: bool = True,
                 record_dir: str | None = None) -> EvalResult:
    """``record_dir``: keep each finished model there, and take the ones an interrupted call kept."""
    test_x, test_y = _test_tensors(splits, split)
    images, labels, captions = syn.training_set()  # decoded when the set is multi-formation
    result = evaluate_images(
        images, labels, test_x, test_y, num_classes=syn.num_classes, cfg=cfg.eval,
        seed=cfg.seed, device=resolve_device(cfg.device), flip_ok=splits.flip_ok, runner=runner,
        show_progress=show_progress, record_dir=record_dir,
    )
    if syn.caption_emb is not None:
        train = (images, labels, captions)
        _caption_figures(result, train, embed_captions(cfg, splits), splits, cfg, split, (test_x, test_y),
                         runner=runner, show_progress=show_progress, record_dir=record_dir)
    result.protocol = protocol(cfg.eval, split)
    result.preset = cfg.preset
    result.dataset = splits.name
    result.ipc = syn.ipc
    result.method = syn.meta.get("method")
    result.iterations = syn.meta.get("iterations")
    return result


TrainingSet = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images, labels, caption embeddings


def _caption_figures(result: EvalResult, train: TrainingSet, captions: CaptionEmbeddings | None,
                     splits: DatasetSplits, cfg: Config, split: str, test: tuple[torch.Tensor, torch.Tensor], *,
                     runner: Runner | None, show_progress: bool, epochs: int | None = None,
                     record_dir: str | None = None) -> None:
    """Add the image+caption accuracy of a caption-fused network, and the caption-only baseline beside it."""
    if captions is None:
        return
    test_t = captions.split("test" if split == "test" else "val")
    if captions.from_templates or test_t is None:
        # Class-name templates would hand the label to the classifier at test time.
        result.accuracy_image_caption = None
        result.caption_note = "captions are class-name templates: refused as a test-time input"
        return
    fused = fused_accuracy(train, splits, cfg, (*test, test_t), runner=runner, show_progress=show_progress,
                           epochs=epochs, record_dir=record_dir)
    only = caption_only_accuracy(captions.train, splits.train.labels, test_t, test[1], splits.num_classes,
                                 seed=cfg.seed)
    result.accuracy_image_caption = fused.accuracy
    result.caption_only = {"accuracy": only,
                           "model": "linear classifier on caption embeddings of the whole training split"}
    result.caption_encoder = captions.encoder


def fused_accuracy(train: TrainingSet, splits: DatasetSplits, cfg: Config,
                   test: tuple[torch.Tensor, torch.Tensor, torch.Tensor], *, runner: Runner | None = None,
                   show_progress: bool = True, epochs: int | None = None,
                   record_dir: str | None = None) -> EvalResult:
    """Caption-fused networks (shaped by cfg.fusion) trained on (x, y, t), tested on images + captions."""
    (train_x, train_y, train_t), (test_x, test_y, test_t) = train, test
    return evaluate_images(
        train_x, train_y, test_x, test_y, num_classes=splits.num_classes, cfg=cfg.eval, seed=cfg.seed,
        device=resolve_device(cfg.device), flip_ok=splits.flip_ok, runner=runner, show_progress=show_progress,
        models=[cfg.eval.model], captions=(train_t, test_t), fusion=cfg.fusion, epochs=epochs,
        record_dir=record_dir,
    )


def evaluate_run(run_dir: str, cfg: Config | None = None, *, split: str = "test", runner: Runner | None = None,
                 show_progress: bool = True) -> EvalResult:
    """Evaluate the synthetic set in ``run_dir`` and write eval.json (validation: eval_val.json)."""
    run = RunDir(run_dir)
    cfg = cfg or run.read_config()
    check_names(cfg)
    syn = SyntheticSet.load(run.path)
    check_writable(run.path)  # before the training whose result it must hold
    # The evaluated split's images; of a preprocessed training split only its labels and captions are read.
    splits = load_splits(cfg, pixels=("test",) if split == "test" else ("val",))
    check_compatible(syn, splits, run.path)
    models = run.file(EVAL_MODELS.format(split=split))  # a killed evaluation continues from the models it finished
    result = evaluate_set(syn, splits, cfg, split=split, runner=runner, show_progress=show_progress,
                          record_dir=models)
    run.write_json(EVAL if split == "test" else EVAL_VAL, result.to_json())
    remove(models)
    return result


def evaluate_unless_done(run_dir: str, cfg: Config, *, resume: bool, runner: Runner | None = None,
                         show_progress: bool = True) -> EvalResult:
    """A resumed run keeps the eval.json it already has; otherwise evaluate (the last stage of a run)."""
    run = RunDir(run_dir)
    if resume and run.has(EVAL):
        return EvalResult.from_json(run.read_json(EVAL), run.file(EVAL))
    return evaluate_run(run_dir, cfg, runner=runner, show_progress=show_progress)


def run_baseline(kind: str, cfg: Config, out: str, *, runner: Runner | None = None,
                 show_progress: bool = True) -> EvalResult:
    """``random``: a real subset of IPC images per class; ``full``: the whole training split.

    Both go through the same protocol as a synthetic set; ``full`` trains for ``eval.full_epochs``.
    """
    if kind not in ("random", "full"):
        raise RunDirError(f"unknown baseline kind {kind!r}; use random or full")
    check_names(cfg)
    device = resolve_device(cfg.device)
    splits = load_splits(cfg)
    run = RunDir(out)
    run.create_or_check(cfg, resume=False)
    run.write_config(cfg)
    start = time.perf_counter()
    if kind == "random":
        pool = RealPool.from_data(splits, splits.train, torch.device("cpu"))
        syn = SyntheticSet.initialise(pool, ipc=cfg.distill.ipc, init="real", seed=cfg.seed,
                                      class_names=splits.class_names, mean=splits.mean, std=splits.std)
        syn.meta.update({"method": "random", "dataset": splits.name, "init": "real", "flip_ok": splits.flip_ok,
                         "preset": cfg.preset, "enhancements": {}})
        run.write_members(syn.init_ids, splits.name)
        finish(run, syn)
        result = evaluate_set(syn, splits, cfg, runner=runner, show_progress=show_progress)
    else:
        test_x, test_y = _test_tensors(splits, "test")
        train_x = splits.normalize(splits.train.images)  # once: the whole split, shared by both networks
        captions = embed_dataset_captions(cfg, splits)  # before training, so a caption problem fails fast
        result = evaluate_images(
            train_x, splits.train.labels, test_x, test_y,
            num_classes=splits.num_classes, cfg=cfg.eval, seed=cfg.seed, device=device, flip_ok=splits.flip_ok,
            epochs=cfg.eval.full_epochs, models=[cfg.eval.model], runner=runner, show_progress=show_progress,
        )
        run.write_members(list(splits.train.ids), splits.name)
        if captions is not None:
            train = (train_x, splits.train.labels, captions.train)
            _caption_figures(result, train, captions, splits, cfg, "test", (test_x, test_y), runner=runner,
                             show_progress=show_progress, epochs=cfg.eval.full_epochs)
        result.protocol = protocol(cfg.eval, "test", epochs=cfg.eval.full_epochs)
        result.preset, result.dataset, result.ipc, result.method = cfg.preset, splits.name, None, "full"
    result.baseline = kind
    result.total_seconds = time.perf_counter() - start
    run.write_json(EVAL, result.to_json())
    return result
