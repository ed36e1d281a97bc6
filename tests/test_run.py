"""The driver: artifacts, resume after a kill, evaluation output, and the CLI end to end."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from raydd.cli import app
from raydd.config import build_config
from raydd.distill import run_distillation
from raydd.errors import RunDirError
from raydd.rundir import RunDir
from raydd.synthetic import SyntheticSet, read_metadata
from raydd.workflows import evaluate_set
from tests.helpers import KillAt, Killed, tiny_splits, write_imagefolder


def tiny_config(gradmatch=None, **distill):
    cfg = build_config("quick", overrides={"device": "cpu", "distill": {"ipc": 2, "iterations": 6, "batch_real": 8,
                                                                       "checkpoint_every": 2, "log_every": 1, **distill},
                                           "gradmatch": gradmatch or {}, "eval": {"models": 2, "epochs": 4}})
    return cfg


@pytest.fixture(scope="module")
def splits():
    return tiny_splits()


def test_artifacts_are_complete_and_loadable(tmp_path, splits):
    out = str(tmp_path / "run")
    syn = run_distillation(tiny_config(), out, splits=splits, show_progress=False)
    for name in ["config.yaml", "members.json", "metrics.jsonl", "synthetic.safetensors", "metadata.json",
                 "synthetic.png", "checkpoint/state.safetensors"]:
        assert (tmp_path / "run" / name).exists(), name
    tensors = load_file(str(tmp_path / "run" / "synthetic.safetensors"))
    assert tensors["images"].shape == (6, 1, 28, 28) and tensors["labels"].tolist() == [0, 0, 1, 1, 2, 2]
    meta = json.loads((tmp_path / "run" / "metadata.json").read_text())
    assert meta["normalisation"]["mean"] == [0.3] and meta["class_names"] == splits.class_names
    assert meta["method"] == "dm" and meta["image_size"] == [28, 28]
    members = json.loads((tmp_path / "run" / "members.json").read_text())
    assert set(members["ids"]) == set(splits.train.ids)
    assert not set(members["ids"]) & set(splits.test.ids)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]
    loaded = SyntheticSet.load(out)
    assert torch.equal(loaded.images, syn.images) and loaded.meta["method"] == "dm"


@pytest.mark.parametrize("method", ["dm", "dsa"])
def test_resume_after_kill_reaches_the_uninterrupted_result(tmp_path, splits, method):
    loops = {"outer_loop": 2, "inner_loop": 1} if method == "dsa" else None
    cfg = tiny_config(loops, method=method)
    straight = run_distillation(cfg, str(tmp_path / "a"), splits=splits, show_progress=False)
    with pytest.raises(Killed):
        run_distillation(cfg, str(tmp_path / "b"), splits=splits, show_progress=False, backend=KillAt(5))
    assert not (tmp_path / "b" / "synthetic.safetensors").exists()  # nothing half-finished is published
    resumed = run_distillation(cfg, str(tmp_path / "b"), splits=splits, show_progress=False, resume=True)
    assert torch.equal(straight.images, resumed.images)
    rows = [json.loads(x)["iteration"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3, 4, 5, 6]  # the row logged after the last checkpoint was replaced, not duplicated


def test_existing_run_is_not_overwritten_and_resume_checks_config(tmp_path, splits):
    out = str(tmp_path / "run")
    run_distillation(tiny_config(), out, splits=splits, show_progress=False)
    with pytest.raises(RunDirError, match="already holds a run"):
        run_distillation(tiny_config(), out, splits=splits, show_progress=False)
    with pytest.raises(RunDirError, match="different configuration"):
        run_distillation(tiny_config(ipc=3), out, splits=splits, show_progress=False, resume=True)
    # Length and bookkeeping may change: a finished run extended by two iterations, logged and kept differently.
    longer = tiny_config(iterations=8, log_every=2, checkpoint_every=4, snapshots=[7])
    run_distillation(longer, out, splits=splits, show_progress=False, resume=True)
    assert (tmp_path / "run" / "snapshots" / "iteration-000007" / "metadata.json").exists()
    assert SyntheticSet.load(out).meta["iterations"] == 8
    # The metadata alone, checked the same way, for readers that need no images (the benchmark jobs).
    assert read_metadata(out)["iterations"] == 8
    assert read_metadata(RunDir(out).snapshot_dir(7))["iterations"] == 7
    with pytest.raises(RunDirError, match="no synthetic set here"):
        read_metadata(str(tmp_path / "none"))


def test_evaluation_reports_last_epoch_accuracy_per_model(splits):
    cfg = tiny_config()
    pool_syn = SyntheticSet.initialise(
        __import__("raydd.realpool", fromlist=["RealPool"]).RealPool.from_data(splits, splits.train, torch.device("cpu")),
        ipc=4, init="real", seed=0, class_names=splits.class_names, mean=splits.mean, std=splits.std)
    result = evaluate_set(pool_syn, splits, cfg, show_progress=False)
    acc = result.accuracy
    assert len(acc.per_model) == 2 and all(0.0 <= a <= 1.0 for a in acc.per_model)
    assert acc.mean == pytest.approx(sum(acc.per_model) / 2)
    assert result.protocol["accuracy_at"] == "last epoch" and result.preset == "quick"
    again = evaluate_set(pool_syn, splits, cfg, show_progress=False)
    assert again.accuracy.per_model == acc.per_model  # seeded: same figures twice


def test_cli_run_end_to_end_on_an_imagefolder(tmp_path):
    data = write_imagefolder(tmp_path / "data")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--dataset", str(data), "--out", str(out), "--iterations", "3",
                                      "--eval-epochs", "3", "--eval-models", "2", "--ipc", "2", "--device", "cpu",
                                      "--set", "distill.batch_real=4", "--set", "data.val_fraction=0.25", "--quiet",
                                      "--no-ray"])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "synthetic.png" in result.output
    ev = json.loads((out / "eval.json").read_text())
    assert set(ev) >= {"accuracy", "protocol", "preset"} and set(ev["accuracy"]) >= {"mean", "std", "per_model"}
    assert (out / "synthetic.png").read_bytes()[:4] == b"\x89PNG"
    shown = CliRunner().invoke(app, ["show", str(out), "-o", str(tmp_path / "grid.png")])
    assert shown.exit_code == 0 and (tmp_path / "grid.png").exists()


def test_eval_json_records_the_named_protocol(tmp_path):
    data = write_imagefolder(tmp_path / "data")
    out = tmp_path / "run"
    common = ["--eval-models", "1", "--device", "cpu", "--quiet", "--no-ray"]
    ran = CliRunner().invoke(app, ["run", "--dataset", str(data), "--out", str(out), "--iterations", "1", "--ipc", "1",
                                   "--set", "distill.batch_real=4", "--set", "eval.protocol=dc", *common])
    assert ran.exit_code == 0, ran.output
    proto = json.loads((out / "eval.json").read_text())["protocol"]
    assert (proto["protocol"], proto["augment"], proto["epochs"]) == ("dc", "none", 300)
    assert "protocol: dc, preset quick, 300 epochs, augmentation none" in ran.output
    # Re-evaluating under another protocol; a flag given with it still wins.
    again = CliRunner().invoke(app, ["evaluate", str(out), "--set", "eval.protocol=dsa", "--eval-epochs", "2", *common])
    assert again.exit_code == 0, again.output
    proto = json.loads((out / "eval.json").read_text())["protocol"]
    assert (proto["protocol"], proto["augment"], proto["epochs"]) == ("dsa", "dsa", 2)


def test_cli_bad_image_is_one_clear_error_and_writes_nothing(tmp_path):
    data = write_imagefolder(tmp_path / "data")
    (data / "train" / "img002.png").write_bytes(b"not a png")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["distill", "--dataset", str(data), "--out", str(out), "--quiet", "--no-ray"])
    assert result.exit_code == 2
    assert "img002.png" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_cli_unknown_method_and_model_are_named(tmp_path):
    r = CliRunner().invoke(app, ["distill", "--method", "kip", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "kip" in r.output
    r = CliRunner().invoke(app, ["distill", "--set", "distill.model=convnet9", "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "convnet9" in r.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_presets_lists_the_method_recipes_and_evaluation_protocols_too():
    r = CliRunner().invoke(app, ["presets"])
    assert r.exit_code == 0 and "# preset quick" in r.output and "# recipe dm+mm (--method dm+mm)" in r.output
    assert "# evaluation protocol dc (--set eval.protocol=dc)" in r.output


def test_every_command_has_help():
    for command in ["distill", "evaluate", "run", "baseline", "show", "presets", "tune", "preprocess", "report",
                    "show-data", "ablate", "audit"]:
        r = CliRunner().invoke(app, [command, "--help"])
        assert r.exit_code == 0 and "Usage" in r.output, command


def test_tensorboard_flag_without_the_package_fails_before_any_work(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name in ("tensorboard", "tensorboardX"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    data = write_imagefolder(tmp_path / "data")
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["distill", "--dataset", str(data), "--out", str(out), "--no-ray", "--tensorboard",
                                 "--quiet"])
    assert r.exit_code == 2 and "pip install tensorboard" in r.output
    assert not out.exists()


def test_images_too_small_for_the_network_fail_before_anything_is_written(tmp_path):
    from raydd.errors import ConfigError

    cfg = build_config(overrides={"device": "cpu", "distill": {"ipc": 1, "iterations": 1}})
    with pytest.raises(ConfigError, match=r"model 'convnet'.*image_size \(6, 6\) is too small"):
        run_distillation(cfg, str(tmp_path / "run"), splits=tiny_splits(size=6), show_progress=False)
    assert not (tmp_path / "run").exists()
