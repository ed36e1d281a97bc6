"""The ``raydd`` command: distill, evaluate, run, baseline, show.

Errors a user can fix (bad data, unknown names, a run directory in the wrong state) print one line and
exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from raydd.errors import RayddError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Multi-modal dataset distillation: condense a labelled image dataset into a few synthetic images per class.")

Dataset = Annotated[Optional[str], typer.Option("--dataset", help="fashion-mnist (default), mnist, or an imagefolder path / fsspec URI.")]
Method = Annotated[Optional[str], typer.Option("--method", help="dm | dc | dsa")]
Ipc = Annotated[Optional[int], typer.Option("--ipc", help="Synthetic images per class.")]
Preset = Annotated[str, typer.Option("--preset", help="quick (2-core CPU) or paper (the published protocol; GPU).")]
Out = Annotated[Optional[str], typer.Option("--out", help="Run directory (local path or fsspec URI). Default: runs/<time>-<method>-<dataset>-ipc<N>.")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Run seed: every random draw derives from it.")]
Device = Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda | cuda:N")]
Iterations = Annotated[Optional[int], typer.Option("--iterations", help="Distillation iterations (default: the preset's).")]
EvalModels = Annotated[Optional[int], typer.Option("--eval-models", help="Networks trained from scratch for evaluation.")]
EvalEpochs = Annotated[Optional[int], typer.Option("--eval-epochs", help="Epochs per evaluation network.")]
Sets = Annotated[Optional[list[str]], typer.Option("--set", help="Any config field, e.g. --set distill.batch_real=128 (repeatable).")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="A YAML file with config fields (applied over the preset).")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
Workers = Annotated[int, typer.Option("--workers", help="Ray Train workers; each owns a shard of the classes.")]
Address = Annotated[Optional[str], typer.Option("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray started for this command).")]
NoRay = Annotated[bool, typer.Option("--no-ray", help="Run in this process without Ray (debugging).")]
TensorBoard = Annotated[bool, typer.Option("--tensorboard", help="Also write metrics.jsonl as TensorBoard event files (RUN_DIR/tensorboard; needs the tensorboard package).")]


def user_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RayddError as exc:
            typer.echo(f"raydd: error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("raydd: interrupted (a distillation continues with --resume --out RUN_DIR)", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _overrides(dataset, method, ipc, seed, device, iterations, eval_models, eval_epochs) -> dict[str, Any]:
    o: dict[str, Any] = {"data": {}, "distill": {}, "eval": {}}
    if dataset is not None:
        o["data"]["name"] = dataset
    if method is not None:
        o["distill"]["method"] = method
    if ipc is not None:
        o["distill"]["ipc"] = ipc
    if iterations is not None:
        o["distill"]["iterations"] = iterations
    if eval_models is not None:
        o["eval"]["models"] = eval_models
    if eval_epochs is not None:
        o["eval"]["epochs"] = eval_epochs
    if seed is not None:
        o["seed"] = seed
    if device is not None:
        o["device"] = device
    return o


def _config(preset, config_file, sets, **flags):
    from raydd.config import build_config

    return build_config(preset, file=config_file, overrides=_overrides(**flags), sets=sets or [])


def _default_out(cfg, kind: str | None = None) -> str:
    name = Path(cfg.data.name.rstrip("/")).name or "data"
    what = kind or cfg.distill.method
    return f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{what}-{name}-ipc{cfg.distill.ipc}-seed{cfg.seed}"


def _print_accuracy(title: str, result: dict[str, Any]) -> None:
    acc = result["accuracy"]
    typer.echo(f"\n{title}")
    typer.echo(f"  {'model':<12} {'accuracy (mean ± std)':<24} per model")
    rows = [(result.get("model", "convnet3"), acc)] + list(result.get("cross_arch", {}).items())
    if result.get("accuracy_image_caption"):
        rows.append((f"{result.get('model', 'convnet3')}+caption", result["accuracy_image_caption"]))
    for name, a in rows:
        per = " ".join(f"{100 * x:.2f}" for x in a["per_model"])
        typer.echo(f"  {name:<12} {100 * a['mean']:6.2f} ± {100 * a['std']:<14.2f} {per}")
    if result.get("caption_only"):
        typer.echo(f"  caption-only baseline (linear, whole train split): {100 * result['caption_only']['accuracy']:.2f}")
    proto = result.get("protocol", {})
    typer.echo(f"  protocol: preset {result.get('preset')}, {proto.get('epochs')} epochs, {acc['n']} models, "
               f"tested on {proto.get('tested_on')}, accuracy at the last epoch")


def _setup_torch() -> None:
    import torch

    threads = os.environ.get("RAYDD_THREADS")
    if threads:
        torch.set_num_threads(int(threads))


@app.command()
@user_errors
def distill(dataset: Dataset = None, method: Method = None, ipc: Ipc = None, preset: Preset = "quick",
            out: Out = None, seed: Seed = None, device: Device = None, iterations: Iterations = None,
            eval_models: EvalModels = None, eval_epochs: EvalEpochs = None, set_: Sets = None,
            config: ConfigFile = None,
            resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
            workers: Workers = 1, address: Address = None, no_ray: NoRay = False, tensorboard: TensorBoard = False,
            quiet: Quiet = False) -> None:
    """Distill a synthetic set into a run directory (Ray Train; --no-ray for a plain process)."""
    _setup_torch()
    cfg = _config(preset, config, set_, dataset=dataset, method=method, ipc=ipc, seed=seed, device=device,
                  iterations=iterations, eval_models=eval_models, eval_epochs=eval_epochs)
    out = _resume_target(out, resume) or _default_out(cfg)
    _distill(cfg, out, resume=resume, workers=workers, address=address, no_ray=no_ray, quiet=quiet,
             tensorboard=tensorboard)
    typer.echo(f"synthetic set: {out}/synthetic.safetensors\npicture: {out}/synthetic.png")


def _distill(cfg, out: str, *, resume: bool, workers: int, address: str | None, no_ray: bool, quiet: bool,
             tensorboard: bool = False):
    if tensorboard:  # fail on a missing package before hours of work, not after
        from raydd.report.tensorboard import summary_writer_class

        summary_writer_class()
    if no_ray:
        if workers != 1 or address:
            raise RayddError("--no-ray runs one local process: drop --workers/--address")
        from raydd.distill import run_distillation

        syn = run_distillation(cfg, out, resume=resume, show_progress=not quiet)
    else:
        from raydd.pipeline.train import distill_with_ray

        syn = distill_with_ray(cfg, out, workers=workers, resume=resume, address=address, show_progress=not quiet)
    if tensorboard:
        from raydd.report.tensorboard import mirror_metrics

        typer.echo(f"tensorboard: {mirror_metrics(out)}")
    return syn


def _eval_runner(cfg, no_ray: bool, quiet: bool):
    """Evaluation models as Ray tasks (one CPU each, or a GPU share), or in-process with --no-ray."""
    if no_ray:
        return None
    from raydd.pipeline.cluster import available_gpus
    from raydd.pipeline.fanout import ray_runner

    gpus = available_gpus()
    if cfg.device != "cpu" and gpus > 0:
        return ray_runner(cpus_per_task=1, gpus_per_task=min(1.0, gpus / max(1, cfg.eval.models)), show_progress=not quiet)
    return ray_runner(cpus_per_task=1, show_progress=not quiet)


def _resume_target(out: str | None, resume: bool) -> str | None:
    if resume and out is None:
        raise RayddError("--resume needs --out RUN_DIR (the run to continue)")
    return out


@app.command()
@user_errors
def evaluate(run_dir: Annotated[str, typer.Argument(help="A run directory holding synthetic.safetensors.")],
             eval_models: EvalModels = None, eval_epochs: EvalEpochs = None, device: Device = None,
             set_: Sets = None,
             split: Annotated[str, typer.Option("--split", help="test (final figures) or val (for selection).")] = "test",
             address: Address = None, no_ray: NoRay = False, quiet: Quiet = False) -> None:
    """Train fresh networks on a run's synthetic set and test them (writes eval.json)."""
    from raydd.config import config_from_dict, parse_set
    from raydd.workflows import evaluate_run

    _setup_torch()
    if split not in ("test", "val"):
        raise RayddError(f"--split must be test or val, got {split!r}")
    base = RunDir(run_dir).read_config().to_dict()
    for layer in (_overrides(None, None, None, None, device, None, eval_models, eval_epochs), parse_set(set_ or [])):
        for key, value in layer.items():
            if isinstance(value, dict):
                base.setdefault(key, {}).update(value)
            else:
                base[key] = value
    cfg = config_from_dict(base)
    if not no_ray:
        from raydd.pipeline.cluster import init_ray

        init_ray(address)
    result = evaluate_run(run_dir, cfg, split=split, runner=_eval_runner(cfg, no_ray, quiet), show_progress=not quiet)
    _print_accuracy(f"{result.get('method')} ipc={result.get('ipc')} on {result.get('dataset')} ({split})", result)
    typer.echo(f"eval: {run_dir}/eval.json")


@app.command()
@user_errors
def run(dataset: Dataset = None, method: Method = None, ipc: Ipc = None, preset: Preset = "quick",
        out: Out = None, seed: Seed = None, device: Device = None, iterations: Iterations = None,
        eval_models: EvalModels = None, eval_epochs: EvalEpochs = None, set_: Sets = None,
        config: ConfigFile = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue a killed run in --out.")] = False,
        workers: Workers = 1, address: Address = None, no_ray: NoRay = False, tensorboard: TensorBoard = False,
        quiet: Quiet = False) -> None:
    """Distill, then evaluate: the whole job in one command (on a local Ray unless --address/--no-ray)."""
    from raydd.rundir import RunDir
    from raydd.workflows import evaluate_run

    _setup_torch()
    cfg = _config(preset, config, set_, dataset=dataset, method=method, ipc=ipc, seed=seed, device=device,
                  iterations=iterations, eval_models=eval_models, eval_epochs=eval_epochs)
    out = _resume_target(out, resume) or _default_out(cfg)
    typer.echo(f"run directory: {out}", err=True)
    _distill(cfg, out, resume=resume, workers=workers, address=address, no_ray=no_ray, quiet=quiet,
             tensorboard=tensorboard)
    if resume and RunDir(out).has("eval.json"):
        result = RunDir(out).read_json("eval.json")
    else:
        result = evaluate_run(out, cfg, runner=_eval_runner(cfg, no_ray, quiet), show_progress=not quiet)
    _print_accuracy(f"{cfg.distill.method} ipc={cfg.distill.ipc} on {result['dataset']}", result)
    from raydd.report import write_report

    typer.echo(f"synthetic set picture: {out}/synthetic.png")
    typer.echo(f"eval: {out}/eval.json")
    typer.echo(f"report: {write_report([out])}")


@app.command()
@user_errors
def baseline(kind: Annotated[str, typer.Option("--kind", help="random (real subset of the same IPC) or full (whole training set).")] = "random",
             dataset: Dataset = None, ipc: Ipc = None, preset: Preset = "quick", out: Out = None, seed: Seed = None,
             device: Device = None, eval_models: EvalModels = None, eval_epochs: EvalEpochs = None,
             set_: Sets = None, config: ConfigFile = None, address: Address = None, no_ray: NoRay = False,
             quiet: Quiet = False) -> None:
    """Evaluate a reference training set under the same protocol as a synthetic set."""
    from raydd.workflows import run_baseline

    _setup_torch()
    cfg = _config(preset, config, set_, dataset=dataset, method=None, ipc=ipc, seed=seed, device=device,
                  iterations=None, eval_models=eval_models, eval_epochs=eval_epochs)
    out = out or _default_out(cfg, kind=f"baseline-{kind}")
    if not no_ray:
        from raydd.pipeline.cluster import init_ray

        init_ray(address)
    result = run_baseline(kind, cfg, out, runner=_eval_runner(cfg, no_ray, quiet), show_progress=not quiet)
    _print_accuracy(f"baseline {kind} on {result['dataset']}" + (f" ipc={cfg.distill.ipc}" if kind == "random" else ""), result)
    typer.echo(f"eval: {out}/eval.json")


@app.command()
@user_errors
def show(run_dir: Annotated[str, typer.Argument(help="A run directory holding synthetic.safetensors.")],
         output: Annotated[Optional[str], typer.Option("--output", "-o", help="PNG path (default RUN_DIR/synthetic.png).")] = None,
         per_class: Annotated[int, typer.Option("--per-class", help="Images per class row.")] = 10) -> None:
    """Write the picture of a synthetic set: one row per class."""
    from raydd.report.grid import write_grid
    from raydd.synthetic import SyntheticSet

    syn = SyntheticSet.load(run_dir.rstrip("/"))
    path = output or f"{run_dir.rstrip('/')}/synthetic.png"
    write_grid(path, syn.denormalized(), syn.labels, syn.class_names, max_per_class=per_class,
               title=f"{syn.meta.get('method', '')} {syn.meta.get('dataset', '')} ipc={syn.ipc}")
    typer.echo(path)


@app.command()
@user_errors
def tune(out: Annotated[str, typer.Option("--out", help="Search directory (local path or fsspec URI): best.yaml, trials.csv, trials.json, tune/.")],
         space: Annotated[Optional[Path], typer.Option("--space", help="YAML search space: dotted config keys mapped to a list (a choice) or a range (uniform, loguniform, randint with low and high); see docs/cluster.md.")] = None,
         dataset: Dataset = None, method: Method = None, ipc: Ipc = None, preset: Preset = "quick",
         seed: Seed = None, device: Device = None, iterations: Iterations = None,
         eval_models: EvalModels = None, eval_epochs: EvalEpochs = None, set_: Sets = None,
         config: ConfigFile = None,
         num_samples: Annotated[int, typer.Option("--num-samples", help="Trials to sample.")] = 8,
         max_concurrent: Annotated[int, typer.Option("--max-concurrent", help="Trials running at once.")] = 2,
         scheduler: Annotated[str, typer.Option("--scheduler", help="asha (stop weak trials early) or fifo.")] = "asha",
         grace_iterations: Annotated[Optional[int], typer.Option("--grace-iterations", help="Iterations before ASHA may stop a trial (default: a quarter of the run).")] = None,
         report_every: Annotated[Optional[int], typer.Option("--report-every", help="Iterations between validation reports (default: the grace).")] = None,
         cpus_per_trial: Annotated[float, typer.Option("--cpus-per-trial", help="CPUs (and torch threads) per trial.")] = 1,
         gpus_per_trial: Annotated[float, typer.Option("--gpus-per-trial", help="GPUs per trial.")] = 0,
         address: Address = None,
         resume: Annotated[bool, typer.Option("--resume", help="Continue the search in --out as it was started.")] = False,
         quiet: Quiet = False) -> None:
    """Search distillation settings with Ray Tune, selecting on validation accuracy (writes best.yaml)."""
    from raydd.pipeline.tune import load_space, tune_search

    _setup_torch()
    if space is None and not resume:
        raise RayddError("--space is required (a YAML file of dotted config keys), unless --resume")
    cfg = _config(preset, config, set_, dataset=dataset, method=method, ipc=ipc, seed=seed, device=device,
                  iterations=iterations, eval_models=eval_models, eval_epochs=eval_epochs)
    result = tune_search(cfg, out, space=load_space(space) if space is not None and not resume else {},
                         num_samples=num_samples, max_concurrent=max_concurrent, scheduler=scheduler,
                         resume=resume, address=address, grace_iterations=grace_iterations,
                         report_every=report_every, cpus_per_trial=cpus_per_trial,
                         gpus_per_trial=gpus_per_trial, show_progress=not quiet)
    typer.echo(f"\n  {'trial':<14} {'status':<14} {'val acc':>8} {'iters':>6}  values")
    for t in result.trials:
        acc = "-" if t["val_accuracy"] is None else f"{100 * t['val_accuracy']:.2f}"
        values = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
        typer.echo(f"  {t['trial_id']:<14} {t['status']:<14} {acc:>8} {t['iterations']:>6}  {values}")
    typer.echo(f"best: trial {result.best_trial_id}, validation accuracy {100 * result.best_val_accuracy:.2f} "
               f"after {result.best_iterations} iterations")
    typer.echo(f"best config: {result.out}/best.yaml (use: raydd run --config {result.out}/best.yaml ...)")
    typer.echo(f"trials: {result.out}/trials.csv")


@app.command()
@user_errors
def preprocess(
    source: Annotated[str, typer.Option("--source", help="fashion-mnist, cluttered-fashion-mnist, mnist, or an imagefolder path / fsspec URI.")],
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
    address: Address = None,
    quiet: Quiet = False,
) -> None:
    """Preprocess a dataset into partitioned Parquet with Ray Data: masks, captions, caption embeddings."""
    from raydd.pipeline.preprocess import preprocess_to_parquet

    preprocess_to_parquet(
        source, out, root=root, splits=[s.strip() for s in splits.split(",") if s.strip()],
        val_fraction=val_fraction, seed=seed, image_size=image_size, segmenter=segmenter, captioner=captioner,
        text_encoder=text_encoder, require_captions=not allow_missing_captions, actors=actors,
        cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor, batch_size=batch_size, cache_dir=cache_dir,
        overwrite=overwrite, address=address, show_progress=not quiet,
    )
    typer.echo(f"manifest: {out.rstrip('/')}/manifest.json\nuse it with: --dataset parquet:{out}")


@app.command()
@user_errors
def report(run_dirs: Annotated[Optional[list[str]], typer.Argument(
               help="Run directories: one gives its full report, several a comparison table.", show_default=False)] = None,
           tune: Annotated[Optional[str], typer.Option(
               "--tune", help="A `raydd tune` output directory (trials.json, best.yaml): write the search's report.")] = None,
           out: Annotated[Optional[str], typer.Option(
               "--out", "-o", help="The page (.html) or a folder for report.html. Default: RUN_DIR/report.html; "
                                   "<common parent>/comparison/report.html for several runs; TUNE_DIR/report.html.")] = None) -> None:
    """Write a self-contained HTML report (images embedded, opens offline) of one run, several runs, or a search."""
    from raydd.report import write_report, write_tune_report

    if not run_dirs and not tune:
        raise RayddError("report: give RUN_DIR [RUN_DIR ...], --tune DIR, or both")
    if run_dirs and tune and out:
        raise RayddError("--out names one page: report the runs and the search in two commands")
    if run_dirs:
        typer.echo(write_report(list(run_dirs), out=out))
    if tune:
        typer.echo(write_tune_report(tune, out=out))


@app.command("show-data")
@user_errors
def show_data(dataset: Dataset = None,
              output: Annotated[str, typer.Option("--output", "-o", help="PNG path.")] = "data.png",
              per_class: Annotated[int, typer.Option("--per-class", help="Images per class.")] = 4,
              set_: Sets = None) -> None:
    """Write a grid of real images with their mask outlines and captions."""
    from raydd.data.cluttered import show_data_grid
    from raydd.distill import load_splits

    cfg = _config("quick", None, set_, dataset=dataset, method=None, ipc=None, seed=None, device=None,
                  iterations=None, eval_models=None, eval_epochs=None)
    show_data_grid(load_splits(cfg), per_class, output)
    typer.echo(output)


@app.command()
@user_errors
def ablate(datasets: Annotated[Optional[list[str]], typer.Option("--dataset", help="Datasets (repeatable); default cluttered-fashion-mnist and fashion-mnist (mask rows only).")] = None,
           methods: Annotated[Optional[list[str]], typer.Option("--method", help="Base methods (repeatable); default dm and dsa.")] = None,
           ipc: Annotated[int, typer.Option("--ipc", help="Synthetic images per class.")] = 10,
           seeds: Annotated[Optional[list[int]], typer.Option("--seed", help="Seeds (repeatable); default 0 1 2.")] = None,
           preset: Preset = "quick",
           work_dir: Annotated[str, typer.Option("--work-dir", help="One run directory per row and seed; finished runs are reused.")] = "runs/ablation",
           output: Annotated[Optional[str], typer.Option("--output", help="Also write the markdown table here.")] = None,
           set_: Sets = None) -> None:
    """Base, each enhancement alone, and all together: one protocol, several seeds, a table."""
    from raydd.ablation import AblationSpec, ablation_table, run_ablation

    _setup_torch()
    spec = AblationSpec(datasets or ["cluttered-fashion-mnist", "fashion-mnist"], methods or ["dm", "dsa"], ipc,
                        seeds or [0, 1, 2], preset, set_ or [])
    table = ablation_table(run_ablation(spec, work_dir, log=lambda line: typer.echo(line, err=True)))
    typer.echo(table)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(table + "\n")


@app.command()
@user_errors
def audit(run_dir: Annotated[str, typer.Argument(help="A run directory holding synthetic.safetensors and members.json.")],
          preset: Annotated[Optional[str], typer.Option("--preset", help="Audit sizes: quick (2-core CPU) or paper (GPU). Default: the run's own.")] = None,
          shadows: Annotated[Optional[int], typer.Option("--shadows", help="LiRA shadow pipelines per target kind.")] = None,
          members: Annotated[Optional[int], typer.Option("--members", help="Audited members (as many non-members from the test split).")] = None,
          set_: Sets = None, address: Address = None, no_ray: NoRay = False, quiet: Quiet = False) -> None:
    """Privacy audit: membership inference (loss, LiRA) and nearest real images (writes audit.json, nn_pairs.png)."""
    from raydd.audit import audit_command, format_audit_table

    _setup_torch()
    result = audit_command(run_dir, preset=preset, shadows=shadows, members=members, sets=set_ or [],
                           address=address, no_ray=no_ray, quiet=quiet)
    typer.echo(format_audit_table(result))
    typer.echo(f"audit: {run_dir}/audit.json\nnearest pairs: {run_dir}/nn_pairs.png")


@app.command()
@user_errors
def presets() -> None:
    """List the presets and print their settings."""
    from raydd.config import available_presets, preset_dict

    for name in available_presets():
        typer.echo(f"# {name}\n{json.dumps(preset_dict(name), indent=2)}")


def main() -> None:
    app(prog_name="raydd")


if __name__ == "__main__":
    sys.exit(main())
