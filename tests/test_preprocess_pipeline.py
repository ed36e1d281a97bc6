"""The Ray Data preprocessing stage and the ``parquet`` source that reads its output back.

Two real pipeline runs are shared by most tests (a tiny captioned imagefolder, and a limited
cluttered-fashion-mnist build); each Ray test has a timeout because starved Ray waits forever.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch

from raydd.data import load_dataset
from raydd.data.parquet import (COLUMNS, read_caption_embeddings, read_manifest, read_parquet_splits, read_rows,
                                tensor_to_numpy)
from raydd.errors import ConfigError, DataError
from raydd.pipeline.preprocess import MaskStage, StagePlan, Output, preprocess_to_parquet, run_pipeline, split_table
from tests.helpers import write_imagefolder

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val", "test")
RAY_TIMEOUT = 500  # a pipeline starts torch (and MiniLM) in fresh actor processes: slow on a busy 2-core box


def _partitioning() -> pads.Partitioning:
    return pads.partitioning(pa.schema([("split", pa.string()), ("label", pa.int64())]), flavor="hive")


def _plain_table(out: Path) -> pa.Table:
    """All rows, read the way any pyarrow user would (no raydd reader)."""
    files = sorted(str(p) for p in out.rglob("*.parquet"))
    return pads.dataset(files, format="parquet", partitioning=_partitioning(), partition_base_dir=str(out)).to_table()


@pytest.fixture(scope="module")
def imagefolder_run(ray_local, tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("imagefolder")
    root = write_imagefolder(base / "data")
    out = base / "out"
    manifest = preprocess_to_parquet(str(root), str(out), cache_dir=str(base / "cache"), show_progress=False)
    return root, out, manifest


@pytest.fixture(scope="module")
def cluttered_run(ray_local, tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("cluttered")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAYDD_CLUTTERED_LIMIT", "60,20")
        env.setenv("XDG_CACHE_HOME", str(base / "xdg"))
        source = load_dataset("cluttered-fashion-mnist")
        out = base / "out"
        manifest = preprocess_to_parquet("cluttered-fashion-mnist", str(out), cache_dir=str(base / "cache"),
                                         show_progress=False)
        yield source, out, manifest


# ----------------------------------------------------------------------------- the files


@pytest.mark.timeout(RAY_TIMEOUT)
def test_parquet_has_exactly_the_documented_schema(imagefolder_run) -> None:
    _, out, manifest = imagefolder_run
    table = _plain_table(out)
    assert table.column_names == [c for c in COLUMNS if c not in ("split", "label")] + ["split", "label"]
    types = {name: table.schema.field(name).type for name in table.column_names}
    assert types["id"] == pa.string() and types["class_name"] == pa.string() and types["caption"] == pa.string()
    assert types["split"] == pa.string() and types["label"] == pa.int64()
    for name, value_type, shape in (("image", pa.uint8(), [16, 16, 3]), ("mask", pa.uint8(), [16, 16]),
                                    ("caption_emb", pa.float32(), [384])):
        assert isinstance(types[name], pa.FixedShapeTensorType), name
        assert types[name].value_type == value_type and list(types[name].shape) == shape, name
    assert table.column("caption_emb").null_count == 0 and table.column("mask").null_count == 0
    assert manifest["image_size"] == [16, 16] and manifest["channels"] == 3
    assert manifest["text_encoder"]["dim"] == 384 and manifest["segmenter"]["id"] == "threshold:0"


@pytest.mark.timeout(RAY_TIMEOUT)
def test_files_are_partitioned_by_split_and_label(imagefolder_run) -> None:
    _, out, _ = imagefolder_run
    files = list(out.rglob("*.parquet"))
    assert files
    for path in files:
        split_dir, label_dir = path.parent.parent.name, path.parent.name
        assert split_dir in {f"split={s}" for s in SPLITS} and label_dir in {"label=0", "label=1", "label=2"}
        assert path.parent.parent.parent == out
        # The partition keys live in the path only; the file holds the other columns.
        assert pq.read_schema(path).names == ["id", "class_name", "image", "caption", "caption_emb", "mask"]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "split=test", "split=train", "split=val"]


@pytest.mark.timeout(RAY_TIMEOUT)
def test_plain_pyarrow_reads_it_without_ray(imagefolder_run) -> None:
    _, out, _ = imagefolder_run
    script = (
        "import sys, pyarrow.dataset as ds\n"
        f"d = ds.dataset({str(out)!r}, format='parquet', partitioning='hive', exclude_invalid_files=True)\n"
        "t = d.to_table(filter=ds.field('split') == 'test')\n"
        "images = t.column('image').combine_chunks().to_numpy_ndarray()\n"
        "assert 'ray' not in sys.modules\n"
        "print(t.num_rows, images.shape, images.dtype)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["9", "(9,", "16,", "16,", "3)", "uint8"]


@pytest.mark.timeout(RAY_TIMEOUT)
def test_caption_embeddings_are_unit_vectors_of_the_encoder_width(imagefolder_run) -> None:
    root, out, manifest = imagefolder_run
    table = _plain_table(out)
    emb = tensor_to_numpy(table.column("caption_emb"), (384,))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # One caption per class in this dataset: equal captions, equal vectors; different ones differ.
    labels = table.column("label").to_numpy()
    for k in range(3):
        assert np.abs(emb[labels == k] - emb[labels == k][0]).max() < 1e-6
    assert np.abs(emb[labels == 0][0] - emb[labels == 1][0]).max() > 1e-3
    assert manifest["text_encoder"]["id"].startswith("minilm:all-MiniLM-L6-v2:")


@pytest.mark.timeout(RAY_TIMEOUT)
def test_threshold_masks_where_the_source_has_none(imagefolder_run) -> None:
    _, out, _ = imagefolder_run
    table = _plain_table(out)
    images = tensor_to_numpy(table.column("image"), (16, 16, 3))
    masks = tensor_to_numpy(table.column("mask"), (16, 16))
    np.testing.assert_array_equal(masks, (images.max(axis=-1) > 0).astype(np.uint8))


@pytest.mark.timeout(RAY_TIMEOUT)
def test_rows_counts_and_ids_match_the_source(imagefolder_run) -> None:
    root, out, manifest = imagefolder_run
    source = load_dataset(str(root))
    table = _plain_table(out)
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids))
    for split in SPLITS:
        data = getattr(source, split)
        rows = table.filter(pc.equal(table.column("split"), split))
        assert sorted(rows.column("id").to_pylist()) == sorted(data.ids)
        per_class = np.bincount(data.labels.numpy(), minlength=3).tolist()
        assert manifest["counts"][split] == {"total": len(data), "per_class": per_class}
        assert np.bincount(rows.column("label").to_numpy(), minlength=3).tolist() == per_class
    assert manifest["classes"] == source.class_names and manifest["mean"] == list(source.mean)


@pytest.mark.timeout(RAY_TIMEOUT)
def test_a_second_run_gives_the_same_ids_and_pixels(imagefolder_run, tmp_path: Path) -> None:
    root, out, first = imagefolder_run
    again = tmp_path / "again"
    manifest = preprocess_to_parquet(str(root), str(again), segmenter=None, text_encoder="none", show_progress=False)
    a, b = _plain_table(out).sort_by("id"), _plain_table(again).sort_by("id")
    for name in ("id", "split", "label", "class_name", "caption"):
        assert a.column(name).to_pylist() == b.column(name).to_pylist(), name
    np.testing.assert_array_equal(tensor_to_numpy(a.column("image"), (16, 16, 3)),
                                  tensor_to_numpy(b.column("image"), (16, 16, 3)))
    # No segmenter, no encoder: the columns exist and are null; the manifest says why.
    assert b.column("mask").null_count == b.num_rows and b.column("caption_emb").null_count == b.num_rows
    assert manifest["segmenter"] is None and manifest["text_encoder"] is None
    assert manifest["counts"] == first["counts"]
    assert read_parquet_splits(str(again)).train.masks is None


# ----------------------------------------------------------------------------- the parquet source


@pytest.mark.timeout(RAY_TIMEOUT)
def test_parquet_source_round_trips_an_imagefolder(imagefolder_run) -> None:
    root, out, _ = imagefolder_run
    source = load_dataset(str(root))
    for spelling in (str(out), f"parquet:{out}"):
        read = load_dataset(spelling)
        assert read.class_names == source.class_names and read.mean == source.mean and read.flip_ok == source.flip_ok
        for split in SPLITS:
            got, want = getattr(read, split), getattr(source, split)
            assert got.ids == want.ids
            assert torch.equal(got.images, want.images) and torch.equal(got.labels, want.labels)
            assert got.captions == want.captions
            assert torch.equal(got.masks, (want.images.amax(dim=1, keepdim=True) > 0).to(torch.uint8))


@pytest.mark.timeout(RAY_TIMEOUT)
def test_parquet_source_round_trips_cluttered_exactly(cluttered_run) -> None:
    source, out, manifest = cluttered_run
    read = load_dataset(f"parquet:{out}")
    assert len(read.train) + len(read.val) == 60 and len(read.test) == 20
    for split in SPLITS:
        got, want = getattr(read, split), getattr(source, split)
        assert got.ids == want.ids and got.captions == want.captions
        assert torch.equal(got.images, want.images) and torch.equal(got.labels, want.labels)
        assert torch.equal(got.masks, want.masks)  # the dataset's own masks ("annotations")
    assert manifest["segmenter"]["spec"] == "annotations" and manifest["captions"] is True
    assert manifest["source_options"] == {"RAYDD_CLUTTERED_LIMIT": "60,20"}
    assert (read.mean, read.std, read.flip_ok) == (source.mean, source.std, source.flip_ok)


@pytest.mark.timeout(RAY_TIMEOUT)
def test_classes_filter_opens_only_those_label_partitions(cluttered_run, tmp_path: Path) -> None:
    source, out, _ = cluttered_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    wanted = sorted({int(k) for k in source.train.labels[:2]})
    for path in copy.rglob("*.parquet"):  # every other class's files become unreadable
        if int(path.parent.name.removeprefix("label=")) not in wanted:
            path.write_bytes(b"not parquet")
    read = read_parquet_splits(str(copy), classes=wanted)
    for split in SPLITS:
        got, want = getattr(read, split), getattr(source, split)
        keep = [i for i, k in enumerate(want.labels.tolist()) if k in wanted]
        assert got.ids == [want.ids[i] for i in keep]
        assert torch.equal(got.images, want.images[keep]) and torch.equal(got.masks, want.masks[keep])
    assert read.class_names == source.class_names  # labels keep their dataset-wide meaning
    emb = read_caption_embeddings(str(copy), "test", read.test.ids[::-1], classes=wanted)
    assert emb.shape == (len(read.test), 384) and emb.dtype == torch.float32
    with pytest.raises(DataError):
        read_parquet_splits(str(copy))  # without the filter the damaged files are read


@pytest.mark.timeout(RAY_TIMEOUT)
def test_caption_embeddings_come_back_in_the_order_asked(cluttered_run) -> None:
    _, out, _ = cluttered_run
    rows = read_rows(str(out), "train", ["caption_emb"])
    ids = rows.column("id").to_pylist()
    stored = tensor_to_numpy(rows.column("caption_emb"), (384,))
    chosen = [ids[5], ids[0], ids[17]]
    got = read_caption_embeddings(str(out), "train", chosen)
    np.testing.assert_array_equal(got.numpy(), stored[[5, 0, 17]])
    with pytest.raises(DataError, match="no-such-id"):
        read_caption_embeddings(str(out), "train", ["no-such-id"])


def test_missing_or_corrupt_manifest_is_a_data_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "split=train").mkdir()
    with pytest.raises(DataError, match="manifest.json: missing manifest"):
        read_parquet_splits(str(tmp_path))
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="manifest.json: corrupt manifest"):
        load_dataset(f"parquet:{tmp_path}")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "raydd-preprocessed", "format_version": 1}))
    with pytest.raises(DataError, match="manifest.json: corrupt manifest, missing classes"):
        read_manifest(str(tmp_path))
    # A path whose directory holds a manifest is the parquet source, not an imagefolder.
    with pytest.raises(DataError, match="manifest.json"):
        load_dataset(str(tmp_path))


def test_rows_on_disk_are_counted_from_the_footers_and_a_lost_file_is_caught(tmp_path: Path) -> None:
    """check_written: rows per label from each file's partition folder and footer; a file that did not
    arrive (a node writing to its own disk) makes the counts differ and stops the command."""
    from raydd.data.parquet import class_counts
    from raydd.pipeline.cluster import ClusterError
    from raydd.pipeline.preprocess.output import check_written

    def write(label: int, name: str, rows: int) -> None:
        folder = tmp_path / "split=train" / f"label={label}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": [f"{name}{i}" for i in range(rows)]}, schema=pa.schema([("id", pa.string())])),
                       folder / f"{name}.parquet")

    write(0, "a", 3), write(0, "b", 2), write(2, "c", 4), write(5, "empty", 0)
    assert class_counts(str(tmp_path), "train") == {0: 5, 2: 4}
    assert class_counts(str(tmp_path), "test") == {}
    written = {"train": {"total": 9, "per_class": [5, 0, 4, 0, 0, 0]}}
    check_written(Output.parse(str(tmp_path)), written)
    (tmp_path / "split=train" / "label=2" / "c.parquet").unlink()
    with pytest.raises(ClusterError, match="split train has 5 rows on disk where 9 were written"):
        check_written(Output.parse(str(tmp_path)), written)


# ----------------------------------------------------------------------------- refusals, before Ray starts


def test_non_empty_output_needs_overwrite(tmp_path: Path) -> None:
    root = write_imagefolder(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    (out / "split=train").mkdir()
    with pytest.raises(ConfigError, match="not empty.*overwrite"):
        preprocess_to_parquet(str(root), str(out), show_progress=False)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="notes.txt.*not written by raydd"):
        preprocess_to_parquet(str(root), str(out), overwrite=True, show_progress=False)


def test_missing_caption_when_required_names_the_image(tmp_path: Path) -> None:
    root = write_imagefolder(tmp_path / "data")
    metadata = root / "train" / "metadata.jsonl"
    rows = [json.loads(line) for line in metadata.read_text().splitlines()]
    del rows[2]["caption"]
    metadata.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"train/img002\.png: missing caption"):
        preprocess_to_parquet(str(root), str(tmp_path / "out"), show_progress=False)


def test_a_caption_error_in_a_preprocessed_copy_names_the_users_source_and_says_empty() -> None:
    from raydd.data import ImageData
    from raydd.data.parquet import check_captions_present

    data = ImageData(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]),
                     ["train/a.png", "train/b.png"], ["x", "y"], captions=["a shirt", "  "])
    copy = "/home/me/.cache/raydd/prepared/photos-1234"
    with pytest.raises(DataError) as error:
        check_captions_present(copy, [data], {"source": "/data/photos"})
    assert str(error.value).startswith("/data/photos: train/b.png: empty caption") and copy not in str(error.value)
    data.captions[1] = None
    with pytest.raises(DataError, match=r"^/data/photos: train/b.png: missing caption"):
        check_captions_present(copy, [data], {"source": "/data/photos"})
    # A directory preprocessed from another preprocessed directory (or by hand) is its own source.
    with pytest.raises(DataError, match=rf"^{copy}: train/b.png"):
        check_captions_present(copy, [data], {"source": f"parquet:{copy}"})


@pytest.mark.parametrize(
    ("option", "match"),
    [({"segmenter": "magic"}, "unknown segmenter"), ({"text_encoder": "bert"}, "unknown text encoder"),
     ({"captioner": "coca_ViT-B-32"}, "needs weights"), ({"splits": ("train", "dev")}, "splits must be"),
     ({"actors": 0}, "actors must be")],
)
def test_bad_names_fail_before_any_data_is_read(option, match, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=match):
        preprocess_to_parquet(str(tmp_path / "does-not-exist"), str(tmp_path / "out"), show_progress=False, **option)


def test_a_component_that_cannot_be_built_fails_at_its_first_batch_with_its_own_error() -> None:
    stage = MaskStage("threshold:999", cpus=1, gpus=0, cache_dir=None)  # Ray would report a dead actor
    with pytest.raises(ConfigError, match="999 is outside"):
        stage({"image": np.zeros((1, 4, 4, 1), np.uint8)})


@pytest.mark.timeout(RAY_TIMEOUT)
def test_an_error_inside_an_actor_reaches_the_caller_as_the_raydd_error(ray_local, tmp_path: Path) -> None:
    from tests.helpers import tiny_splits

    data = tiny_splits().test
    table = split_table(data, "test", with_masks=False)  # no mask column, but the stage wants annotations
    stage = StagePlan("masks", MaskStage, {"segmenter": "annotations", "cpus": 0.5, "gpus": 0, "cache_dir": None}, 0)
    with pytest.raises(DataError, match="needs the dataset's masks") as caught:
        run_pipeline([table], [stage], Output.parse(str(tmp_path / "out")), actors=1, cpus_per_actor=0.5,
                     batch_size=8, image_shape=(28, 28, 1), show_progress=False)
    assert type(caught.value) is DataError and "Traceback" not in str(caught.value)


def test_job_entrypoint_arguments() -> None:
    spec = importlib.util.spec_from_file_location("preprocess_job", ROOT / "jobs" / "preprocess.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    args = job.parse_args(["--source", "fashion-mnist", "--out", "s3://b/fm", "--segmenter", "none",
                           "--splits", "train,test", "--actors", "2", "--cpus-per-actor", "0.25"])
    kwargs = job.pipeline_kwargs(args)
    assert kwargs["segmenter"] is None and kwargs["splits"] == ["train", "test"]
    assert kwargs["actors"] == 2 and kwargs["cpus_per_actor"] == 0.25 and kwargs["text_encoder"] == "minilm"


@pytest.fixture(scope="module")
def tiny_coca(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A few-layer CoCa registered with open_clip in this process, and random weights for it on disk."""
    import uuid

    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny-coca")
    name = f"coca_pipeline_test_{uuid.uuid4().hex[:6]}"
    tower = {"context_length": 76, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8,
                       "attentional_pool": True, "attn_pooler_heads": 2, "output_tokens": True},
        "text_cfg": {**tower, "embed_cls": True, "output_tokens": True},
        "multimodal_cfg": {**tower, "attn_pooler_heads": 2},
        "custom_text": True,
    }
    (folder / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / f"{name}.json")
    weights = folder / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in open_clip.create_model(name).state_dict().items()}, str(weights))
    return name, weights


def test_captioner_stage_is_described_up_front_and_fills_only_missing_captions(tiny_coca) -> None:
    from raydd.pipeline.preprocess import CaptionStage, describe_captioner, describe_text_encoder
    from raydd.components import make_text_encoder

    torch.set_num_threads(1)
    name, weights = tiny_coca
    described = describe_captioner(f"{name}:{weights}")
    assert described.id.startswith(f"coca:{name}:file:")
    with pytest.raises(ConfigError, match="does not exist"):
        describe_captioner(f"{name}:/no/such/weights.safetensors")
    stage = CaptionStage(f"{name}:{weights}", cpus=1, gpus=0, batch_size=4)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    out = stage({"image": images, "caption": np.array([None, "kept", ""], dtype=object)})
    assert out["caption"][1] == "kept" and out["caption"][0] and out["caption"][2]
    # The id the manifest records is the one the encoder reports (here: random open_clip weights).
    spec = f"openclip:{name}"
    with pytest.warns(UserWarning, match="random weights"):
        assert describe_text_encoder(spec).id == make_text_encoder(spec).id


def test_evaluating_a_run_reads_the_test_images_and_of_train_only_labels_and_captions(imagefolder_run, tmp_path: Path,
                                                                                     monkeypatch) -> None:
    from raydd.config import build_config
    from raydd.data import parquet
    from raydd.distill import run_distillation
    from raydd.run_inputs import load_splits
    from raydd.synthetic import SyntheticSet
    from raydd.workflows import evaluate_run, evaluate_set

    _, out, _ = imagefolder_run
    cfg = build_config("quick", overrides={"data": {"name": f"parquet:{out}"}},
                       sets=["device=cpu", "distill.ipc=1", "distill.iterations=2", "distill.batch_real=4",
                             "eval.models=2", "eval.epochs=2", "mm.cc=true"])
    run = tmp_path / "run"
    run_distillation(cfg, str(run), show_progress=False)
    reads: list[tuple[str, tuple[str, ...]]] = []
    real = parquet.read_rows

    def spy(url, split, columns, classes=None):
        reads.append((split, tuple(columns)))
        return real(url, split, columns, classes)

    monkeypatch.setattr(parquet, "read_rows", spy)
    result = evaluate_run(str(run), cfg, show_progress=False)
    monkeypatch.undo()
    assert [split for split, columns in reads if "image" in columns] == ["test"]
    assert "train" in [split for split, _ in reads]  # its labels and captions: the caption-only baseline
    whole = evaluate_set(SyntheticSet.load(str(run)), load_splits(cfg), cfg, show_progress=False)
    assert result.accuracy_image_caption is not None and result.caption_only is not None
    assert result.accuracy.per_model == whole.accuracy.per_model
    assert result.accuracy_image_caption.per_model == whole.accuracy_image_caption.per_model
    assert result.caption_only == whole.caption_only
