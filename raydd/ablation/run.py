"""Running an ablation: one run directory per (dataset, method, row, seed), one record per finished run.

Finished work is never redone: a run directory with an eval.json, or a record of the same protocol in
the records file, stands for its row and seed. A killed ablation continues where it stopped (the run
in progress resumes from its checkpoint). Under a trained model pool, the rows of one seed share the
pool the first of them trained (``model-pools/`` in the work directory): no row changes what it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from raydd.ablation.records import AblationRecord, add_record, load_records, protocol_label, record_from_eval
from raydd.ablation.rows import caption_row_names, images_without_captions, rows_for, run_name, sets_for
from raydd.config import DEFAULT_PRESET, build_config, merge
from raydd.distill import run_distillation
from raydd.methods.dm_setup import sharing_model_pool
from raydd.errors import ConfigError, DataError
from raydd.artifacts import CONFIG, EVAL, SHARED_POOLS
from raydd.results import EvalResult
from raydd.rundir import RunDir
from raydd.workflows import evaluate_run

@dataclass
class AblationSpec:
    datasets: list[str]
    methods: list[str]
    ipc: int
    seeds: list[int]
    preset: str = DEFAULT_PRESET
    sets: list[str] | None = None  # key=value for every row, METHOD:key=value for that method's rows
    rows: list[str] | None = None  # only these rows (e.g. base, dm+mm); None: every row


def run_ablation(spec: AblationSpec, work_dir: str, *, runner: Callable | None = None,
                 log: Callable[[str], None] = print, table_only: bool = False,
                 records: str | None = None) -> list[AblationRecord]:
    """Run every missing (row, seed) and return the records of all; ``table_only`` runs nothing.

    With ``records`` (a JSON-lines path), rows already recorded there under the same protocol are
    taken from it, and every run finished here is added to it as soon as it finishes.
    """
    known = list(dict.fromkeys(row for method in spec.methods for row in rows_for(method, True)))
    unknown = [row for row in spec.rows or [] if row not in known]
    if unknown:
        raise ConfigError(f"unknown ablation row(s) {', '.join(unknown)}; rows: {', '.join(known)}")
    per_method = {method: sets_for(spec.sets, method, spec.methods) for method in spec.methods}
    captioned = {dataset: _has_every_caption(dataset, spec, table_only) for dataset in spec.datasets}
    if not table_only:
        _check_row_configs(spec, per_method, captioned)
    stored = load_records(records) if records else {}
    shared_pools = f"{work_dir}/{SHARED_POOLS}"
    results = []
    for dataset in spec.datasets:
        for method in spec.methods:
            protocol = protocol_label(spec.preset, per_method[method])
            for row, layer in rows_for(method, captioned[dataset]).items():
                if spec.rows is not None and row not in spec.rows:
                    continue
                for seed in spec.seeds:
                    name = run_name(dataset, method, row, spec.ipc, seed)
                    key = (dataset, method, row, spec.ipc, seed, protocol)
                    run = RunDir(str(Path(work_dir) / name))
                    if not run.has(EVAL):
                        if key in stored:
                            results.append(stored[key])
                            continue
                        if table_only:
                            continue
                        overrides = merge({"seed": seed, "data": {"name": dataset},
                                           "distill": {"method": method, "ipc": spec.ipc}}, layer)
                        cfg = build_config(spec.preset, overrides=overrides, sets=per_method[method])
                        resume = run.has(CONFIG)
                        with sharing_model_pool(cfg, run.path, shared_pools, new_run=not resume):
                            run_distillation(cfg, run.path, resume=resume, show_progress=False)
                        evaluate_run(run.path, cfg, runner=runner, show_progress=False)
                    ev = EvalResult.from_json(run.read_json(EVAL), run.file(EVAL))
                    record = record_from_eval(ev, dataset=dataset, method=method, row=row, ipc=spec.ipc, seed=seed,
                                              protocol=protocol, run=name)
                    log(f"{dataset} {method} {row} seed {seed}: {100 * record.accuracy.mean:.2f}")
                    results.append(record)
                    if records and stored.get(key) != record:
                        stored = add_record(records, record)
    return results


def _check_row_configs(spec: AblationSpec, per_method: dict[str, list[str]], captioned: dict[str, bool]) -> None:
    """Build every row's configuration before any row runs: a row the settings rule out (``+mask_init``
    under ``distill.init=noise``) stops the ablation now rather than after hours of the other rows."""
    refused: dict[str, str] = {}
    for dataset in spec.datasets:
        for method in spec.methods:
            for row, layer in rows_for(method, captioned[dataset]).items():
                if spec.rows is not None and row not in spec.rows:
                    continue
                overrides = merge({"seed": spec.seeds[0] if spec.seeds else 0, "data": {"name": dataset},
                                   "distill": {"method": method, "ipc": spec.ipc}}, layer)
                try:
                    build_config(spec.preset, overrides=overrides, sets=per_method[method])
                except ConfigError as exc:
                    refused.setdefault(f"{method} {row}", str(exc))
    if refused:
        first = next(iter(refused.values()))
        raise ConfigError(f"ablation row(s) {', '.join(refused)} cannot run with these settings ({first}); "
                          "leave them out with --row")


def _has_every_caption(dataset: str, spec: AblationSpec, table_only: bool) -> bool:
    """Whether ``dataset`` gets the caption rows; refuses, before any row runs, a half-captioned one.

    Without the check its caption rows would fail only after the other rows had run for hours.
    """
    missing = images_without_captions(dataset)
    wanted = spec.rows is None or bool(caption_row_names(spec.methods) & set(spec.rows))
    if missing and wanted and not table_only:
        raise DataError(f"{dataset}: {len(missing)} image(s) without a caption (first: {missing[0]}); the caption "
                        "rows need every image captioned (raydd preprocess --captioner can write them); or run "
                        "only the rows without captions (--row)")
    return missing == []
