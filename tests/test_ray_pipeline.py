"""The Ray layer: class-sharded Ray Train distillation, fault recovery, evaluation fan-out, `raydd run`."""

import functools
import json
import os

import pytest
import torch
import yaml
from typer.testing import CliRunner

from raydd.cli import app
from raydd.config import build_config
from raydd.distill import run_distillation
from raydd.evaluate import evaluate_images
from raydd.pipeline.eval_tasks import ray_runner
from raydd.pipeline.sharding import shard_classes
from raydd.pipeline.train import distill_with_ray
from tests.faults import MARKER, DieOnceAt
from tests.helpers import write_imagefolder

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_imagefolder(tmp_path_factory.mktemp("data"), num_classes=4, n_train=10, size=16)


def tiny(data, method, **distill):
    return build_config("quick", overrides={
        "device": "cpu", "data": {"name": str(data), "val_fraction": 0.2},
        "distill": {"method": method, "ipc": 2, "iterations": 4, "batch_real": 4, "checkpoint_every": 2,
                    "log_every": 1, **distill},
        "gradmatch": {"outer_loop": 2, "inner_loop": 1}, "eval": {"models": 2, "epochs": 3}})


def test_shard_classes_covers_every_class_once():
    assert shard_classes(10, 3) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    for k in range(1, 11):
        shards = shard_classes(10, k)
        assert sorted(c for s in shards for c in s) == list(range(10)) and all(shards)


def test_two_workers_give_the_single_process_result_for_gradient_matching(ray_local, data, tmp_path):
    # DSA exchanges images between workers before each inner loop: the hardest case for sharding.
    cfg = tiny(data, "dsa")
    single = run_distillation(cfg, str(tmp_path / "single"), show_progress=False)
    sharded = distill_with_ray(cfg, str(tmp_path / "ray"), workers=2, show_progress=False)
    assert torch.allclose(single.images, sharded.images, atol=1e-5)
    rows = [json.loads(x) for x in (tmp_path / "ray" / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(x) for x in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in expected], rel=1e-4)
    assert json.loads((tmp_path / "ray" / "metadata.json").read_text())["workers"] == 2


def test_a_killed_worker_is_restarted_and_nothing_is_lost(ray_local, data, tmp_path):
    cfg = tiny(data, "dm")
    single = run_distillation(cfg, str(tmp_path / "single"), show_progress=False)
    recovered = distill_with_ray(cfg, str(tmp_path / "ray"), workers=2, show_progress=False,
                                 backend=functools.partial(DieOnceAt, iteration=3))
    assert (tmp_path / "ray" / MARKER).exists()  # the worker really died at iteration 3
    assert torch.allclose(single.images, recovered.images, atol=1e-5)
    # Iteration 3 was logged before the death and again after the restart from iteration 2: kept once.
    rows = [json.loads(x)["iteration"] for x in (tmp_path / "ray" / "metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3, 4]


def test_the_ray_path_logs_every_loss_term_as_one_process_does(ray_local, data, tmp_path):
    cfg = tiny(data, "dm")
    cfg.mm.mfa = True  # two terms besides the total
    single = run_distillation(cfg, str(tmp_path / "single"), show_progress=False)
    sharded = distill_with_ray(cfg, str(tmp_path / "ray"), workers=2, show_progress=False)
    assert torch.allclose(single.images, sharded.images, atol=1e-5)
    expected = [json.loads(x) for x in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    rows = [json.loads(x) for x in (tmp_path / "ray" / "metrics.jsonl").read_text().splitlines()]
    assert set(rows[0]) == set(expected[0]) >= {"iteration", "seconds", "loss", "loss_dm", "loss_mfa"}
    for got, want in zip(rows, expected, strict=True):
        for term in ("loss", "loss_dm", "loss_mfa"):
            assert got[term] == pytest.approx(want[term], rel=1e-4), (got["iteration"], term)


def test_fast_dm_on_two_workers_gives_the_single_process_result_and_snapshots(ray_local, data, tmp_path):
    # The trained pool is trained once by the driver; each worker builds its classes' bank from it.
    cfg = tiny(data, "dm", snapshots=[2], lr_img=0.1)
    for key, value in {"bank": True, "networks": 2, "draws": 2, "bank_real": 4, "pool": "trained",
                       "pool_trainings": 1, "pool_steps": 2, "formation": 2, "optimizer": "adam"}.items():
        setattr(cfg.dm, key, value)
    single = run_distillation(cfg, str(tmp_path / "single"), show_progress=False)
    sharded = distill_with_ray(cfg, str(tmp_path / "ray"), workers=2, show_progress=False)
    assert torch.allclose(single.images, sharded.images, atol=1e-5)
    snap = tmp_path / "ray" / "snapshots" / "iteration-000002"
    from raydd.synthetic import SyntheticSet

    a, b = SyntheticSet.load(str(snap)), SyntheticSet.load(str(tmp_path / "single" / "snapshots" / "iteration-000002"))
    assert torch.allclose(a.images, b.images, atol=1e-5) and a.init_ids == b.init_ids and all(a.init_ids)


def test_evaluation_fan_out_matches_the_in_process_evaluation(ray_local):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 1, 16, 16, generator=g), torch.arange(3).repeat_interleave(4)
    tx, ty = torch.randn(9, 1, 16, 16, generator=g), torch.arange(3).repeat_interleave(3)
    cfg = build_config("quick", overrides={"eval": {"models": 2, "epochs": 2}}).eval
    common = dict(num_classes=3, cfg=cfg, seed=1, device=torch.device("cpu"), show_progress=False)
    local = evaluate_images(x, y, tx, ty, **common)
    fanned = evaluate_images(x, y, tx, ty, runner=ray_runner(cpus_per_task=1, show_progress=False), **common)
    assert fanned.accuracy.per_model == local.accuracy.per_model
    # eval.json says where the models trained: here, this process; fanned out, the Ray workers.
    assert local.devices == [f"cpu, {torch.get_num_threads()} torch threads of {os.cpu_count()} CPUs, "
                             f"torch {torch.__version__}"]
    assert len(fanned.devices) == 1 and fanned.devices[0].startswith("cpu, ")


def _run(data, out, *extra):
    return CliRunner().invoke(app, ["run", "--dataset", str(data), "--out", str(out), "--iterations", "2",
                                    "--eval-epochs", "2", "--eval-models", "2", "--ipc", "2", "--device", "cpu",
                                    "--set", "distill.batch_real=4", "--set", "data.val_fraction=0.2", "--quiet",
                                    *extra])


def test_raydd_run_skips_a_bad_row_when_asked_and_says_how_many(ray_local, tmp_path):
    data = write_imagefolder(tmp_path / "data", num_classes=4, n_train=10, size=16)
    (data / "train" / "img002.png").write_bytes(b"not a png")
    prepared = tmp_path / "prepared"
    failed = _run(data, tmp_path / "fail", "--set", f"prepare.root={prepared}")
    assert failed.exit_code != 0 and "train/img002.png: corrupt or unreadable image" in failed.output
    result = _run(data, tmp_path / "run", "--set", f"prepare.root={prepared}", "--on-bad-row", "skip")
    assert result.exit_code == 0, result.output
    assert "1 rejected" in result.output
    manifest = json.loads(next(prepared.glob("*/manifest.json")).read_text())
    assert manifest["rejected"]["total"] == 1 and (tmp_path / "run" / "eval.json").is_file()


def test_raydd_run_preprocesses_with_ray_data_then_distills_from_the_parquet(ray_local, data, tmp_path):
    from raydd.synthetic import SyntheticSet

    prepared = tmp_path / "prepared"
    out = tmp_path / "run"
    result = _run(data, out, "--set", f"prepare.root={prepared}")
    assert result.exit_code == 0, result.output
    for stage in ("preprocess", "distill", "evaluate", "report"):
        assert stage in result.output
    manifests = list(prepared.glob("*/manifest.json"))
    assert len(manifests) == 1  # Ray Data wrote the Parquet copy of the source
    assert list(manifests[0].parent.glob("split=train/label=*"))  # partitioned by label
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["data"]["prepared"] == str(manifests[0].parent) and cfg["data"]["name"] == str(data)
    assert (out / "ray" / "distill").is_dir()  # Ray Train's experiment directory: the Ray path ran
    ev = json.loads((out / "eval.json").read_text())
    assert len(ev["accuracy"]["per_model"]) == 2 and ev["dataset"] == str(data)
    assert (out / "synthetic.png").exists() and (out / "report.html").exists() and "accuracy" in result.output

    again = _run(data, tmp_path / "again", "--set", f"prepare.root={prepared}")
    assert again.exit_code == 0, again.output
    assert "reusing" in again.output and len(list(prepared.glob("*/manifest.json"))) == 1

    direct = _run(data, tmp_path / "direct", "--no-preprocess")
    assert direct.exit_code == 0, direct.output
    a, b = SyntheticSet.load(str(out)), SyntheticSet.load(str(tmp_path / "direct"))
    assert torch.allclose(a.images, b.images, atol=1e-5)  # same rows, same seed: the same synthetic set


def test_more_workers_than_classes_is_a_clear_error(ray_local, data, tmp_path):
    result = CliRunner().invoke(app, ["distill", "--dataset", str(data), "--out", str(tmp_path / "x"),
                                      "--workers", "9", "--quiet"])
    assert result.exit_code == 2 and "--workers" in result.output
    assert not (tmp_path / "x").exists()


def test_sharded_workers_read_their_classes_from_parquet(ray_local, data, tmp_path):
    from raydd.run_inputs import load_splits
    from raydd.pipeline.preprocess import preprocess_to_parquet

    parquet = tmp_path / "pq"
    preprocess_to_parquet(str(data), str(parquet), val_fraction=0.2, segmenter="threshold", text_encoder=None,
                          show_progress=False)
    cfg = tiny(f"parquet:{parquet}", "dm")
    only = load_splits(cfg, classes=[1, 3])
    assert set(only.train.labels.tolist()) == {1, 3} and only.class_names == load_splits(cfg).class_names
    single = run_distillation(cfg, str(tmp_path / "single"), show_progress=False)
    sharded = distill_with_ray(cfg, str(tmp_path / "ray"), workers=2, show_progress=False)
    assert torch.allclose(single.images, sharded.images, atol=1e-5)


def test_a_parquet_run_reads_the_caption_embeddings_ray_data_wrote(ray_local, data, tmp_path, monkeypatch):
    from raydd import modalities
    from raydd.run_inputs import load_splits
    from raydd.pipeline.preprocess import preprocess_to_parquet

    parquet = tmp_path / "pq"
    preprocess_to_parquet(str(data), str(parquet), val_fraction=0.2, segmenter="threshold", text_encoder="minilm",
                          show_progress=False)
    direct_cfg = tiny(data, "dm")
    direct_cfg.mm.cc = True
    direct = modalities.embed_captions(direct_cfg, load_splits(direct_cfg))
    stored_cfg = tiny(f"parquet:{parquet}", "dm")
    stored_cfg.mm.cc = True

    def no_encoder(cfg):
        raise AssertionError("the stored embeddings should have been read, not encoded again")

    monkeypatch.setattr(modalities, "_embedder", no_encoder)
    stored = modalities.embed_captions(stored_cfg, load_splits(stored_cfg))
    for split in ("train", "val", "test"):
        assert torch.allclose(stored.split(split), direct.split(split), atol=1e-5)


@pytest.mark.parametrize("fast", [False, True], ids=["classic-dm", "trained-pool"])
def test_the_driver_reads_a_parquet_source_one_class_at_a_time(ray_local, data, tmp_path, monkeypatch, fast):
    from raydd.pipeline import driver_inputs, pool_rows
    from raydd.pipeline.preprocess import preprocess_to_parquet

    parquet = tmp_path / "pq"
    preprocess_to_parquet(str(data), str(parquet), val_fraction=0.2, segmenter="threshold", text_encoder="minilm",
                          show_progress=False)
    cfg = tiny(f"parquet:{parquet}", "dm")
    cfg.mm.cc = True  # the caption bank is chosen from the real captions, class by class too
    if fast:  # the pool's trainings read every class: by class as well, a stretch of steps at a time
        for key, value in {"bank": True, "networks": 2, "draws": 1, "bank_real": 4, "pool": "trained",
                           "pool_trainings": 2, "pool_steps": 3}.items():
            setattr(cfg.dm, key, value)
        monkeypatch.setattr(pool_rows, "FETCH_BYTES", 1)  # one step's batch a fetch
    reads = []

    def spying(module):
        real_load = module.load_splits

        def spy(cfg, classes=None, **kwargs):
            reads.append(classes)
            return real_load(cfg, classes=classes, **kwargs)

        monkeypatch.setattr(module, "load_splits", spy)

    spying(driver_inputs)
    spying(pool_rows)
    sharded = distill_with_ray(cfg, str(tmp_path / "ray"), workers=2, show_progress=False)
    assert reads and all(classes is not None and len(classes) == 1 for classes in reads)
    assert sorted(c for [c] in reads[:4]) == [0, 1, 2, 3]  # every class once before the run starts
    if fast:  # 2 trainings x 3 fetches, each reading the classes its draws hit, before the captions' 4 reads
        assert 4 + 6 + 4 <= len(reads) <= 4 + 6 * 4 + 4

    single = run_distillation(cfg, str(tmp_path / "single"), show_progress=False)
    assert torch.allclose(single.images, sharded.images, atol=1e-5)
    assert sharded.init_ids == single.init_ids
    for name in ("members.json", "captions.json"):
        ray_file = json.loads((tmp_path / "ray" / name).read_text())
        one_file = json.loads((tmp_path / "single" / name).read_text())
        if name == "captions.json":
            assert ray_file["captions"] == one_file["captions"]
            assert torch.allclose(torch.tensor(ray_file["caption_emb"]), torch.tensor(one_file["caption_emb"]), atol=1e-5)
        else:
            assert ray_file["ids"] == one_file["ids"]


def test_partition_order_is_the_order_a_whole_read_lists_the_classes(tmp_path):
    from raydd.data.parquet import Location, _data_files, partition_order

    for c in range(12):
        (tmp_path / "split=train" / f"label={c}").mkdir(parents=True)
        (tmp_path / "split=train" / f"label={c}" / "part-0.parquet").write_bytes(b"")
    listed = [int(path.split("label=")[1].split("/")[0]) for path in _data_files(Location.parse(str(tmp_path)), "train", None)]
    assert listed == partition_order(12) == [0, 1, 10, 11, 2, 3, 4, 5, 6, 7, 8, 9]
