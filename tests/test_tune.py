"""Ray Tune search: space parsing, a 2-trial search on a tiny imagefolder, validation-only objective, resume;
the optuna (TPE) searcher with ASHA, stopped part-way and resumed."""

from __future__ import annotations

import csv
import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from raydd.artifacts import MODEL_POOL, SHARED_POOLS, TRIALS_CSV
from raydd.config import build_config
from raydd.errors import ConfigError, RayddError, RunDirError
from raydd.pipeline.tune import chunk_targets, load_space, normalize_space, pick_best, tune_search
from tests.faults import InterruptSearch
from tests.helpers import write_imagefolder

TINY = ["device=cpu", "distill.ipc=1", "distill.iterations=4", "distill.batch_real=4", "distill.log_every=1",
        "eval.models=1", "eval.epochs=2", "eval.batch=16", "data.val_fraction=0.25"]
TRAINED_POOL = ["dm.bank=true", "dm.pool=trained", "dm.networks=2", "dm.draws=1", "dm.bank_real=4",
                "dm.pool_trainings=1", "dm.pool_steps=2"]
SPACE = {"distill.lr_img": [0.1, 10.0], "distill.momentum": ("uniform", 0.3, 0.7)}


def _written_span(run_dir: Path) -> tuple[float, float]:
    times = [f.stat().st_mtime for f in run_dir.rglob("*") if f.is_file()]
    return min(times), max(times)


def tiny_config(dataset: Path):
    return build_config("quick", overrides={"data": {"name": str(dataset)}}, sets=TINY)


def test_space_forms_normalise_to_one_shape(tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text("distill.lr_img: {loguniform: [0.01, 10]}\ndistill.init: [real, noise]\n"
                          "distill.batch_real: {randint: [4, 9]}\ndistill.momentum: {grid: [0.5, 0.9]}\n")
    from_yaml = normalize_space(load_space(space_file))
    from_python = normalize_space({"distill.lr_img": ("loguniform", 0.01, 10), "distill.init": ["real", "noise"],
                                   "distill.batch_real": ("randint", 4, 9), "distill.momentum": ("grid", [0.5, 0.9])})
    assert from_yaml == from_python == {"distill.lr_img": {"loguniform": [0.01, 10]},
                                        "distill.init": {"choice": ["real", "noise"]},
                                        "distill.batch_real": {"randint": [4, 9]},
                                        "distill.momentum": {"grid": [0.5, 0.9]}}


@pytest.mark.parametrize("space", [{}, {"distill.lr_img": []}, {"distill.lr_img": ("loguniform", 0, 1)},
                                   {"distill.lr_img": ("gaussian", 0, 1)}, {"distill.lr_img": 3.0}])
def test_bad_spaces_are_config_errors(space):
    with pytest.raises(ConfigError):
        normalize_space(space)


def test_unknown_key_fails_before_ray_starts(tmp_path):
    cfg = build_config("quick", sets=TINY)
    with pytest.raises(ConfigError, match="distill.lr_imgs"):
        tune_search(cfg, str(tmp_path / "search"), space={"distill.lr_imgs": [1.0]}, num_samples=1)
    with pytest.raises(ConfigError, match="distill.init"):
        tune_search(cfg, str(tmp_path / "search"), space={"distill.init": ["real", "gan"]}, num_samples=1)


def test_chunks_and_best_pick():
    assert chunk_targets(10, 4, 0) == [4, 8, 10]
    assert chunk_targets(10, 4, 8) == [10]
    assert chunk_targets(10, 4, 10) == [10]  # a restored finished trial reports its end again
    trials = [{"trial_id": "a", "status": "stopped_early", "val_accuracy": 0.9, "iterations": 2},
              {"trial_id": "b", "status": "completed", "val_accuracy": 0.6, "iterations": 4},
              {"trial_id": "c", "status": "error", "val_accuracy": None, "iterations": 0}]
    assert pick_best(trials)["trial_id"] == "b"


@pytest.mark.timeout(240)
def test_two_trial_search_selects_on_validation_and_resumes(tmp_path, ray_local):
    dataset = write_imagefolder(tmp_path / "data")
    out = tmp_path / "search"
    pooled = lambda: build_config("quick", overrides={"data": {"name": str(dataset)}},  # noqa: E731
                                  sets=TINY + TRAINED_POOL)
    result = tune_search(pooled(), str(out), space=SPACE, num_samples=2, max_concurrent=1,
                         scheduler="asha", grace_iterations=2, show_progress=False)

    # best.yaml is a config layer the CLI accepts: the searched values and what the base changed from quick
    best = yaml.safe_load((out / "best.yaml").read_text())
    base = tiny_config(dataset)
    assert set(best["distill"]) == {"lr_img", "momentum", "iterations", "batch_real", "log_every"}
    assert (best["distill"]["iterations"], best["distill"]["batch_real"]) == (base.distill.iterations,
                                                                              base.distill.batch_real)
    assert best["dm"]["pool"] == "trained"
    cfg = build_config("quick", file=out / "best.yaml")
    assert cfg.distill.lr_img == result.best_params["distill.lr_img"]

    rows = list(csv.DictReader((out / TRIALS_CSV).open()))
    assert len(rows) == 2
    assert {r["status"] for r in rows} <= {"completed", "stopped_early"}
    assert all(r["distill.lr_img"] in ("0.1", "10.0") for r in rows)
    summary = json.loads((out / "trials.json").read_text())
    assert summary["split"] == "val" and len(summary["trials"]) == 2

    # the objective is validation accuracy: trials wrote eval_val.json and never eval.json
    for trial in summary["trials"]:
        run_dir = out / "trials" / trial["trial_id"]
        assert (run_dir / "eval_val.json").is_file()
        assert not (run_dir / "eval.json").exists()
        assert json.loads((run_dir / "eval_val.json").read_text())["protocol"]["tested_on"] == "val"
    assert any(t["iterations"] == 4 for t in summary["trials"])
    assert (out / "tune").is_dir()

    # The searched weights do not change the trained model pool: the first trial trained it, the second
    # read it (a pool trained again carries its own training time in its metadata: the bytes would differ).
    shared = list((out / SHARED_POOLS).iterdir())
    assert len(shared) == 1
    pools = {(out / "trials" / t["trial_id"] / MODEL_POOL).read_bytes() for t in summary["trials"]}
    assert pools == {shared[0].read_bytes()}

    # max_concurrent=1 on a 2-CPU Ray with 1 CPU per trial: the second trial starts after the first
    # has written its last file (each trial's run directory spans [first write, last write])
    spans = sorted(_written_span(out / "trials" / t["trial_id"]) for t in summary["trials"])
    assert spans[1][0] > spans[0][1], f"trials overlapped: {spans}"

    # restoring the finished experiment works and reproduces the same table
    again = tune_search(pooled(), str(out), space=SPACE, num_samples=2, max_concurrent=1,
                        scheduler="asha", grace_iterations=2, resume=True, show_progress=False)
    assert again.best_trial_id == result.best_trial_id
    assert len(again.trials) == 2
    with pytest.raises(RunDirError, match="already holds a search"):
        tune_search(tiny_config(dataset), str(out), space=SPACE, num_samples=2, show_progress=False)


@pytest.mark.timeout(240)
def test_errored_search_resumes_once_the_cause_is_fixed(tmp_path, ray_local):
    """Trials that failed (here: the dataset was not there yet) rerun on resume and finish."""
    dataset = tmp_path / "late-data"
    out = tmp_path / "search"
    cfg = tiny_config(dataset)
    with pytest.raises(RayddError, match="no trial reported"):
        tune_search(cfg, str(out), space={"distill.lr_img": [1.0]}, num_samples=1, scheduler="fifo",
                    show_progress=False)
    assert json.loads((out / "trials.json").read_text())["trials"][0]["status"] == "error"
    write_imagefolder(dataset)
    result = tune_search(cfg, str(out), space={}, num_samples=1, resume=True, show_progress=False)
    assert result.trials[0]["status"] == "completed"
    assert (out / "best.yaml").is_file()


def test_job_entrypoint_help():
    """jobs/tune.py is importable as a script and documents its flags."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "jobs" / "tune.py"), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for flag in ("--space", "--out", "--num-samples", "--scheduler", "--searcher", "--resume", "--address"):
        assert flag in done.stdout


def test_a_space_or_a_saved_base_with_old_spellings_means_the_same_trial():
    from raydd.pipeline.tune import best_yaml, check_space, trial_config

    old_base = yaml.safe_load((Path(__file__).parent / "data" / "rundir-config-quick-dsa-ipc1.yaml").read_text())
    for key in ("raydd_version", "git_sha"):
        old_base.pop(key)
    new_base = build_config("quick", overrides={"distill": {"method": "dsa", "ipc": 1}}).to_dict()
    space = normalize_space({"distill.outer_loop": [1, 2], "mm.cc_dim": {"randint": [16, 64]}})
    check_space(old_base, space)
    trial = trial_config(old_base, {"distill.outer_loop": 2, "mm.cc_dim": 32})
    assert trial == trial_config(new_base, {"gradmatch.outer_loop": 2, "fusion.projection_dim": 32})
    best = {"trial_id": "t", "val_accuracy": 0.5, "iterations": 3, "params": {"mm.cc_dim": 32}}
    written = yaml.safe_load(best_yaml(best, {"base": new_base}, 1))
    assert written == {"fusion": {"projection_dim": 32}}  # best.yaml spells each key as today


# -- the optuna searcher ----------------------------------------------------------------------------
OPTUNA_SPACE = {"distill.lr_img": ("loguniform", 0.1, 10.0), "distill.momentum": ("uniform", 0.3, 0.7),
                "distill.init": ["real", "noise"]}


def _optuna_settings(space, *, num_samples=8, max_concurrent=2, seed=0):
    from raydd.pipeline.tune import _settings

    cfg = build_config("quick", sets=[*TINY, f"seed={seed}"])
    return _settings(cfg, space, num_samples=num_samples, max_concurrent=max_concurrent, scheduler="asha",
                     grace_iterations=2, report_every=None, cpus_per_trial=1, gpus_per_trial=0, searcher="optuna")


def test_optuna_takes_ranges_and_choices_and_refuses_a_grid(tmp_path):
    from raydd.pipeline.tune import check_optuna_space

    check_optuna_space(normalize_space({**OPTUNA_SPACE, "distill.batch_real": ("randint", 2, 5)}))
    with pytest.raises(ConfigError, match=r"distill.momentum: a grid .* write the values as a list"):
        check_optuna_space(normalize_space({"distill.momentum": {"grid": [0.5, 0.9]}}))
    with pytest.raises(ConfigError, match="eval.cross_arch: the optuna searcher chooses among numbers"):
        check_optuna_space(normalize_space({"eval.cross_arch": [["alexnet"], ["vgg11"]]}))
    # through the search itself: refused before Ray starts, nothing written
    cfg = build_config("quick", sets=TINY)
    out = tmp_path / "search"
    with pytest.raises(ConfigError, match="distill.momentum: a grid"):
        tune_search(cfg, str(out), space={"distill.momentum": {"grid": [0.5, 0.9]}}, searcher="optuna")
    with pytest.raises(ConfigError, match="searcher must be one of random, optuna"):
        tune_search(cfg, str(out), space=SPACE, searcher="hyperopt")
    assert not (out / "search.json").exists()


def test_cli_and_job_pass_the_searcher_on(tmp_path):
    """`raydd tune --searcher optuna` and jobs/tune.py --searcher optuna reach the search (a grid is refused)."""
    import importlib.util

    from typer.testing import CliRunner

    from raydd.cli import app

    space = tmp_path / "grid.yaml"
    space.write_text("distill.momentum: {grid: [0.5, 0.9]}\n")
    flags = ["--out", str(tmp_path / "search"), "--space", str(space), "--searcher", "optuna", "--set", "device=cpu"]
    r = CliRunner().invoke(app, ["tune", *flags])
    assert r.exit_code == 2 and "distill.momentum: a grid" in r.output
    spec = importlib.util.spec_from_file_location("tune_job", Path(__file__).resolve().parents[1] / "jobs" / "tune.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    with pytest.raises(ConfigError, match="distill.momentum: a grid"):
        job.main(flags)
    assert not (tmp_path / "search" / "search.json").exists()


def test_optuna_missing_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    cfg = build_config("quick", sets=TINY)
    with pytest.raises(ConfigError, match=r"needs the package optuna \(pip install 'raydd\[tune\]'\)"):
        tune_search(cfg, str(tmp_path / "search"), space=OPTUNA_SPACE, searcher="optuna")
    saved = tmp_path / "saved"  # resuming an optuna search says the same, before Tune unpickles the study
    saved.mkdir()
    (saved / "search.json").write_text(json.dumps({"searcher": "optuna"}))
    with pytest.raises(ConfigError, match=r"pip install 'raydd\[tune\]'"):
        tune_search(cfg, str(saved), space={}, resume=True)


def test_optuna_searcher_is_a_seeded_tpe_under_a_concurrency_limit():
    """What search.json records and what Tune is handed: TPE seeded with the run seed, a few random trials
    first, at most half the trials at once; the same seed suggests the same values, within the ranges."""
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from raydd.pipeline.tune import METRIC, optuna_plan, search_algorithm, tune_domains

    assert optuna_plan(4, 2) == (2, 2)
    assert optuna_plan(8, 8) == (4, 4)  # TPE learns from finished trials: never all at once
    assert optuna_plan(64, 8) == (10, 8)  # Optuna's default startup; the user's concurrency
    assert optuna_plan(1, 3) == (1, 1)

    def suggestions(seed):
        settings = _optuna_settings({**OPTUNA_SPACE, "distill.batch_real": ("randint", 2, 5)}, seed=seed)
        assert settings["searcher"] == "optuna" and settings["startup_trials"] == 4
        assert settings["max_concurrent"] == 2
        alg = search_algorithm(settings)
        assert isinstance(alg, ConcurrencyLimiter) and alg.max_concurrent == 2
        assert isinstance(alg.searcher, OptunaSearch)
        assert isinstance(alg.searcher._sampler, optuna.samplers.TPESampler)
        alg.set_search_properties(METRIC, "max", tune_domains(settings["space"]))
        return [alg.searcher.suggest(f"t{i}") for i in range(6)]

    first = suggestions(seed=3)
    assert first == suggestions(seed=3) and first != suggestions(seed=4)
    for values in first:
        assert 0.1 <= values["distill.lr_img"] <= 10 and 0.3 <= values["distill.momentum"] <= 0.7
        assert values["distill.init"] in ("real", "noise") and values["distill.batch_real"] in (2, 3, 4)


def test_shipped_space_holds_the_multimodal_weights():
    from raydd.config import current_key
    from raydd.pipeline.tune import available_spaces, check_optuna_space, check_space

    assert "mm-weights" in available_spaces()
    space = normalize_space(load_space("mm-weights"))
    assert {current_key(k) for k in space} == {"mm.lambda_cm", "mm.tau", "mm.lambda_mfa", "mm.fill", "mm.cc_alpha",
                                               current_key("mm.cc_dim")}
    assert space["mm.fill"] == {"choice": ["mean", "blur", "noise"]}
    assert all(isinstance(v, int) for v in space["fusion.projection_dim"]["choice"])
    check_optuna_space(space)
    check_space(build_config("quick", overrides={"mm": {"cc": True, "cm": True, "mfa": True}}).to_dict(), space)
    with pytest.raises(ConfigError, match="spaces shipped with raydd: .*mm-weights"):
        load_space("mm-weight")


def _untouched(run_dir: Path) -> tuple:
    """What a trial that is not run again keeps: every file's size and modification time."""
    return tuple(sorted((str(f.relative_to(run_dir)), f.stat().st_size, f.stat().st_mtime_ns)
                        for f in run_dir.rglob("*") if f.is_file()))


@pytest.mark.timeout(300)
def test_optuna_search_with_asha_resumes_without_repeating_trials(tmp_path, ray_local, capsys):
    """A 4-trial TPE + ASHA search, stopped after 2 trials finished and resumed in the same directory:
    4 trials in all, the finished ones kept as they were; values within the ranges; best on validation."""
    import optuna

    from raydd.report import write_tune_report

    dataset = write_imagefolder(tmp_path / "data")
    out = tmp_path / "search"
    stop = InterruptSearch(str(tmp_path / "interrupted.json"), after=2)
    tune_search(tiny_config(dataset), str(out), space=OPTUNA_SPACE, num_samples=4, max_concurrent=2,
                scheduler="asha", searcher="optuna", grace_iterations=2, show_progress=False, callbacks=[stop])
    finished = json.loads((tmp_path / "interrupted.json").read_text())["finished"]
    assert len(finished) == 2
    assert "continue it with --resume" in capsys.readouterr().err
    settings = json.loads((out / "search.json").read_text())
    assert (settings["searcher"], settings["scheduler"]) == ("optuna", "asha")
    assert (settings["startup_trials"], settings["max_concurrent"]) == (2, 2)
    before = {t["trial_id"]: t for t in json.loads((out / "trials.json").read_text())["trials"]}
    assert set(finished) <= set(before)
    kept = {tid: (_untouched(out / "trials" / tid), (out / "tune" / tid / "result.json").read_text())
            for tid in finished}
    stopped_at = time.time()

    # --resume: the saved settings win (the searcher given here is ignored)
    result = tune_search(tiny_config(dataset), str(out), space={}, searcher="random", resume=True,
                         show_progress=False)
    trials = {t["trial_id"]: t for t in result.trials}
    assert len(result.trials) == len(trials) == 4
    for tid in finished:  # not run again: same values, same files, no further Tune reports
        assert trials[tid]["params"] == before[tid]["params"] and trials[tid]["status"] == before[tid]["status"]
        assert (_untouched(out / "trials" / tid), (out / "tune" / tid / "result.json").read_text()) == kept[tid]
    assert "search stopped" not in capsys.readouterr().err
    resumed = [tid for tid in trials if (out / "trials" / tid / "eval_val.json").stat().st_mtime > stopped_at]
    assert resumed and not set(resumed) & set(finished)  # the resumed search ran the rest, and only the rest
    for t in trials.values():
        assert t["status"] in ("completed", "stopped_early")
        p = t["params"]
        assert 0.1 <= p["distill.lr_img"] <= 10 and 0.3 <= p["distill.momentum"] <= 0.7
        assert p["distill.init"] in ("real", "noise")
        run_dir = out / "trials" / t["trial_id"]
        assert (run_dir / "eval_val.json").is_file() and not (run_dir / "eval.json").exists()

    # the best is the highest validation accuracy among trials that ran to the end, and best.yaml holds it
    completed = [t for t in trials.values() if t["status"] == "completed"]
    assert completed and result.best_val_accuracy == max(t["val_accuracy"] for t in completed)
    assert trials[result.best_trial_id]["status"] == "completed"
    best = build_config("quick", file=out / "best.yaml")
    assert best.distill.lr_img == result.best_params["distill.lr_img"]
    assert best.distill.init == result.best_params["distill.init"]

    # Tune's saved searcher is Optuna's TPE, and its study holds each trial once, every one told its result:
    # complete when it ran to the end, pruned when ASHA stopped it
    state_file = sorted((out / "tune").glob("searcher-state-*.pkl"))[-1]
    with open(state_file, "rb") as f:
        state = pickle.load(f)  # Tune's own file, written by this test's search
    assert isinstance(state["_sampler"], optuna.samplers.TPESampler)
    study_trials = state["_ot_study"].trials
    assert len(study_trials) == 4
    told = {tuple(sorted(st.params.items())): st.state for st in study_trials}
    expected = {"completed": optuna.trial.TrialState.COMPLETE, "stopped_early": optuna.trial.TrialState.PRUNED}
    assert told == {tuple(sorted(t["params"].items())): expected[t["status"]] for t in trials.values()}
    assert sorted(sorted(st.params.items()) for st in study_trials) == \
        sorted(sorted(t["params"].items()) for t in trials.values())

    # the report renders the search and names its searcher
    text = Path(write_tune_report(str(out))).read_text()
    assert "optuna (TPE, seed 0; first 2 trials random)" in text
    assert all(tid in text for tid in trials)


def test_best_yaml_keeps_the_switches_the_searched_weights_act_through(tmp_path):
    from raydd.pipeline.tune import best_yaml

    base = build_config(overrides={"data": {"name": "cluttered-fashion-mnist"}, "seed": 3,
                                   "distill": {"method": "dm", "ipc": 10, "iterations": 300},
                                   "mm": {"cm": True, "mfa": True}}).to_dict()
    best = {"trial_id": "t1", "val_accuracy": 0.5, "iterations": 300,
            "params": {"mm.lambda_cm": 0.3, "mm.lambda_mfa": 0.2}}
    text = best_yaml(best, {"base": base}, 4)
    stored = yaml.safe_load(text)
    assert stored["mm"] == {"cm": True, "mfa": True, "lambda_cm": 0.3, "lambda_mfa": 0.2}
    assert stored["distill"] == {"iterations": 300}  # the trial budget; method and ipc come from the flags
    assert "data" not in stored and "seed" not in stored
    path = tmp_path / "best.yaml"
    path.write_text(text)
    cfg = build_config(file=path, overrides={"data": {"name": "cluttered-fashion-mnist"}, "distill": {"ipc": 10}})
    assert cfg.mm.cm and cfg.mm.mfa and cfg.mm.lambda_cm == 0.3 and cfg.distill.iterations == 300


def test_a_trial_asha_stopped_early_is_pruned_for_optuna_and_a_finished_one_complete():
    import optuna
    from ray import tune

    from raydd.pipeline.tune import METRIC
    from raydd.pipeline.tune_optuna import StoppedTrialsAsPruned

    searcher = StoppedTrialsAsPruned(sampler=optuna.samplers.TPESampler(seed=0), total=40)
    searcher.set_search_properties(METRIC, "max", {"mm.lambda_cm": tune.uniform(0.0, 1.0)})
    for trial_id in ("short", "whole"):
        assert "mm.lambda_cm" in searcher.suggest(trial_id)
        searcher.on_trial_result(trial_id, {METRIC: 0.5, "iterations": 20, "training_iteration": 1})
    searcher.on_trial_complete("short", {METRIC: 0.5, "iterations": 20, "training_iteration": 1})
    searcher.on_trial_result("whole", {METRIC: 0.7, "iterations": 40, "training_iteration": 2})
    searcher.on_trial_complete("whole", {METRIC: 0.7, "iterations": 40, "training_iteration": 2})
    trials = searcher._ot_study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE]
    assert trials[0].intermediate_values == {1: 0.5} and trials[1].value == 0.7
