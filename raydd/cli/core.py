"""The core commands: distill, evaluate, run (the whole job), baseline, show."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from raydd.cli.common import (Address, ConfigFile, Dataset, Device, EvalEpochs, EvalModels, Ipc, Iterations, Method,
                              NoRay, Out, Preset, Quiet, Seed, Sets, TensorBoard, Verbose, Workers, app, default_out,
                              print_accuracy, resumable, resume_target, setup_torch, user_errors)
from raydd.artifacts import EVAL, EVAL_VAL, GRID, SYNTHETIC
from raydd.config import DEFAULT_PRESET
from raydd.errors import RayddError
from raydd.flags import config_from_flags, flag_layer
from raydd.rundir import RunDir


@app.command()
@user_errors
def distill(dataset: Dataset = None, method: Method = None, ipc: Ipc = None, preset: Preset = DEFAULT_PRESET,
            out: Out = None, seed: Seed = None, device: Device = None, iterations: Iterations = None,
            eval_models: EvalModels = None, eval_epochs: EvalEpochs = None, set_: Sets = None,
            config: ConfigFile = None,
            resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
            workers: Workers = 1, address: Address = None, verbose: Verbose = False, no_ray: NoRay = False, tensorboard: TensorBoard = False,
            quiet: Quiet = False) -> None:
    """Distill a synthetic set into a run directory (Ray Train; --no-ray for a plain process)."""
    setup_torch()
    cfg = config_from_flags(preset, config, set_, dataset=dataset, method=method, ipc=ipc, seed=seed, device=device,
                            iterations=iterations, eval_models=eval_models, eval_epochs=eval_epochs)
    out = resume_target(out, resume) or default_out(cfg)
    with resumable("distill", out):
        _distill(cfg, out, resume=resume, workers=workers, address=address, no_ray=no_ray, quiet=quiet,
                 tensorboard=tensorboard)
    typer.echo(f"synthetic set: {out}/{SYNTHETIC}\npicture: {out}/{GRID}")


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


@app.command()
@user_errors
def evaluate(run_dir: Annotated[str, typer.Argument(help="A run directory holding synthetic.safetensors.")],
             eval_models: EvalModels = None, eval_epochs: EvalEpochs = None, device: Device = None,
             set_: Sets = None,
             split: Annotated[str, typer.Option("--split", help="test (final figures) or val (for selection).")] = "test",
             address: Address = None, verbose: Verbose = False, no_ray: NoRay = False, quiet: Quiet = False) -> None:
    """Train fresh networks on a run's synthetic set and test them (writes eval.json; --split val: eval_val.json)."""
    from raydd.config import parse_set
    from raydd.workflows import evaluate_run

    setup_torch()
    if split not in ("test", "val"):
        raise RayddError(f"--split must be test or val, got {split!r}")
    cfg = RunDir(run_dir).read_config(flag_layer(device=device, eval_models=eval_models, eval_epochs=eval_epochs),
                                      parse_set(set_ or []))
    if not no_ray:
        from raydd.pipeline.cluster import init_ray, ray_log_in

        init_ray(address)
        ray_log_in(run_dir)
    result = evaluate_run(run_dir, cfg, split=split, runner=_eval_runner(cfg, no_ray, quiet), show_progress=not quiet)
    print_accuracy(f"{result.method} ipc={result.ipc} on {result.dataset} ({split})", result)
    typer.echo(f"eval: {run_dir}/{EVAL if split == 'test' else EVAL_VAL}")


@app.command()
@user_errors
def run(dataset: Dataset = None, method: Method = None, ipc: Ipc = None, preset: Preset = DEFAULT_PRESET,
        out: Out = None, seed: Seed = None, device: Device = None, iterations: Iterations = None,
        eval_models: EvalModels = None, eval_epochs: EvalEpochs = None, set_: Sets = None,
        config: ConfigFile = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue a killed run in --out.")] = False,
        preprocess: Annotated[bool, typer.Option("--preprocess/--no-preprocess", help="Preprocess the source into Parquet with Ray Data first (reused by later runs; see prepare.root).")] = True,
        on_bad_row: Annotated[str, typer.Option("--on-bad-row", help="Preprocessing: fail at the first unusable row naming its file, or skip such rows (listed in the Parquet copy's rejected.jsonl); prepare.on_bad_row.")] = "fail",
        workers: Workers = 1, address: Address = None, verbose: Verbose = False, no_ray: NoRay = False, tensorboard: TensorBoard = False,
        quiet: Quiet = False) -> None:
    """The whole job: preprocess (Ray Data) -> distill (Ray Train) -> evaluate (Ray tasks) -> report.

    Ray starts locally unless --address (or RAY_ADDRESS) names a cluster; --no-ray runs distillation
    and evaluation in this process, without the preprocessing stage.
    """
    setup_torch()
    flags = [*([] if preprocess else ["prepare.enabled=false"]), *([] if on_bad_row == "fail" else [f"prepare.on_bad_row={on_bad_row}"])]
    cfg = config_from_flags(preset, config, [*(set_ or []), *flags],
                            dataset=dataset, method=method, ipc=ipc, seed=seed, device=device,
                            iterations=iterations, eval_models=eval_models, eval_epochs=eval_epochs)
    out = resume_target(out, resume) or default_out(cfg)
    typer.echo(f"run directory: {out}", err=True)
    if tensorboard:  # fail on a missing package before hours of work, not after
        from raydd.report.tensorboard import summary_writer_class

        summary_writer_class()
    with resumable("run", out):
        if no_ray:
            result, report_path = _run_in_process(cfg, out, resume=resume, workers=workers, address=address,
                                                  quiet=quiet)
        else:
            from raydd.pipeline.job import run_pipeline_job

            job = run_pipeline_job(cfg, out, workers=workers, resume=resume, address=address,
                                   show_progress=not quiet, log=lambda line: typer.echo(line, err=True))
            result, report_path = job.eval, job.report
    if tensorboard:
        from raydd.report.tensorboard import mirror_metrics

        typer.echo(f"tensorboard: {mirror_metrics(out)}")
    print_accuracy(f"{cfg.distill.method} ipc={cfg.distill.ipc} on {result.dataset}", result)
    typer.echo(f"synthetic set picture: {out}/{GRID}")
    typer.echo(f"eval: {out}/{EVAL}")
    typer.echo(f"report: {report_path}")


def _run_in_process(cfg, out: str, *, resume: bool, workers: int, address: str | None, quiet: bool):
    from raydd.report import write_report
    from raydd.workflows import evaluate_unless_done

    _distill(cfg, out, resume=resume, workers=workers, address=address, no_ray=True, quiet=quiet)
    return evaluate_unless_done(out, cfg, resume=resume, show_progress=not quiet), write_report([out])


def _eval_runner(cfg, no_ray: bool, quiet: bool):
    """Evaluation models as Ray tasks, or in this process with --no-ray."""
    if no_ray:
        return None
    from raydd.pipeline.eval_tasks import eval_runner

    return eval_runner(cfg, show_progress=not quiet)


@app.command()
@user_errors
def baseline(kind: Annotated[str, typer.Option("--kind", help="random (real subset of the same IPC) or full (whole training set).")] = "random",
             dataset: Dataset = None, ipc: Ipc = None, preset: Preset = DEFAULT_PRESET, out: Out = None, seed: Seed = None,
             device: Device = None, eval_models: EvalModels = None, eval_epochs: EvalEpochs = None,
             set_: Sets = None, config: ConfigFile = None, address: Address = None, verbose: Verbose = False, no_ray: NoRay = False,
             quiet: Quiet = False) -> None:
    """Evaluate a reference training set under the same protocol as a synthetic set."""
    from raydd.workflows import run_baseline

    setup_torch()
    cfg = config_from_flags(preset, config, set_, dataset=dataset, ipc=ipc, seed=seed, device=device,
                            eval_models=eval_models, eval_epochs=eval_epochs)
    out = out or default_out(cfg, kind=f"baseline-{kind}")
    if not no_ray:
        from raydd.pipeline.cluster import init_ray, ray_log_in

        init_ray(address)
        ray_log_in(out)
    result = run_baseline(kind, cfg, out, runner=_eval_runner(cfg, no_ray, quiet), show_progress=not quiet)
    print_accuracy(f"baseline {kind} on {result.dataset}" + (f" ipc={cfg.distill.ipc}" if kind == "random" else ""), result)
    typer.echo(f"eval: {out}/{EVAL}")


@app.command()
@user_errors
def show(run_dir: Annotated[str, typer.Argument(help="A run directory holding synthetic.safetensors.")],
         output: Annotated[Optional[str], typer.Option("--output", "-o", help="PNG path (default RUN_DIR/synthetic.png).")] = None,
         per_class: Annotated[int, typer.Option("--per-class", help="Images per class row.")] = 10) -> None:
    """Write the picture of a synthetic set: one row per class."""
    from raydd.grid import write_grid
    from raydd.synthetic import SyntheticSet

    syn = SyntheticSet.load(run_dir.rstrip("/"))
    path = output or f"{run_dir.rstrip('/')}/{GRID}"
    write_grid(path, syn.denormalized(), syn.labels, syn.class_names, max_per_class=per_class,
               title=f"{syn.meta.get('method', '')} {syn.meta.get('dataset', '')} ipc={syn.ipc}")
    typer.echo(path)
