"""The Ray commands beyond the core job: a Ray Tune search and Ray Data preprocessing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from raydd.artifacts import BEST, TRIALS_CSV
from raydd.cli.common import (
    Address, ConfigFile, Dataset, Device, EvalEpochs, EvalModels, Ipc, Iterations, Method,
    Preset, Quiet, Seed, Sets, Verbose, app, setup_torch, user_errors
)
from raydd.config import DEFAULT_PRESET
from raydd.errors import RayddError
from raydd.flags import config_from_flags


@app.command()
@user_errors
def tune(out: Annotated[str, typer.Option("--out", help="Search directory (local path or fsspec URI): best.yaml, trials.csv, trials.json, tune/.")],
         space: Annotated[Optional[Path], typer.Option("--space", help="YAML search space: dotted config keys mapped to a list (a choice) or a range (uniform, loguniform, randint with low and high); or a shipped space by name (mm-weights); see docs/cluster.md.")] = None,
         dataset: Dataset = None, method: Method = None, ipc: Ipc = None, preset: Preset = DEFAULT_PRESET,
         seed: Seed = None, device: Device = None, iterations: Iterations = None,
         eval_models: EvalModels = None, eval_epochs: EvalEpochs = None, set_: Sets = None,
         config: ConfigFile = None,
         num_samples: Annotated[int, typer.Option("--num-samples", help="Trials to sample.")] = 8,
         max_concurrent: Annotated[int, typer.Option("--max-concurrent", help="Trials running at once.")] = 2,
         scheduler: Annotated[str, typer.Option("--scheduler", help="asha (stop weak trials early) or fifo.")] = "asha",
         searcher: Annotated[str, typer.Option("--searcher", help="random (values drawn independently; grid entries tried exhaustively) or optuna (TPE: values drawn where finished trials scored well; needs pip install 'raydd[tune]').")] = "random",
         grace_iterations: Annotated[Optional[int], typer.Option("--grace-iterations", help="Iterations before ASHA may stop a trial (default: a quarter of the run).")] = None,
         report_every: Annotated[Optional[int], typer.Option("--report-every", help="Iterations between validation reports (default: the grace).")] = None,
         cpus_per_trial: Annotated[float, typer.Option("--cpus-per-trial", help="CPUs (and torch threads) per trial.")] = 1,
         gpus_per_trial: Annotated[float, typer.Option("--gpus-per-trial", help="GPUs per trial.")] = 0,
         address: Address = None, verbose: Verbose = False,
         resume: Annotated[bool, typer.Option("--resume", help="Continue the search in --out as it was started.")] = False,
         quiet: Quiet = False) -> None:
    """Search distillation settings with Ray Tune, selecting on validation accuracy (writes best.yaml)."""
    from raydd.pipeline.tune import load_space, tune_search

    setup_torch()
    if space is None and not resume:
        raise RayddError("--space is required (a YAML file of dotted config keys), unless --resume")
    cfg = config_from_flags(preset, config, set_, dataset=dataset, method=method, ipc=ipc, seed=seed, device=device,
                            iterations=iterations, eval_models=eval_models, eval_epochs=eval_epochs)
    result = tune_search(cfg, out, space=load_space(space) if space is not None and not resume else {},
                         num_samples=num_samples, max_concurrent=max_concurrent, scheduler=scheduler,
                         searcher=searcher, resume=resume, address=address, grace_iterations=grace_iterations,
                         report_every=report_every, cpus_per_trial=cpus_per_trial,
                         gpus_per_trial=gpus_per_trial, show_progress=not quiet)
    typer.echo(f"\n  {'trial':<14} {'status':<14} {'val acc':>8} {'iters':>6}  values")
    for t in result.trials:
        acc = "-" if t["val_accuracy"] is None else f"{100 * t['val_accuracy']:.2f}"
        values = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
        typer.echo(f"  {t['trial_id']:<14} {t['status']:<14} {acc:>8} {t['iterations']:>6}  {values}")
    typer.echo(f"best: trial {result.best_trial_id}, validation accuracy {100 * result.best_val_accuracy:.2f} "
               f"after {result.best_iterations} iterations")
    typer.echo(f"best config: {result.out}/{BEST} (use: raydd run --config {result.out}/{BEST} ...)")
    typer.echo(f"trials: {result.out}/{TRIALS_CSV}")


@app.command()
@user_errors
def preprocess(
    source: Annotated[str, typer.Option("--source", help="fashion-mnist, cluttered-fashion-mnist, mnist, or a path / fsspec URI of an imagefolder, of WebDataset shards or of image Parquet files.")],
    out: Annotated[str, typer.Option("--out", help="Output directory (local path or fsspec URI); manifest.json is written last.")],
    root: Annotated[Optional[str], typer.Option("--root", help="Where a named source's files are.")] = None,
    splits: Annotated[str, typer.Option("--splits", help="Comma-separated splits to write.")] = "train,val,test",
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of train carved out as the validation split.")] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the validation split.")] = 0,
    image_size: Annotated[Optional[int], typer.Option("--image-size", help="Resize images to N x N.")] = None,
    segmenter: Annotated[str, typer.Option("--segmenter", help="auto (the dataset's masks, else threshold) | none | threshold[:t] | grabcut[:iters] | annotations | sam:<vit_b|vit_l|vit_h>:<checkpoint>")] = "auto",
    captioner: Annotated[str, typer.Option("--captioner", help="none | <coca model>:<weights file or pretrained tag>: captions images that have none.")] = "none",
    text_encoder: Annotated[str, typer.Option("--text-encoder", help="minilm | openclip:<model>[:<weights>] | none")] = "minilm",
    allow_missing_captions: Annotated[bool, typer.Option("--allow-missing-captions", help="Embed a missing caption as zeros instead of failing.")] = False,
    actors: Annotated[int, typer.Option("--actors", help="Actors per stage (mask, caption, text encoder).")] = 1,
    cpus_per_actor: Annotated[float, typer.Option("--cpus-per-actor", help="Fractional by default so reads and writes keep a CPU.")] = 0.5,
    gpus_per_actor: Annotated[float, typer.Option("--gpus-per-actor", help="GPU share of each model actor (SAM, CoCa, text encoder).")] = 0.0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per batch handed to an actor.")] = 256,
    cache_dir: Annotated[Optional[str], typer.Option("--cache-dir", help="Embedding/mask cache of the actors (default: $XDG_CACHE_HOME/raydd on each node).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier preprocessing output in --out.")] = False,
    on_bad_row: Annotated[str, typer.Option("--on-bad-row", help="fail: stop at the first unreadable or inconsistent row (imagefolder, WebDataset, image Parquet), naming its file; skip: leave such rows out and list them in OUT/rejected.jsonl.")] = "fail",
    address: Address = None, verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Preprocess a dataset into partitioned Parquet with Ray Data: masks, captions, caption embeddings."""
    from raydd.pipeline.preprocess import preprocess_to_parquet

    preprocess_to_parquet(
        source, out, root=root, splits=[s.strip() for s in splits.split(",") if s.strip()],
        val_fraction=val_fraction, seed=seed, image_size=image_size, segmenter=segmenter, captioner=captioner,
        text_encoder=text_encoder, require_captions=not allow_missing_captions, actors=actors,
        cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor, batch_size=batch_size, cache_dir=cache_dir,
        overwrite=overwrite, address=address, show_progress=not quiet, on_bad_row=on_bad_row,
    )
    typer.echo(f"manifest: {out.rstrip('/')}/manifest.json\nuse it with: --dataset parquet:{out}")
