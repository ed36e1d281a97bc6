"""Ray Tune search over distillation settings: many short distill + validate trials, ASHA stops the weak.

A search space is data: dotted config keys mapped to a list (a choice) or a range
(``("loguniform", lo, hi)`` in Python, ``{loguniform: [lo, hi]}`` in YAML); spaces shipped with raydd
(``raydd/configs/spaces``) are named instead of a file. Every trial is the base
config with its sampled values set, distilled in chunks into its own run directory
(``OUT/trials/<trial_id>``, resumed between chunks) and evaluated on the *validation* split after
each chunk; ``val_accuracy`` is what ASHA compares and what picks the best trial. Test data is never
looked at: ``raydd run --config OUT/best.yaml`` is where the test figure comes from.

Two searchers pick the trials' values: ``random`` (Tune's variant generator: every list and range
sampled independently, ``grid`` entries tried exhaustively) and ``optuna`` (Optuna's TPE sampler
through Tune's ``OptunaSearch``: after a few random trials, values are drawn where finished trials
scored well). Either works with either scheduler; the searcher's state is saved with Tune's
experiment, so ``--resume`` continues the same search.

Trials run in-process inside their Tune actor (no nested Ray Train or Ray tasks): each holds
``cpus_per_trial`` CPUs and trains with that many torch threads, so ``max_concurrent`` trials share
the machine without the nested-resource deadlock RAY_NOTES describes.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from raydd.artifacts import BEST, CONFIG, SEARCH, SHARED_POOLS, TRIALS, TRIALS_CSV
from raydd.config import Config, dump_yaml, merge, stored_layer
from raydd.errors import ConfigError, RayddError, RunDirError
from raydd.pipeline.cluster import check_resources, check_storage, ray_log_in, ray_session
from raydd.pipeline.tune_space import (  # noqa: F401  (the space's names are part of this module's interface)
    _plain, available_spaces, check_optuna_space, check_space, load_space,
    nest, normalize_space, require_optuna, trial_config, tune_domains,
)
from raydd.storage import absolute, exists, is_remote, read_text, write_text_atomic

METRIC = "val_accuracy"
EXPERIMENT = "tune"  # Ray's experiment directory: OUT/tune
SCHEDULERS = ("asha", "fifo")
SEARCHERS = ("random", "optuna")
TPE_STARTUP_MAX = 10  # Optuna's own default number of random trials before TPE models the results


@dataclass
class TuneResult:
    best_params: dict[str, Any]
    best_val_accuracy: float
    best_trial_id: str
    best_iterations: int
    trials: list[dict[str, Any]] = field(default_factory=list)
    out: str = ""
    experiment_path: str = ""


# -- one trial --------------------------------------------------------------------------------------
def total_iterations(cfg: Config) -> int:
    from raydd.methods import method_class

    d = cfg.distill
    return d.iterations if d.iterations is not None else method_class(d.method).default_iterations


def chunk_targets(total: int, every: int, done: int) -> list[int]:
    """Iteration counts at which a trial evaluates and reports; a finished trial re-reports its end."""
    marks = sorted({*range(every, total, every), total})
    return [m for m in marks if m > done] or [total]


def run_trial(params: dict[str, Any], *, base: dict[str, Any], out: str, report_every: int, threads: int) -> None:
    """Tune function trainable: distill a chunk, validate, report; repeat until ASHA or the end stops it.

    A restarted trial (``FailureConfig`` or ``Tuner.restore``) continues from its run directory's
    checkpoint: the directory is named by the trial id, which Tune keeps across restores. Under a
    trained model pool the trials share the pool the first of them trained (``OUT/model-pools``):
    the searched weights do not change it.
    """
    import torch
    from ray import tune

    from raydd.distill import run_distillation
    from raydd.methods.dm_setup import sharing_model_pool
    from raydd.run_inputs import load_splits
    from raydd.rundir import RunDir
    from raydd.workflows import evaluate_run

    torch.set_num_threads(threads)
    cfg = trial_config(base, params)
    run = RunDir(f"{out}/trials/{tune.get_context().get_trial_id()}")
    splits = load_splits(cfg)
    total = total_iterations(cfg)
    checkpoint = run.load_checkpoint() if run.has(CONFIG) else None
    done = checkpoint[1] if checkpoint else 0
    t0 = time.perf_counter()
    for target in chunk_targets(total, report_every, done):
        step = copy.deepcopy(cfg)
        step.distill.iterations = target
        resume = run.has(CONFIG)
        with sharing_model_pool(step, run.path, f"{out}/{SHARED_POOLS}", new_run=not resume):
            run_distillation(step, run.path, resume=resume, splits=splits, show_progress=False)
        result = evaluate_run(run.path, step, split="val", show_progress=False)
        tune.report({METRIC: result.accuracy.mean, "val_accuracy_std": float(result.accuracy.std),
                     "iterations": target, "seconds": round(time.perf_counter() - t0, 3),
                     "split": (result.protocol or {}).get("tested_on", "val"), "run_dir": run.path})


# -- the search -------------------------------------------------------------------------------------
def _localize_data_paths(base: dict[str, Any]) -> dict[str, Any]:
    """Relative dataset paths would break inside trial actors; pin them to this process's directory."""
    data = base.get("data", {})
    for key in ("name", "root"):
        value = data.get(key)
        if isinstance(value, str) and not is_remote(value) and os.path.exists(value):
            data[key] = os.path.abspath(value)
    return base


def _scheduler(kind: str, total: int, grace: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if kind == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="iterations", max_t=total, grace_period=grace, reduction_factor=2)


def optuna_plan(num_samples: int, max_concurrent: int) -> tuple[int, int]:
    """(random startup trials, trials at once) for the optuna searcher.

    TPE models finished trials, so a search where every trial starts before any has finished is a
    random search. At most half the trials run at once, and the first half of the trials (at most
    Optuna's default of 10) are drawn at random before TPE takes over."""
    half = max(1, num_samples // 2)
    return min(TPE_STARTUP_MAX, half), min(max_concurrent, half)


def _settings(cfg: Config, space: dict[str, Any], *, num_samples: int, max_concurrent: int, scheduler: str,
              grace_iterations: int | None, report_every: int | None, cpus_per_trial: float,
              gpus_per_trial: float, searcher: str = "random") -> dict[str, Any]:
    """Everything that defines a search, saved as OUT/search.json so a resume repeats it exactly."""
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    if searcher not in SEARCHERS:
        raise ConfigError(f"searcher must be one of {', '.join(SEARCHERS)}, got {searcher!r}")
    if num_samples < 1 or max_concurrent < 1:
        raise ConfigError("num_samples and max_concurrent must be >= 1")
    if cpus_per_trial <= 0 or gpus_per_trial < 0:
        raise ConfigError("cpus_per_trial must be > 0 and gpus_per_trial >= 0")
    from raydd.run_inputs import check_names

    check_names(cfg)
    base = _localize_data_paths(cfg.to_dict())
    normalized = normalize_space(space)
    check_space(base, normalized)
    planned: dict[str, Any] = {}
    if searcher == "optuna":
        check_optuna_space(normalized)
        require_optuna()
        startup, concurrent = optuna_plan(num_samples, max_concurrent)
        if concurrent < max_concurrent:
            print(f"note: the optuna searcher runs at most {concurrent} of {num_samples} trials at once (not "
                  f"{max_concurrent}): it learns from finished trials", file=sys.stderr)
        planned = {"max_concurrent": concurrent, "startup_trials": startup}
    total = total_iterations(cfg)
    if total < 1:
        raise ConfigError("distill.iterations must be >= 1 for a search")
    grace = min(total, grace_iterations or max(1, total // 4))
    every = min(total, report_every or grace)
    if grace < 1 or every < 1:
        raise ConfigError("grace_iterations and report_every must be >= 1")
    return {"base": base, "space": normalized, "num_samples": num_samples, "max_concurrent": max_concurrent,
            "searcher": searcher, "scheduler": scheduler, "total_iterations": total, "grace_iterations": grace,
            "report_every": every, "cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial,
            "metric": METRIC, "mode": "max", "split": "val", **planned}


def search_algorithm(settings: dict[str, Any]):
    """The searcher ``settings`` name, seeded with the run seed and limited to ``max_concurrent`` trials.

    The concurrency limit lives on the searcher: Tune ignores ``max_concurrent_trials`` beside one."""
    seed = settings["base"].get("seed", 0)
    if settings.get("searcher", "random") == "optuna":
        optuna = require_optuna()
        from ray.tune.search import ConcurrencyLimiter
        from raydd.pipeline.tune_optuna import StoppedTrialsAsPruned

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # Tune reports the trials; no line per trial
        # constant_liar: values of trials still running count as bad ones, so concurrent trials spread out
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings["startup_trials"],
                                             constant_liar=True)
        searcher = StoppedTrialsAsPruned(sampler=sampler, total=settings["total_iterations"])
        return ConcurrencyLimiter(searcher, max_concurrent=settings["max_concurrent"])
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed, max_concurrent=settings["max_concurrent"])


def _trainable(settings: dict[str, Any], out: str):
    from ray import tune

    threads = max(1, math.floor(settings["cpus_per_trial"]))
    fn = tune.with_parameters(run_trial, base=settings["base"], out=out, report_every=settings["report_every"],
                              threads=threads)
    return tune.with_resources(fn, {"cpu": settings["cpus_per_trial"], "gpu": settings["gpus_per_trial"]})


def _tuner(settings: dict[str, Any], out: str, resume: bool, show_progress: bool, callbacks: list | None = None):
    from ray import tune

    path = f"{out}/{EXPERIMENT}"
    trainable = _trainable(settings, out)
    if resume:
        if not tune.Tuner.can_restore(path):
            raise RunDirError(f"{path}: no Tune experiment to resume")
        # The searcher (Optuna's study and sampler state included), the scheduler and the trials come
        # back from the experiment directory: finished trials are kept, the rest run or are sampled.
        return tune.Tuner.restore(path, trainable, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=tune_domains(settings["space"]),
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max", num_samples=settings["num_samples"],
            scheduler=_scheduler(settings["scheduler"], settings["total_iterations"], settings["grace_iterations"]),
            search_alg=search_algorithm(settings),
            trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=tune.RunConfig(name=EXPERIMENT, storage_path=out, verbose=1 if show_progress else 0,
                                  failure_config=tune.FailureConfig(max_failures=1), callbacks=callbacks),
    )


def tune_search(
    cfg: Config,
    out: str,
    *,
    space: dict[str, Any],
    num_samples: int = 8,
    max_concurrent: int = 2,
    scheduler: str = "asha",
    searcher: str = "random",
    resume: bool = False,
    address: str | None = None,
    grace_iterations: int | None = None,
    report_every: int | None = None,
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 0,
    show_progress: bool = True,
    callbacks: list | None = None,
) -> TuneResult:
    """Search ``space`` around ``cfg``; write best.yaml, trials.csv, trials.json and tune/ into ``out``.

    ``grace_iterations``: distillation iterations every trial runs before ASHA may stop it (default a
    quarter of the run); ``report_every``: iterations between validation reports (default the grace).
    ``searcher``: ``random`` (lists and ranges sampled independently, grids tried exhaustively) or
    ``optuna`` (TPE; ranges and lists only; needs the ``tune`` extra). ``callbacks``: Ray Tune callbacks
    for a new search (a resumed one keeps those it was started with).
    ``resume=True`` continues the search in ``out`` as it was started (its saved settings win over
    ``cfg``, ``space`` and the other arguments).
    """
    out = absolute(str(out).rstrip("/"))
    check_storage(out, write=True)
    settings_file = f"{out}/{SEARCH}"
    if resume:
        if not exists(settings_file):
            raise RunDirError(f"{out}: no search to resume ({SEARCH} is missing)")
        settings = json.loads(read_text(settings_file))
        if settings.get("searcher") == "optuna":
            require_optuna()  # the saved study is Optuna's: say so before Tune fails to unpickle it
    else:
        if exists(settings_file) or exists(f"{out}/{EXPERIMENT}"):
            raise RunDirError(f"{out}: already holds a search; continue it with --resume or pick another --out")
        check_storage(cfg.data.name)  # a dataset URI must be readable before trials are scheduled
        settings = _settings(cfg, space, num_samples=num_samples, max_concurrent=max_concurrent,
                             scheduler=scheduler, grace_iterations=grace_iterations, report_every=report_every,
                             cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, searcher=searcher)
    # Trials must see the job's working directory (relative dataset paths), not their trial folder.
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    with ray_session(address):
        ray_log_in(out)
        check_resources(1, settings["cpus_per_trial"], settings["gpus_per_trial"])
        if not resume:
            write_text_atomic(settings_file, json.dumps(settings, indent=2))
        grid = _tuner(settings, out, resume, show_progress, callbacks).fit()
        trials = collect_trials(grid, settings)
        ended, planned = grid.num_terminated + grid.num_errors, planned_trials(settings)
    if ended < planned:  # stopped (Ctrl+C, SIGUSR1): Tune saved the experiment and returned
        print(f"note: the search stopped with {ended} of {planned} trials ended; continue it with --resume "
              f"--out {out}", file=sys.stderr)
    return write_outputs(out, settings, trials, grid.experiment_path)


def planned_trials(settings: dict[str, Any]) -> int:
    """Trials a search runs in all: ``num_samples`` times every combination of its grid entries."""
    grids = [len(spec["grid"]) for spec in settings["space"].values() if "grid" in spec]
    return settings["num_samples"] * math.prod(grids)


# -- results ----------------------------------------------------------------------------------------
def collect_trials(grid, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per trial: its values, last validation accuracy, iterations reached and how it ended."""
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        iterations = int(metrics.get("iterations", 0) or 0)
        if result.error is not None:
            status = "error"
        elif iterations >= settings["total_iterations"]:
            status = "completed"
        elif iterations > 0:
            status = "stopped_early"
        else:
            status = "no_result"
        rows.append({
            "trial_id": os.path.basename(str(result.path).rstrip("/")),
            "status": status,
            METRIC: metrics.get(METRIC),
            "val_accuracy_std": metrics.get("val_accuracy_std"),
            "iterations": iterations,
            "seconds": metrics.get("seconds"),
            "params": {k: _plain(v) for k, v in (result.config or {}).items()},
            "run_dir": metrics.get("run_dir"),
            "error": None if result.error is None else f"{type(result.error).__name__}: {result.error}"[:500],
        })
    return sorted(rows, key=lambda r: r["trial_id"])


def pick_best(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Highest validation accuracy among trials that ran to the end (else among any that reported).

    A trial ASHA stopped was already behind its peers at that point; comparing it with finished
    trials at its earlier iteration count would favour short runs.
    """
    scored = [t for t in trials if t[METRIC] is not None and t["status"] != "error"]
    finished = [t for t in scored if t["status"] == "completed"]
    pool = finished or scored
    return max(pool, key=lambda t: (t[METRIC], t["iterations"])) if pool else None


def trials_csv(trials: list[dict[str, Any]], keys: list[str]) -> str:
    buffer = io.StringIO()
    columns = ["trial_id", "status", METRIC, "val_accuracy_std", "iterations", "seconds", *keys, "run_dir", "error"]
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for t in trials:
        writer.writerow({**{c: t.get(c) for c in columns if c not in keys}, **{k: t["params"].get(k) for k in keys}})
    return buffer.getvalue()


# Given by the flags of the run that uses best.yaml (its header says which), not by the file.
RUN_FLAG_FIELDS = {("data",), ("device",), ("seed",), ("preset",), ("distill", "method"), ("distill", "recipe"),
                   ("distill", "ipc")}


def _differing(value: Any, default: Any, path: tuple[str, ...] = ()) -> Any:
    """The parts of ``value`` that differ from ``default`` (nested dicts), skipping ``RUN_FLAG_FIELDS``."""
    if path in RUN_FLAG_FIELDS:
        return None
    if isinstance(value, dict) and isinstance(default, dict):
        out = {}
        for key, item in value.items():
            differs = _differing(item, default.get(key), (*path, key))
            if differs is not None:
                out[key] = differs
        return out or None
    return None if value == default else value


def base_settings(base: dict[str, Any]) -> dict[str, Any]:
    """What the search's base set beyond its preset and method (the switches a searched weight acts
    through, e.g. ``mm.cm`` for ``mm.lambda_cm``): without them best.yaml's weights would do nothing."""
    from raydd.config import DEFAULT_PRESET, build_config

    base = merge(stored_layer(base))
    method = base["distill"].get("recipe") or base["distill"]["method"]
    flags = {"distill": {"method": method, "ipc": base["distill"]["ipc"]}}  # presets differ by method and IPC
    default = build_config(base.get("preset") or DEFAULT_PRESET, overrides=flags).to_dict()
    return _differing(base, default) or {}


def best_yaml(best: dict[str, Any], settings: dict[str, Any], count: int) -> str:
    base = settings["base"]
    header = [
        f"# raydd tune: best of {count} trials by validation accuracy (split val; test data never used)",
        f"# trial {best['trial_id']}: val_accuracy {best[METRIC]:.4f} after {best['iterations']} iterations",
        f"# base: preset {base.get('preset')}, method {base['distill']['method']}, ipc {base['distill']['ipc']}, "
        f"dataset {base['data']['name']}",
        "# use: raydd run --config best.yaml (with the same dataset, method and ipc flags)",
    ]
    chosen = merge(base_settings(base), nest(best["params"]))  # keys spelled as today
    return "\n".join(header) + "\n" + dump_yaml(chosen)


def write_outputs(out: str, settings: dict[str, Any], trials: list[dict[str, Any]], experiment_path: str) -> TuneResult:
    keys = list(settings["space"])
    write_text_atomic(f"{out}/{TRIALS_CSV}", trials_csv(trials, keys))
    best = pick_best(trials)
    summary = {"metric": METRIC, "mode": "max", "split": "val", "searcher": settings.get("searcher", "random"),
               "best": best, "trials": trials, "experiment_path": experiment_path,
               "total_iterations": settings["total_iterations"]}
    write_text_atomic(f"{out}/{TRIALS}", json.dumps(summary, indent=2, default=str))
    if best is None:
        errors = [t["error"] for t in trials if t["error"]]
        raise RayddError(f"{out}: no trial reported a validation accuracy"
                         + (f"; first error: {errors[0]}" if errors else ""))
    write_text_atomic(f"{out}/{BEST}", best_yaml(best, settings, len(trials)))
    return TuneResult(best_params=best["params"], best_val_accuracy=best[METRIC], best_trial_id=best["trial_id"],
                      best_iterations=best["iterations"], trials=trials, out=out, experiment_path=experiment_path)
