"""Ray Tune search: space parsing, a 2-trial search on a tiny imagefolder, validation-only objective, resume."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raydd.config import build_config
from raydd.errors import ConfigError, RayddError, RunDirError
from raydd.pipeline.tune import chunk_targets, load_space, normalize_space, pick_best, tune_search
from tests.helpers import write_imagefolder

TINY = ["device=cpu", "distill.ipc=1", "distill.iterations=4", "distill.batch_real=4", "distill.log_every=1",
        "eval.models=1", "eval.epochs=2", "eval.batch=16", "data.val_fraction=0.25"]
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
    result = tune_search(tiny_config(dataset), str(out), space=SPACE, num_samples=2, max_concurrent=1,
                         scheduler="asha", grace_iterations=2, show_progress=False)

    # best.yaml is a config layer the CLI accepts, holding exactly the searched values
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert set(best["distill"]) == {"lr_img", "momentum"}
    cfg = build_config("quick", file=out / "best.yaml")
    assert cfg.distill.lr_img == result.best_params["distill.lr_img"]

    rows = list(csv.DictReader((out / "trials.csv").open()))
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

    # max_concurrent=1 on a 2-CPU Ray with 1 CPU per trial: the second trial starts after the first
    # has written its last file (each trial's run directory spans [first write, last write])
    spans = sorted(_written_span(out / "trials" / t["trial_id"]) for t in summary["trials"])
    assert spans[1][0] > spans[0][1], f"trials overlapped: {spans}"

    # restoring the finished experiment works and reproduces the same table
    again = tune_search(tiny_config(dataset), str(out), space=SPACE, num_samples=2, max_concurrent=1,
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
    for flag in ("--space", "--out", "--num-samples", "--scheduler", "--resume", "--address"):
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
