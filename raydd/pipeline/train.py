"""Class-sharded distillation with Ray Train.

K ``TorchTrainer`` workers each own a contiguous range of classes, read only those classes' images,
and draw the iteration's network and batches from the shared run seed, so together they compute what
one process computes (DM exactly per class; DC/DSA exchange the synthetic images once per outer step
because the inner network training reads all classes, and, for a batch-norm network, the real images
that set its statistics). At each checkpoint the shards are combined with one all-reduce and rank 0
writes the run directory's checkpoint (the same format as a single-process run) and reports it to Ray
Train. A worker that dies is restarted by ``FailureConfig`` and continues from the last checkpoint; the
per-iteration seeds make the replayed iterations identical.
"""

from __future__ import annotations

import logging
import math
import sys
import tempfile
import time
from typing import Any, Callable

import torch

from raydd.artifacts import CHECKPOINT
from raydd.config import Config, config_from_dict
from raydd.distill import build_distiller, initial_state, load_inputs, publish, record_start
from raydd.distill_loop import LoopBackend, distill_loop, run_clock
from raydd.errors import ConfigError, RayddError
from raydd.methods import method_class
from raydd.methods.dm_setup import load_model_pool, network_spec, uses_trained_pool
from raydd.pipeline import cluster
from raydd.pipeline.cluster import available_cpus, init_ray
from raydd.pipeline.driver_inputs import driver_inputs, driver_model_pool
from raydd.pipeline.sharding import assemble, shard_classes, sum_across_workers
from raydd.progress import NoProgress, Progress, follow_metrics
from raydd.run_inputs import dataset_class_count, load_splits
from raydd.rundir import RunDir
from raydd.storage import absolute, write_failure
from raydd.synthetic import SyntheticSet


class RayTrainBackend(LoopBackend):
    """One Ray Train worker owning a shard of the classes: sums with the others, rank 0 writes."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world
        self.writer = rank == 0

    def restore(self, run: RunDir) -> tuple[dict[str, torch.Tensor], int] | None:
        """Ray's restored checkpoint if this is a restart, else the run directory's (a --resume)."""
        import ray.train

        restored = ray.train.get_checkpoint()
        if restored is not None:
            with restored.as_directory() as folder:
                return RunDir(folder).load_checkpoint()
        return run.load_checkpoint()

    def reduce(self, metrics: dict[str, torch.Tensor], shard_weight: float) -> dict[str, float]:
        names = sorted(metrics)  # the same order on every worker: one all-reduce for every term
        values = torch.stack([metrics[name].detach().float().reshape(()) * shard_weight for name in names])
        total = sum_across_workers(values).tolist()
        return {name: total[names.index(name)] for name in metrics}

    def gather(self, distiller) -> dict[str, torch.Tensor]:
        """The whole run's state, assembled from every worker's rows (all tensors are per row)."""
        rows = distiller.own_rows.cpu()
        return {name: assemble(tensor, rows).cpu() for name, tensor in sorted(distiller.state_dict().items())}

    def checkpoint(self, run: RunDir, tensors: dict[str, torch.Tensor], done: int, row: dict) -> None:
        import ray.train

        if not self.writer:
            ray.train.report(row)
            return
        run.save_checkpoint(tensors, done, seconds=row["seconds"])
        with tempfile.TemporaryDirectory() as folder:
            RunDir(folder).save_checkpoint(tensors, done, seconds=row["seconds"])
            try:  # Ray Train copies the checkpoint into the run directory's ray/ storage
                ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(folder))
            except OSError as exc:
                raise write_failure(f"{run.path}/ray", exc) from None

    def progress(self, desc: str, start: int, total: int, show: bool) -> Progress:
        # The driver shows the run's progress from metrics.jsonl (``follow_metrics``): a worker's output
        # would reach the console through Ray's log forwarding, a line per redraw.
        return NoProgress()


def quiet_train_reports() -> None:
    """Ray Train logs every ``report`` at INFO under a logger named by its file, which its own log-level
    setting does not reach; the reports are raydd's checkpoints, already in metrics.jsonl."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray Train layout: its lines stay
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


class _RayddErrorsStayOneLine(logging.Filter):
    """Ray Train logs the traceback of whatever a training function raised, on the worker, before the
    driver sees it. A raydd error (a full disk, a cut artifact) reaches the driver, which reports it in
    one line, so its traceback is left out here; any other error keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not isinstance(sys.exc_info()[1], RayddError)


def quiet_raydd_error_tracebacks() -> None:
    try:
        from ray.train.v2._internal import util
    except ImportError:  # another Ray Train layout: its lines stay
        return
    logger = logging.getLogger(util.__name__)
    if not any(isinstance(f, _RayddErrorsStayOneLine) for f in logger.filters):
        logger.addFilter(_RayddErrorsStayOneLine())


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: read this shard's classes, then the one distillation loop."""
    import ray.train
    import ray.train.torch

    torch.set_num_threads(config["threads"])
    quiet_train_reports()
    quiet_raydd_error_tracebacks()
    cfg = config_from_dict(config["cfg"])
    run = RunDir(config["out"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device() if config["use_gpu"] else torch.device("cpu")

    # A preprocessed (Parquet) dataset is partitioned by label: read only this worker's classes.
    count = dataset_class_count(cfg)
    if count is not None:
        classes = shard_classes(count, world)[rank]
        splits, captions = load_inputs(cfg, load_splits(cfg, classes=classes))
    else:
        splits, captions = load_inputs(cfg)
        classes = shard_classes(splits.num_classes, world)[rank]
    state = initial_state(cfg, splits, device, captions, classes=classes)
    kwargs = {}
    if world > 1 and method_class(cfg.distill.method).needs_sync:
        kwargs["share_rows"] = lambda tensor, rows: assemble(tensor, rows).to(tensor.device)
    syn = state.syn
    syn.init_ids = list(config["init_ids"])  # every class's, as the driver drew them (snapshots carry them)
    trained = load_model_pool(cfg, run, network_spec(cfg, syn.channels, syn.num_classes, syn.image_size),
                              state.splits.name)
    if trained is not None:
        kwargs["model_pool"] = trained
    distiller = build_distiller(cfg, state, device, classes=classes, **kwargs)
    backend = config["backend"](rank=rank, world=world)
    distill_loop(distiller, run, cfg.distill, syn, backend, run_clock(config["started"], config["seconds_before"]),
                 show_progress=config["show_progress"])


def raydd_error_from_workers(exc: BaseException) -> RayddError | None:
    """The raydd error (a full disk, a cut artifact) a Ray Train worker raised, unwrapped from Ray's
    worker-group error, so the command ends in its one line; None for anything else (then Ray's own
    error, with its traceback, is the right report)."""
    failures = getattr(exc, "worker_failures", None) or {}
    for rank in sorted(failures):
        cause, seen = failures[rank], set()
        while cause is not None and id(cause) not in seen:
            if isinstance(cause, RayddError):
                return cause
            seen.add(id(cause))
            cause = getattr(cause, "cause", None) or cause.__cause__
    return None


def distill_with_ray(
    cfg: Config,
    out: str,
    *,
    workers: int = 1,
    resume: bool = False,
    address: str | None = None,
    max_failures: int = 2,
    show_progress: bool = True,
    backend: Callable[..., RayTrainBackend] = RayTrainBackend,
) -> SyntheticSet:
    """Distill with ``workers`` Ray Train workers, each owning a shard of the classes.

    ``backend(rank=, world=)`` makes each worker's loop backend (a subclass may add behaviour, e.g.
    inject a fault, in tests).
    """
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started = time.time()

    def check_workers(splits) -> None:
        if not 1 <= workers <= splits.num_classes:
            raise ConfigError(f"--workers must be between 1 and the number of classes ({splits.num_classes}), "
                              f"got {workers}")

    run, inputs = driver_inputs(cfg, out, resume=resume, checks=(check_workers,))
    want_gpu = cfg.device.startswith("cuda") or cfg.device == "auto"
    init_ray(address)
    cluster.ray_log_in(out)
    # An autoscaling cluster may have no GPU node yet: count what it can scale to.
    gpus = cluster.obtainable_resources().get("GPU", 0.0)
    use_gpu = want_gpu and gpus >= workers
    if cfg.device.startswith("cuda") and not use_gpu:
        raise ConfigError(f"device {cfg.device!r}: the Ray cluster offers {gpus:g} GPUs for {workers} workers")
    threads = max(1, math.floor(available_cpus() / workers)) if not use_gpu else 1
    cluster.check_resources(workers, cpus_per_worker=1 if use_gpu else threads, gpus_per_worker=1 if use_gpu else 0)

    if uses_trained_pool(cfg):
        # Trained once here, read by every worker; on the run's device where the driver has it, as --no-ray would.
        pool_device = torch.device("cuda") if use_gpu and torch.cuda.is_available() else torch.device("cpu")
        driver_model_pool(cfg, run, inputs, pool_device, show_progress)
    seconds_before = record_start(cfg, run, inputs.syn, inputs.members, inputs.dataset, resume)

    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cfg": cfg.to_dict(), "out": absolute(run.path),
                           "threads": threads, "use_gpu": use_gpu, "backend": backend,
                           "show_progress": show_progress, "started": started, "seconds_before": seconds_before,
                           "init_ids": inputs.syn.init_ids},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": 1 if use_gpu else threads}),
        run_config=RunConfig(name="distill", storage_path=absolute(f"{run.path}/ray"),
                             failure_config=FailureConfig(max_failures=max_failures),
                             # Ray Train's own INFO lines (resources, reports) stay in Ray's session logs.
                             logging_config=LoggingConfig(log_level="WARNING")),
    )
    total = cfg.distill.iterations or method_class(cfg.distill.method).default_iterations
    with follow_metrics(run, f"{cfg.distill.method} ipc{cfg.distill.ipc}", run.checkpoint_iteration(), total,
                        show_progress):
        try:
            result = trainer.fit()
        except Exception as exc:  # Ray Train wraps what a worker raised; a raydd error is shown as itself
            raise raydd_error_from_workers(exc) or exc
    if result.error is not None:
        raise RayddError(f"distillation failed on a Ray worker: {result.error}")
    loaded = run.load_checkpoint()
    if loaded is None:
        raise RayddError(f"{run.file(CHECKPOINT)}: the workers finished without a final checkpoint")
    tensors, done = loaded
    syn = inputs.syn
    syn.images = tensors["images"]
    if "captions" in tensors:
        syn.caption_emb = tensors["captions"]
    return publish(run, syn, inputs.caption_source(), iterations=done,
                   seconds=time.time() - started + seconds_before, workers=workers)
