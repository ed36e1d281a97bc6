"""jobs/benchmark_time_to_accuracy.py end to end on a tiny imagefolder: the reference loop and a fast-DM
variant through `raydd distill`, snapshots scored on validation, records and the plot, then a rerun that
recomputes nothing."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import write_imagefolder

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]
JOB = Path(__file__).resolve().parent.parent / "jobs" / "benchmark_time_to_accuracy.py"


def run_job(data, out, *extra):
    command = [sys.executable, str(JOB), "--datasets", str(data), "--ipc", "2", "--variants", "ref,bank+mf",
               "--iterations", "bank+mf=4", "--budget-minutes", "0.1", "--val-models", "1", "--val-epochs", "2",
               "--set", "dm.networks=2", "--set", "dm.draws=1", "--set", "dm.bank_real=4",
               "--set", "distill.batch_real=4", "--set", "eval.epochs=2", "--set", "eval.models=1",
               "--out", str(out / "runs"), "--records", str(out / "records.json"), "--plot", str(out / "tta.png"),
               "--table", str(out / "tta.md"), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=540)


def test_the_benchmark_records_both_curves_and_resumes_without_recomputing(tmp_path):
    data = write_imagefolder(tmp_path / "data", num_classes=3, n_train=12, size=16)
    first = run_job(data, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    records = json.loads((tmp_path / "records.json").read_text())
    assert {r["method"] for r in records} == {"dm-ref", "dm-bank+mf"}
    for r in records:
        assert set(r) >= {"dataset", "ipc", "method", "distill_seconds", "test_accuracy", "eval_protocol", "seed",
                          "machine"}
        assert r["eval_protocol"] == "quick" and 0.0 <= r["test_accuracy"] <= 1.0 and r["distill_seconds"] > 0
    curve = [json.loads(line) for line in (tmp_path / "runs" / "curve.jsonl").read_text().splitlines()]
    fast = sorted(p["iterations"] for p in curve if p["method"] == "dm-bank+mf")
    assert fast == [1, 2, 4]  # snapshots at 1, 2 and 4; the final set is the snapshot at 4, scored once
    assert any(p["method"] == "dm-ref" for p in curve)
    # Every point says how many real-initialised images still sit nearest to the image they started from.
    assert all(0.0 <= p["nearest_is_init"] <= 1.0 for p in curve)
    assert (tmp_path / "tta.png").stat().st_size > 0
    assert "dm-bank+mf" in (tmp_path / "tta.md").read_text() and "nearest is own init" in (tmp_path / "tta.md").read_text()

    cached = sorted(p.stat().st_mtime for p in tmp_path.rglob("score-*.json"))
    assert cached
    again = run_job(data, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.stat().st_mtime for p in tmp_path.rglob("score-*.json")) == cached
    assert len((tmp_path / "runs" / "curve.jsonl").read_text().splitlines()) == len(curve)

    # Scored again with the models as Ray tasks (--eval-workers), only the quick protocol asked for: the
    # same figure as the in-process evaluation.
    scores = [p for p in tmp_path.rglob("score-test-quick.json") if "bank+mf" in str(p)]
    assert scores  # the final set's, and its last snapshot's
    for score in scores:
        score.unlink()
    fanned = run_job(data, tmp_path, "--protocols", "quick", "--eval-workers", "2")
    assert fanned.returncode == 0, fanned.stderr[-3000:]
    by_method = lambda rs: sorted(rs, key=lambda r: r["method"])  # noqa: E731
    assert by_method(json.loads((tmp_path / "records.json").read_text())) == by_method(records)


@pytest.mark.parametrize("extra, message", [
    (["--workers", "2", "--threads", "2", "--no-ray"], "--workers needs Ray"),
    (["--workers", "3", "--threads", "2"], "--workers 3 needs --threads of at least as many cores"),
])
def test_workers_the_run_cannot_have_are_refused_before_anything_runs(tmp_path, extra, message):
    done = run_job(tmp_path / "absent", tmp_path, *extra)
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "runs").exists()
