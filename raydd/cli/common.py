"""What every `raydd` command shares: the Typer app, option types, error handling, config assembly."""

from __future__ import annotations

import functools
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from raydd.errors import RayddError, StorageError
from raydd.flags import BY_NAME, CONFIG_HELP, PRESET_HELP, SET_HELP
from raydd.pipeline import native_log
from raydd.results import EvalResult

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Multi-modal dataset distillation: condense a labelled image dataset into a few synthetic images per class.")


def _flag(name: str):
    """The Typer option of a shared config flag (raydd/flags.py: the jobs/ scripts take the same)."""
    return typer.Option(BY_NAME[name].option, help=BY_NAME[name].help)


Dataset = Annotated[Optional[str], _flag("dataset")]
Method = Annotated[Optional[str], _flag("method")]
Ipc = Annotated[Optional[int], _flag("ipc")]
Seed = Annotated[Optional[int], _flag("seed")]
Device = Annotated[Optional[str], _flag("device")]
Iterations = Annotated[Optional[int], _flag("iterations")]
EvalModels = Annotated[Optional[int], _flag("eval_models")]
EvalEpochs = Annotated[Optional[int], _flag("eval_epochs")]
Preset = Annotated[str, typer.Option("--preset", help=PRESET_HELP)]
Out = Annotated[Optional[str], typer.Option("--out", help="Run directory (local path or fsspec URI). Default: runs/<time>-<method>-<dataset>-ipc<N>.")]
Sets = Annotated[Optional[list[str]], typer.Option("--set", help=SET_HELP)]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help=CONFIG_HELP)]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
Workers = Annotated[int, typer.Option("--workers", help="Ray Train workers; each owns a shard of the classes.")]
Address = Annotated[Optional[str], typer.Option("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray started for this command).")]
NoRay = Annotated[bool, typer.Option("--no-ray", help="Run in this process without Ray (debugging).")]
Verbose = Annotated[bool, typer.Option(
    "--verbose", help="Show Ray's own log lines on the console (otherwise they go to the run directory's ray.log).")]
TensorBoard = Annotated[bool, typer.Option("--tensorboard", help="Also write metrics.jsonl as TensorBoard event files (RUN_DIR/tensorboard; needs the tensorboard package).")]


def user_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if kwargs.get("verbose"):
            os.environ[native_log.VERBOSE_ENV] = "1"
        try:
            return fn(*args, **kwargs)
        except RayddError as exc:
            _end_native_log()
            typer.echo(f"raydd: error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            _end_native_log()
            typer.echo("raydd: interrupted (a distillation continues with --resume --out RUN_DIR)", err=True)
            raise typer.Exit(130) from None
        finally:
            _end_native_log()

    return wrapper


def _end_native_log() -> None:
    """Give the console back its own stderr, and say where Ray's native lines went (if anywhere)."""
    where = native_log.finish()
    if where:
        typer.echo(where, err=True)


@contextmanager
def resumable(command: str, out: str):
    """A write that fails mid-run (full disk, ...) ends by naming the line that continues the run from
    its last checkpoint, which the failed write left intact."""
    try:
        yield
    except StorageError as exc:
        raise exc.continued_by(f"continue with raydd {command} --resume --out {out}") from None


def default_out(cfg, kind: str | None = None) -> str:
    name = Path(cfg.data.name.rstrip("/")).name or "data"
    what = kind or cfg.distill.method
    return f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{what}-{name}-ipc{cfg.distill.ipc}-seed{cfg.seed}"


def print_accuracy(title: str, result: EvalResult) -> None:
    acc = result.accuracy
    model = result.model or "convnet3"
    typer.echo(f"\n{title}")
    typer.echo(f"  {'model':<12} {'accuracy (mean ± std)':<24} per model")
    rows = [(model, acc)] + list((result.cross_arch or {}).items())
    if result.accuracy_image_caption:
        rows.append((f"{model}+caption", result.accuracy_image_caption))
    for name, a in rows:
        per = " ".join(f"{100 * x:.2f}" for x in a.per_model)
        typer.echo(f"  {name:<12} {100 * a.mean:6.2f} ± {100 * (a.std or 0.0):<14.2f} {per}")
    if result.caption_only:
        typer.echo(f"  caption-only baseline (linear, whole train split): {100 * result.caption_only['accuracy']:.2f}")
    proto = result.protocol or {}
    named = f"{proto['protocol']}, " if proto.get("protocol") else ""
    typer.echo(f"  protocol: {named}preset {result.preset}, {proto.get('epochs')} epochs, "
               f"augmentation {proto.get('augment')}, {acc.n} models, tested on {proto.get('tested_on')}, "
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
