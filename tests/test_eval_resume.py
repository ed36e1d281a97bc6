"""A killed evaluation resumes from the models it finished: what it keeps, what it trusts, when it forgets."""

from __future__ import annotations

import json

import pytest
import torch

from raydd.config import build_config
from raydd.evaluate import EvalJob, evaluate_images, run_job


class Killed(Exception):
    pass


def _data():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 1, 16, 16, generator=g), torch.arange(3).repeat_interleave(4)
    tx, ty = torch.randn(9, 1, 16, 16, generator=g), torch.arange(3).repeat_interleave(3)
    return x, y, tx, ty


def _evaluate(record_dir, runner=None, epochs=2):
    cfg = build_config("quick", overrides={"eval": {"models": 3, "epochs": epochs}}).eval
    return evaluate_images(*_data(), num_classes=3, cfg=cfg, seed=1, device=torch.device("cpu"),
                           show_progress=False, runner=runner, record_dir=record_dir)


def _runner(trained: list[int], kill_after: int | None = None):
    """Runs jobs in this process as the default runner does, noting each; raises after ``kill_after``."""
    def runner(jobs: list[EvalJob]):
        results = []
        for job in jobs:
            if kill_after is not None and len(trained) == kill_after:
                raise Killed
            trained.append(job.index)
            results.append(run_job(job))
        return results
    return runner


def test_a_killed_evaluation_trains_only_the_models_it_had_not_finished(tmp_path):
    whole = _evaluate(None)
    records = tmp_path / "eval_models"
    first: list[int] = []
    with pytest.raises(Killed):
        _evaluate(str(records), _runner(first, kill_after=2))
    assert first == [0, 1] and sorted(p.name for p in records.iterdir()) == ["convnet3-image-0.json",
                                                                           "convnet3-image-1.json"]
    second: list[int] = []
    resumed = _evaluate(str(records), _runner(second))
    assert second == [2]
    assert resumed.accuracy.per_model == whole.accuracy.per_model


def test_kept_models_count_only_for_the_same_data_and_settings(tmp_path):
    records = tmp_path / "eval_models"
    _evaluate(str(records))
    trained: list[int] = []
    _evaluate(str(records), _runner(trained), epochs=3)  # other settings: every model trains again
    assert trained == [0, 1, 2]
    # a record cut short by a kill while it was written is trained again, not an error
    cut = records / "convnet3-image-1.json"
    cut.write_text(cut.read_text()[:20])
    trained.clear()
    _evaluate(str(records), _runner(trained), epochs=3)
    assert trained == [1]
    kept = json.loads((records / "convnet3-image-0.json").read_text())
    assert set(kept) == {"fingerprint", "result"} and 0 <= kept["result"]["accuracy"] <= 1


def test_evaluate_run_resumes_and_forgets_its_models_once_eval_json_is_written(tmp_path):
    from raydd.distill import run_distillation
    from raydd.workflows import evaluate_run
    from tests.helpers import write_imagefolder

    data = write_imagefolder(tmp_path / "data")
    cfg = build_config("quick", overrides={"data": {"name": str(data)}},
                       sets=["device=cpu", "distill.ipc=1", "distill.iterations=2", "distill.batch_real=4",
                             "eval.models=2", "eval.epochs=2"])
    run = tmp_path / "run"
    run_distillation(cfg, str(run), show_progress=False)
    first: list[int] = []
    with pytest.raises(Killed):
        evaluate_run(str(run), cfg, runner=_runner(first, kill_after=1), show_progress=False)
    assert [p.name for p in (run / "eval_models_test").iterdir()] == ["convnet3-image-0.json"]
    assert not (run / "eval.json").exists()
    second: list[int] = []
    evaluate_run(str(run), cfg, runner=_runner(second), show_progress=False)
    assert second == [1]
    assert (run / "eval.json").is_file() and not (run / "eval_models_test").exists()
