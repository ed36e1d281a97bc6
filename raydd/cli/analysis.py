"""Commands that look at data and results: report, show-data, ablate, audit, presets."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from raydd.cli.common import Address, Dataset, NoRay, Preset, Quiet, Sets, Verbose, app, setup_torch, user_errors
from raydd.config import DEFAULT_PRESET
from raydd.errors import RayddError
from raydd.flags import config_from_flags


@app.command()
@user_errors
def report(run_dirs: Annotated[Optional[list[str]], typer.Argument(
               help="Run directories: one gives its full report, several a comparison table.", show_default=False)] = None,
           tune: Annotated[Optional[str], typer.Option(
               "--tune", help="A `raydd tune` output directory (trials.json, best.yaml): write the search's report.")] = None,
           out: Annotated[Optional[str], typer.Option(
               "--out", "-o", help="The page (.html) or a folder for report.html. Default: RUN_DIR/report.html; "
                                   "<common parent>/comparison/report.html for several runs; TUNE_DIR/report.html.")] = None) -> None:
    """Write a self-contained HTML report (images embedded, opens offline) of one run, several runs, or a search.

    An artifact that is present but unreadable (a cut eval.json) is left out of the page with a note, named
    on stderr, and makes the command exit with status 1 after writing the page."""
    from raydd.report import write_report, write_tune_report

    if not run_dirs and not tune:
        raise RayddError("report: give RUN_DIR [RUN_DIR ...], --tune DIR, or both")
    if run_dirs and tune and out:
        raise RayddError("--out names one page: report the runs and the search in two commands")
    problems = []
    if run_dirs:
        from raydd.report.rundata import load_run

        typer.echo(write_report(list(run_dirs), out=out))
        problems = [f"{run_dir}: {problem}" for run_dir in run_dirs for problem in load_run(run_dir).problems]
    if tune:
        typer.echo(write_tune_report(tune, out=out))
    if problems:  # the page shows them too; the exit status tells a script that something was left out
        for problem in problems:
            typer.echo(f"report: not shown: {problem}", err=True)
        raise typer.Exit(1)


@app.command("show-data")
@user_errors
def show_data(dataset: Dataset = None,
              output: Annotated[str, typer.Option("--output", "-o", help="PNG path.")] = "data.png",
              per_class: Annotated[int, typer.Option("--per-class", help="Images per class.")] = 4,
              set_: Sets = None) -> None:
    """Write a grid of real images with their mask outlines and captions."""
    from raydd.report.data_grid import show_data_grid
    from raydd.run_inputs import load_splits

    cfg = config_from_flags(sets=set_, dataset=dataset)
    show_data_grid(load_splits(cfg), per_class, output)
    typer.echo(output)


@app.command()
@user_errors
def ablate(datasets: Annotated[Optional[list[str]], typer.Option("--dataset", help="Datasets (repeatable); default cluttered-fashion-mnist and fashion-mnist (mask rows only). An imagefolder gets the caption rows when every image has a caption.")] = None,
           methods: Annotated[Optional[list[str]], typer.Option("--method", help="Base methods (repeatable); default dm and dsa.")] = None,
           ipc: Annotated[int, typer.Option("--ipc", help="Synthetic images per class.")] = 10,
           seeds: Annotated[Optional[list[int]], typer.Option("--seed", help="Seeds (repeatable); default 0 1 2.")] = None,
           preset: Preset = DEFAULT_PRESET,
           work_dir: Annotated[str, typer.Option("--work-dir", help="One run directory per row and seed; finished runs are reused.")] = "runs/ablation",
           output: Annotated[Optional[str], typer.Option("--output", help="Also write the markdown table here.")] = None,
           records: Annotated[Optional[str], typer.Option("--records", help="JSON-lines file of finished rows: rows recorded there under the same protocol are not re-run; new ones are added.")] = None,
           rows: Annotated[Optional[list[str]], typer.Option("--row", help="Only these rows (repeatable), e.g. base, dm+mm; default all.")] = None,
           table_only: Annotated[bool, typer.Option("--table-only", help="Tabulate the finished runs; run nothing.")] = False,
           set_: Sets = None) -> None:
    """Base, each enhancement alone, and all together: one protocol, several seeds, a table.

    --set METHOD:key=value applies to that method's rows only (e.g. dm:distill.iterations=100).
    """
    from raydd.ablation import AblationSpec, ablation_table, run_ablation
    from raydd.report.tables import emit_table

    setup_torch()
    spec = AblationSpec(datasets or ["cluttered-fashion-mnist", "fashion-mnist"], methods or ["dm", "dsa"], ipc,
                        seeds or [0, 1, 2], preset, set_ or [], rows or None)
    table = ablation_table(run_ablation(spec, work_dir, log=lambda line: typer.echo(line, err=True),
                                        table_only=table_only, records=records))
    emit_table(table, output)


@app.command()
@user_errors
def audit(run_dir: Annotated[str, typer.Argument(help="A run directory holding synthetic.safetensors and members.json.")],
          preset: Annotated[Optional[str], typer.Option("--preset", help="Audit sizes: quick (2-core CPU) or paper (GPU). Default: the run's own.")] = None,
          shadows: Annotated[Optional[int], typer.Option("--shadows", help="LiRA shadow pipelines per target kind.")] = None,
          members: Annotated[Optional[int], typer.Option("--members", help="Audited members (as many non-members from the test split).")] = None,
          set_: Sets = None, address: Address = None, verbose: Verbose = False, no_ray: NoRay = False, quiet: Quiet = False) -> None:
    """Privacy audit: membership inference (loss, LiRA) and nearest real images (writes audit.json, nn_pairs.png)."""
    from raydd.artifacts import AUDIT, NN_PAIRS_PNG
    from raydd.audit import audit_command, format_audit_table

    setup_torch()
    result = audit_command(run_dir, preset=preset, shadows=shadows, members=members, sets=set_ or [],
                           address=address, no_ray=no_ray, quiet=quiet)
    typer.echo(format_audit_table(result))
    typer.echo(f"audit: {run_dir}/{AUDIT}\nnearest pairs: {run_dir}/{NN_PAIRS_PNG}")


@app.command()
@user_errors
def presets() -> None:
    """List the presets, the method recipes (--method dm+mm) and the evaluation protocols, with their settings."""
    from raydd.config import EVAL_PROTOCOLS, Config, available_presets, available_recipes, preset_dict, recipe_dict

    typer.echo(f"# defaults (preset {DEFAULT_PRESET}; raydd/config.py)\n{json.dumps(Config().to_dict(), indent=2)}")
    for name in available_presets():
        typer.echo(f"# preset {name} (over the defaults)\n{json.dumps(preset_dict(name), indent=2)}")
    for name in available_recipes():
        typer.echo(f"# recipe {name} (--method {name})\n{json.dumps(recipe_dict(name), indent=2)}")
    for name, fields in sorted(EVAL_PROTOCOLS.items()):
        typer.echo(f"# evaluation protocol {name} (--set eval.protocol={name})\n{json.dumps({'eval': fields}, indent=2)}")
