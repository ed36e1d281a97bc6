"""What every `raydd` command shares: the Typer app, option types, error handling, config assembly."""

from __future__ import annotations

import functools
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from raydd.errors import RayddError, StorageError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Multi-modal dataset distillation: condense a labelled image dataset into a few synthetic images per class.")

Dataset = Annotated[Optional[str], typer.Option("--dataset", help="fashion-mnist (default), mnist, cluttered-fashion-mnist, an imagefolder path / fsspec URI, or a directory written by raydd preprocess.")]
Method = Annotated[Optional[str], typer.Option("--method", help="dm | dc | dsa, or a recipe: dm+mm, dsa+mm")]
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


@contextmanager
def resumable(command: str, out: str):
    """A write that fails mid-run (full disk, ...) ends by naming the line that continues the run from
    its last checkpoint, which the failed write left intact."""
    try:
        yield
    except StorageError as exc:
        raise exc.continued_by(f"continue with raydd {command} --resume --out {out}") from None


def overrides(dataset, method, ipc, seed, device, iterations, eval_models, eval_epochs) -> dict[str, Any]:
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


def config_from_flags(preset, config_file, sets, **flags):
    from raydd.config import build_config

    return build_config(preset, file=config_file, overrides=overrides(**flags), sets=sets or [])


def default_out(cfg, kind: str | None = None) -> str:
    name = Path(cfg.data.name.rstrip("/")).name or "data"
    what = kind or cfg.distill.method
    return f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{what}-{name}-ipc{cfg.distill.ipc}-seed{cfg.seed}"


def print_accuracy(title: str, result: dict[str, Any]) -> None:
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
    named = f"{proto['protocol']}, " if proto.get("protocol") else ""
    typer.echo(f"  protocol: {named}preset {result.get('preset')}, {proto.get('epochs')} epochs, "
               f"augmentation {proto.get('augment')}, {acc['n']} models, tested on {proto.get('tested_on')}, "
               "accuracy at the last epoch")


def setup_torch() -> None:
    import torch

    threads = os.environ.get("RAYDD_THREADS")
    if threads:
        torch.set_num_threads(int(threads))


def resume_target(out: str | None, resume: bool) -> str | None:
    if resume and out is None:
        raise RayddError("--resume needs --out RUN_DIR (the run to continue)")
    return out
