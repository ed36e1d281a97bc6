"""Run-directory artifacts: typed results, files from before schema_version, and clear errors on bad files.

tests/data/artifacts-v0 holds an eval.json, an audit.json and an ablation record exactly as raydd wrote
them before results carried a schema_version (a tiny imagefolder run, evaluated and audited).
"""

import json
import shutil
from pathlib import Path

import pytest

from raydd.ablation.records import AblationRecord, load_records, save_records
from raydd.artifacts import AUDIT, CONFIG, EVAL, MEMBERS
from raydd.errors import ConfigError, RunDirError
from raydd.results import SCHEMA_VERSION, Accuracy, AuditResult, EvalResult
from raydd.rundir import RunDir

V0 = Path(__file__).parent / "data" / "artifacts-v0"


def _v0(name: str) -> dict:
    return json.loads((V0 / name).read_text())


def test_files_without_schema_version_load_and_write_back_the_same_keys(tmp_path):
    shutil.copy(V0 / EVAL, tmp_path / EVAL)
    shutil.copy(V0 / AUDIT, tmp_path / AUDIT)
    run = RunDir(str(tmp_path))
    ev = EvalResult.from_json(run.read_json(EVAL), run.file(EVAL))
    assert ev.accuracy == Accuracy(1.0, 0.0, [1.0, 1.0], 2) and ev.method == "dm" and ev.ipc == 1
    assert ev.protocol["tested_on"] == "test" and ev.preset == "quick" and ev.devices
    assert ev.to_json() == {"schema_version": SCHEMA_VERSION, **_v0(EVAL)}  # only gains the version

    audit = AuditResult.from_json(run.read_json(AUDIT), run.file(AUDIT))
    assert audit.attacks["synthetic"]["lira"]["n_members"] == 12 and audit.protocol["audit_preset"] == "quick"
    assert audit.to_json() == {"schema_version": SCHEMA_VERSION, **_v0(AUDIT)}

    (record,) = load_records(str(V0 / "record.jsonl")).values()
    assert record.key == ("pets", "dm", "base", 1, 0, "quick") and record.accuracy.models == 2
    assert record.to_json() == {"schema_version": SCHEMA_VERSION, **_v0("record.jsonl")}


def test_the_written_form_reads_back_equal(tmp_path):
    ev = EvalResult.from_json(_v0(EVAL))
    ev.accuracy_image_caption, ev.caption_note = None, "captions are class-name templates"
    ev.cross_arch = {"alexnet": Accuracy(0.5, 0.1, [0.4, 0.6], 2)}
    ev.extra["timing"] = {"seconds": 3}  # a key a later version adds survives a round trip
    assert EvalResult.from_json(json.dumps(ev.to_json())) == ev
    assert ev.to_json()["accuracy_image_caption"] is None  # null beside the note that says why
    path = str(tmp_path / "records.jsonl")
    record = AblationRecord.from_json(_v0("record.jsonl"), "record")
    save_records(path, {record.key: record})
    assert load_records(path) == {record.key: record}


def test_a_full_data_baseline_keeps_its_null_ipc():
    ev = EvalResult.from_json({"accuracy": {"mean": 0.9, "per_model": [0.9]}, "ipc": None, "method": "full"})
    assert ev.ipc is None and ev.to_json()["ipc"] is None and "std" not in ev.to_json()["accuracy"]


@pytest.mark.parametrize("text, message", [
    ('{"accuracy": {"mean": 0.5, "std"', r"eval\.json: cut short or not a JSON file"),
    ('["accuracy"]', r"eval\.json: expected a JSON object, found list"),
    ('{"dataset": "x", "count": 1, "ids": ["a"]}', r"eval\.json: not an evaluation result \('accuracy' is missing\)"),
    ('{"accuracy": {"mean": "high"}}', r"eval\.json: accuracy: 'mean' should be a number, found str"),
    ('{"accuracy": {"std": 0.1}}', r"eval\.json: accuracy: 'mean' is missing"),
    ('{"accuracy": {"mean": 0.5}, "devices": "cpu"}', r"eval\.json: 'devices' should be a JSON array, found str"),
    ('{"schema_version": 99, "accuracy": {"mean": 0.5}}', r"eval\.json: schema_version 99 is newer"),
])
def test_a_bad_eval_json_is_a_run_dir_error_naming_the_file(tmp_path, text, message):
    (tmp_path / EVAL).write_text(text)
    run = RunDir(str(tmp_path))
    with pytest.raises(RunDirError, match=message) as caught:
        EvalResult.from_json(run.read_json(EVAL), run.file(EVAL))
    assert str(tmp_path) in str(caught.value)


def test_a_resumed_run_with_a_truncated_eval_json_says_so(tmp_path):
    from raydd.workflows import evaluate_unless_done

    (tmp_path / EVAL).write_text((V0 / EVAL).read_text()[:100])
    with pytest.raises(RunDirError, match=f"{tmp_path}/{EVAL}: cut short or not a JSON file"):
        evaluate_unless_done(str(tmp_path), None, resume=True)


def test_a_foreign_audit_json_or_record_line_is_refused_clearly(tmp_path):
    with pytest.raises(RunDirError, match=r"audit\.json: not an audit result \('attacks' is missing\)"):
        AuditResult.from_json((V0 / EVAL).read_text())
    (tmp_path / MEMBERS).write_text('{"ids": [')
    with pytest.raises(RunDirError, match=f"{MEMBERS}: cut short or not a JSON file"):
        RunDir(str(tmp_path)).read_json(MEMBERS)
    path = tmp_path / "records.jsonl"
    path.write_text((V0 / "record.jsonl").read_text() + json.dumps(_v0(EVAL)) + "\n")
    with pytest.raises(ConfigError, match=r"records\.jsonl, line 2: not an ablation record \(missing row, seed\)"):
        load_records(str(path))


def test_the_report_reads_old_files_and_notes_foreign_ones(tmp_path):
    from raydd.report.rundata import load_run

    (tmp_path / CONFIG).write_text("preset: quick\ndistill: {method: dm, ipc: 1}\n")
    shutil.copy(V0 / EVAL, tmp_path / EVAL)
    (tmp_path / AUDIT).write_text((V0 / EVAL).read_text())  # an eval.json under the audit's name
    run = load_run(str(tmp_path))
    assert run.evaluation["accuracy"]["per_model"] == [1.0, 1.0] and run.ipc == 1 and run.audit is None
    assert run.problems == ["audit.json: not an audit result ('attacks' is missing)"]


def test_remote_paths_are_told_apart_in_one_place():
    from raydd.storage import absolute, is_remote, protocol

    assert is_remote("s3://bucket/run") and is_remote("file:///tmp/run") and not is_remote("runs/a")
    assert absolute("gs://b/x") == "gs://b/x" and absolute("runs/a").startswith("/")
    assert (protocol("S3://bucket"), protocol("/tmp/x")) == ("s3", "file")


def test_caption_rows_follow_what_a_source_declares(monkeypatch):
    from raydd.ablation import images_without_captions
    from raydd.data import registry

    assert images_without_captions("cluttered-fashion-mnist") == []
    assert images_without_captions("fashion-mnist") is None
    monkeypatch.setattr(registry, "SOURCES", registry.Registry("dataset source"))
    monkeypatch.setattr(registry, "_CAPTIONED", set())
    registry.register_source("cluttered-other", captions=False)(lambda request: None)
    registry.register_source("captioned-photos", captions=True)(lambda request: None)
    assert images_without_captions("cluttered-other") is None  # the name alone says nothing
    assert images_without_captions("captioned-photos") == []


def test_ablation_protocols_spell_moved_keys_as_today_and_old_records_still_match():
    from raydd.ablation.records import protocol_label

    assert protocol_label("quick", ["mm.cc_dim=64", "eval.epochs=150"]) == \
        protocol_label("quick", ["eval.epochs=150", "fusion.projection_dim=64"]) == \
        "quick eval.epochs=150 fusion.projection_dim=64"
    old = {**_v0("record.jsonl"), "protocol": "quick eval.epochs=150 mm.cc_dim=64 mm.segmenter=grabcut"}
    record = AblationRecord.from_json(old, "record")
    assert record.protocol == protocol_label("quick", ["eval.epochs=150", "mm.cc_dim=64", "mm.segmenter=grabcut"])
    # The records kept with the docs name no moved key: they read back with their labels unchanged.
    docs = Path(__file__).parent.parent / "docs" / "benchmarks" / "ablation-records.jsonl"
    labels = {json.loads(line)["protocol"] for line in docs.read_text().splitlines() if line.strip()}
    assert {record.protocol for record in load_records(str(docs)).values()} == labels
