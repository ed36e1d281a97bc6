"""Class-sharded distillation with Ray Train.

K ``TorchTrainer`` workers each own a contiguous range of classes, read only those classes' images,
and draw the iteration's network and batches from the shared run seed, so together they compute what
one process computes (DM exactly per class; DC/DSA exchange the synthetic images once per outer step
because the inner network training reads all classes). At each checkpoint the shards are combined with
one all-reduce and rank 0 writes the run directory's checkpoint (the same format as a single-process
run) and reports it to Ray Train. A worker that dies is restarted by ``FailureConfig`` and continues
from the last checkpoint; the per-iteration seeds make the replayed iterations identical.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from typing import Any

import torch

from raydd.artifacts import MEMBERS
from raydd.config import Config, config_from_dict
from raydd.distill import (build_distiller, check_names, dataset_class_count, finish, load_inputs, load_splits,
                            model_pool, preflight, prepare, write_caption_bank, write_initial, write_snapshot)
from raydd.errors import ConfigError, RayddError
from raydd.methods import method_class
from raydd.methods.dm_setup import load_model_pool, network_spec, uses_trained_pool
from raydd.pipeline import cluster
from raydd.pipeline.cluster import available_cpus, init_ray
from raydd.pipeline.sharding import assemble, shard_classes, sum_across_workers
from raydd.rundir import CHECKPOINT, RunDir
from raydd.synthetic import SyntheticSet


def _shard_state(distiller) -> dict[str, torch.Tensor]:
    """The whole run's optimiser state, assembled from every worker's rows (all tensors are per row)."""
    rows = distiller.own_rows.cpu()
    return {name: assemble(tensor, rows).cpu() for name, tensor in sorted(distiller.state_dict().items())}


def _load_start(run: RunDir) -> tuple[dict[str, torch.Tensor], int] | None:
    """Ray's restored checkpoint if this is a restart, else the run directory's (a --resume)."""
    import ray.train

    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            return RunDir(folder).load_checkpoint()
    return run.load_checkpoint()


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch

    torch.set_num_threads(config["threads"])
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
    state = prepare(cfg, splits, device, captions, classes=classes)
    kwargs = {}
    if world > 1 and method_class(cfg.distill.method).needs_sync:
        kwargs["sync"] = lambda tensor: tensor.data.copy_(assemble(tensor, own_rows).to(tensor.device))
    syn = state.syn
    syn.init_ids = list(config["init_ids"])  # every class's, as the driver drew them (snapshots carry them)
    trained = load_model_pool(cfg, run, network_spec(cfg, syn.channels, syn.num_classes, syn.image_size),
                              state.splits.name)
    if trained is not None:
        kwargs["model_pool"] = trained
    distiller = build_distiller(cfg, state, device, classes=classes, **kwargs)
    own_rows = distiller.own_rows
    total = distiller.iterations

    start = 0
    loaded = _load_start(run)
    if loaded is not None:
        tensors, start = loaded
        distiller.load_state_dict(tensors)
    fail_at = config.get("fail_once_at")
    # Seconds since the driver started (Ray Train start-up included), continued across a resume.
    t0 = time.perf_counter() - (time.time() - config["started"]) - config["seconds_before"]
    snapshots = set(cfg.distill.snapshots)
    loop_started = time.perf_counter()
    for iteration in range(start, total):
        metrics = distiller.step(iteration)
        done = iteration + 1
        if fail_at is not None and done == fail_at and rank == world - 1 and not run.has("fault-injected"):
            run.write_json("fault-injected", {"iteration": done, "rank": rank})
            os._exit(1)  # a hard worker death, as a preempted node would look
        log_now = done % cfg.distill.log_every == 0 or done == total
        checkpoint_now = done % cfg.distill.checkpoint_every == 0 or done == total
        if done in snapshots:  # every rank takes part in assembling the set; rank 0 writes it
            snapshot = _shard_state(distiller)
            if rank == 0:
                write_snapshot(run, state.syn, snapshot, done, time.perf_counter() - t0)
        if not (log_now or checkpoint_now):
            continue
        loss = float(sum_across_workers(metrics["loss"] * distiller.shard_weight()))
        row = {"iteration": done, "loss": loss, "seconds": round(time.perf_counter() - t0, 3)}
        if log_now and rank == 0:
            run.log_metrics(row)
            eta = (time.perf_counter() - loop_started) / max(1, done - start) * (total - done)
            print(f"raydd: {cfg.distill.method} iteration {done}/{total} loss {loss:.4g} eta {eta:.0f}s", flush=True)
        if checkpoint_now:
            tensors = _shard_state(distiller)
            if rank == 0:
                run.save_checkpoint(tensors, done, seconds=row["seconds"])
                with tempfile.TemporaryDirectory() as folder:
                    RunDir(folder).save_checkpoint(tensors, done, seconds=row["seconds"])
                    ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(folder))
            else:
                ray.train.report(row)


def distill_with_ray(
    cfg: Config,
    out: str,
    *,
    workers: int = 1,
    resume: bool = False,
    address: str | None = None,
    max_failures: int = 2,
    show_progress: bool = True,
    fail_once_at: int | None = None,
) -> SyntheticSet:
    """Distill with ``workers`` Ray Train workers, each owning a shard of the classes."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started = time.time()
    check_names(cfg)
    splits, captions = load_inputs(cfg)  # data errors before anything is written or started
    preflight(cfg, splits, captions)
    if not 1 <= workers <= splits.num_classes:
        raise ConfigError(f"--workers must be between 1 and the number of classes ({splits.num_classes}), got {workers}")
    want_gpu = cfg.device.startswith("cuda") or cfg.device == "auto"
    run = RunDir(out)
    run.prepare(cfg, resume=resume)
    init_ray(address)
    # An autoscaling cluster may have no GPU node yet: count what it can scale to.
    gpus = cluster.obtainable_resources().get("GPU", 0.0)
    use_gpu = want_gpu and gpus >= workers
    if cfg.device.startswith("cuda") and not use_gpu:
        raise ConfigError(f"device {cfg.device!r}: the Ray cluster offers {gpus:g} GPUs for {workers} workers")
    threads = max(1, math.floor(available_cpus() / workers)) if not use_gpu else 1
    cluster.check_resources(workers, cpus_per_worker=1 if use_gpu else threads, gpus_per_worker=1 if use_gpu else 0)

    state = prepare(cfg, splits, torch.device("cpu"), captions)  # init ids and metadata, as one process makes them
    # Trained once here, read by every worker; on the run's device where the driver has it, as --no-ray would.
    pool_device = torch.device("cuda") if use_gpu and torch.cuda.is_available() else torch.device("cpu")
    on_device = pool_device.type != "cpu" and uses_trained_pool(cfg)
    pool_state = prepare(cfg, splits, pool_device, captions) if on_device else state
    model_pool(cfg, run, pool_state, pool_device, show_progress)
    state.syn.meta.update({k: v for k, v in pool_state.syn.meta.items() if k == "model_pool_seconds"})
    seconds_before = 0.0
    if resume:
        checkpoint = run.load_checkpoint()
        run.truncate_metrics(checkpoint[1] if checkpoint else 0)
        seconds_before = run.seconds_at(checkpoint[1] if checkpoint else 0)
    if not resume or not run.has(MEMBERS):
        run.write_config(cfg)
        run.write_members(state.pool.ids, splits.name)
        write_initial(run, state.syn)

    storage = os.path.abspath(f"{out}/ray") if "://" not in out else f"{out}/ray"
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cfg": cfg.to_dict(), "out": run.path if "://" in out else os.path.abspath(out),
                           "threads": threads, "use_gpu": use_gpu, "fail_once_at": fail_once_at,
                           "started": started, "seconds_before": seconds_before,
                           "init_ids": state.syn.init_ids},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": 1 if use_gpu else threads}),
        run_config=RunConfig(name="distill", storage_path=storage,
                             failure_config=FailureConfig(max_failures=max_failures)),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RayddError(f"distillation failed on a Ray worker: {result.error}")
    loaded = run.load_checkpoint()
    if loaded is None:
        raise RayddError(f"{run.file(CHECKPOINT)}: the workers finished without a final checkpoint")
    tensors, done = loaded
    syn = state.syn
    syn.images = tensors["images"]
    if "captions" in tensors:
        syn.caption_emb = tensors["captions"]
    syn.meta["iterations"] = done
    syn.meta["workers"] = workers
    syn.meta["distill_seconds"] = round(time.time() - started + seconds_before, 3)
    finish(run, syn)
    write_caption_bank(run, syn, splits, captions)
    return syn
