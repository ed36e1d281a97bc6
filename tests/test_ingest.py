"""Folder sources read on Ray: WebDataset shards and imagefolders, decoded by Ray Data tasks.

The same images are written twice, as an imagefolder and as WebDataset shards, so that the two
layouts (and the in-process loader) can be checked against each other row by row.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet  # noqa: F401  (pa.parquet)
import pyarrow.dataset as pads
import pytest
import torch
from PIL import Image

from raydd.data import load_dataset
from raydd.data.parquet import read_manifest, tensor_to_numpy
from raydd.errors import ConfigError, DataError
from raydd.pipeline.preprocess import preprocess_to_parquet

RAY_TIMEOUT = 500
SIZE = (7, 6)  # (W, H)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _samples(per_class: int = 4, n_test: int = 4, masks: bool = True, seed: int = 0) -> dict[str, list[dict]]:
    """split -> samples (key, label, caption, image PNG bytes, mask PNG bytes), deterministic."""
    rng = np.random.default_rng(seed)
    labels = ["cat", "dog", "bird"]
    out: dict[str, list[dict]] = {"train": [], "test": []}
    counter = 0
    for split, n in (("train", per_class * len(labels)), ("test", n_test)):
        for i in range(n):
            label = labels[i % len(labels)]
            pixels = rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
            sample = {"key": f"{counter:06d}", "label": label, "caption": f"a {label}, number {counter}",
                      "image": _png(pixels), "mask": _png(rng.integers(0, 2, (SIZE[1], SIZE[0]), dtype=np.uint8) * 255)
                      if masks else None}
            out[split].append(sample)
            counter += 1
    return out


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(root: Path, samples: dict[str, list[dict]], per_shard: int = 5) -> Path:
    """img2dataset layout: <split>/<nnnnn>.tar with key.png, key.txt, key.json, key.mask.png."""
    for split, rows in samples.items():
        (root / split).mkdir(parents=True)
        for start in range(0, len(rows), per_shard):
            with tarfile.open(root / split / f"{start // per_shard:05d}.tar", "w") as tar:
                for s in rows[start:start + per_shard]:
                    _add(tar, f"{s['key']}.png", s["image"])
                    if s.get("caption") is not None:
                        _add(tar, f"{s['key']}.txt", s["caption"].encode())
                    if s.get("json", True) is not None:
                        _add(tar, f"{s['key']}.json", s.get("json") or json.dumps({"label": s["label"]}).encode())
                    if s.get("mask") is not None:
                        _add(tar, f"{s['key']}.mask.png", s["mask"])
        (root / split / "00000_stats.json").write_text("{}")  # img2dataset's side files are ignored
    return root


def write_folder(root: Path, samples: dict[str, list[dict]]) -> Path:
    """The same samples as an imagefolder: <split>/<key>.png, masks/<key>.png, metadata.jsonl."""
    for split, rows in samples.items():
        (root / split / "masks").mkdir(parents=True)
        lines = []
        for s in rows:
            (root / split / f"{s['key']}.png").write_bytes(s["image"])
            row = {"file_name": f"{s['key']}.png", "label": s["label"], "caption": s["caption"]}
            if s.get("mask") is not None:
                (root / split / "masks" / f"{s['key']}.png").write_bytes(s["mask"])
                row["mask_file_name"] = f"masks/{s['key']}.png"
            lines.append(json.dumps(row) + "\n")
        (root / split / "metadata.jsonl").write_text("".join(lines))
    return root


def write_image_parquet(root: Path, samples: dict[str, list[dict]], per_file: int = 5, hub: bool = True,
                        class_label: list[str] | None = ("cat", "dog", "bird")) -> Path:
    """The same samples as Hugging Face writes them: data/<split>-0000k-of-0000n.parquet (``hub``) or
    <split>/part-k.parquet, the image as the ``Image`` feature's struct, the label a ``ClassLabel``
    index with its names in the schema metadata (``class_label``; None: the class name as text), the
    caption as ``text``, the mask as PNG bytes."""
    names = list(class_label) if class_label else None
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    metadata = None
    if names:
        features = {"image": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}
        metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    for split, rows in samples.items():
        parts = [rows[i:i + per_file] for i in range(0, len(rows), per_file)]
        for k, part in enumerate(parts):
            table = pa.table({
                "image": pa.array([{"bytes": s["image"], "path": f"{s['key']}.png"} for s in part], image_type),
                "label": pa.array([names.index(s["label"]) if names else s["label"] for s in part]),
                "text": pa.array([s["caption"] for s in part], pa.string()),
                "mask": pa.array([s.get("mask") for s in part], pa.binary()),
            })
            table = table.replace_schema_metadata(metadata)
            path = (root / "data" / f"{split}-{k:05d}-of-{len(parts):05d}.parquet" if hub
                    else root / split / f"part-{k}.parquet")
            path.parent.mkdir(parents=True, exist_ok=True)
            pa.parquet.write_table(table, path)
    return root


def _key(row_id: str) -> str:
    """train/00001.tar:000007 and train/000007.png name the same sample."""
    return row_id.rsplit(":", 1)[-1] if ":" in row_id else row_id.rsplit("/", 1)[-1].removesuffix(".png")


def _rows(out: Path) -> pa.Table:
    files = sorted(str(p) for p in out.rglob("*.parquet"))
    partitioning = pads.partitioning(pa.schema([("split", pa.string()), ("label", pa.int64())]), flavor="hive")
    return pads.dataset(files, format="parquet", partitioning=partitioning, partition_base_dir=str(out)).to_table()


def _by_key(table: pa.Table) -> dict[str, dict]:
    images = tensor_to_numpy(table.column("image"), (SIZE[1], SIZE[0], 3))
    masks = tensor_to_numpy(table.column("mask"), (SIZE[1], SIZE[0]))
    out = {}
    for i, row_id in enumerate(table.column("id").to_pylist()):
        out[_key(row_id)] = {"split": table.column("split")[i].as_py(), "label": table.column("label")[i].as_py(),
                             "class_name": table.column("class_name")[i].as_py(),
                             "caption": table.column("caption")[i].as_py(), "image": images[i], "mask": masks[i]}
    return out


def _assert_same_rows(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        for name in ("split", "label", "class_name", "caption"):
            assert a[key][name] == b[key][name], (key, name)
        np.testing.assert_array_equal(a[key]["image"], b[key]["image"])
        np.testing.assert_array_equal(a[key]["mask"], b[key]["mask"])


# ----------------------------------------------------------------------------- in-process (no Ray)


def test_shards_load_in_process_like_the_same_imagefolder(tmp_path: Path) -> None:
    samples = _samples()
    shards = load_dataset(str(write_shards(tmp_path / "wds", samples)))
    folder = load_dataset(str(write_folder(tmp_path / "folder", samples)))
    assert shards.name.startswith("webdataset:") and shards.class_names == folder.class_names == ["bird", "cat", "dog"]
    assert shards.mean == folder.mean and shards.std == folder.std
    for split in ("train", "val", "test"):
        a, b = getattr(shards, split), getattr(folder, split)
        assert [_key(i) for i in a.ids] == [_key(i) for i in b.ids]
        assert a.ids[0].startswith(f"{'test' if split == 'test' else 'train'}/0000") and ".tar:" in a.ids[0]
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and torch.equal(a.masks, b.masks)
        assert a.captions == b.captions
    assert load_dataset(f"webdataset:{tmp_path / 'wds'}").train.ids == shards.train.ids


def test_image_parquet_loads_in_process_like_the_same_imagefolder(tmp_path: Path) -> None:
    samples = _samples()
    folder = load_dataset(str(write_folder(tmp_path / "folder", samples)))
    for hub in (True, False):
        # Labels as class names: classes sorted as an imagefolder's, and every split the same rows.
        source = write_image_parquet(tmp_path / f"names-{hub}", samples, hub=hub, class_label=None)
        loaded = load_dataset(str(source))
        assert loaded.name.startswith("image-parquet:") and loaded.class_names == folder.class_names
        assert loaded.mean == folder.mean and loaded.std == folder.std
        for split in ("train", "val", "test"):
            a, b = getattr(loaded, split), getattr(folder, split)
            assert ".parquet:" in a.ids[0] and a.ids[0].startswith(("data/" if hub else "") + ("test" if split == "test"
                                                                                              else "train"))
            assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks) and a.captions == b.captions
            assert torch.equal(a.labels, b.labels)
        assert load_dataset(f"image-parquet:{source}").train.ids == loaded.train.ids
    # A ClassLabel column: its names name the classes, in its order (not sorted).
    labelled = load_dataset(str(write_image_parquet(tmp_path / "hf", samples)))
    assert labelled.class_names == ["cat", "dog", "bird"]
    assert torch.equal(labelled.test.images, folder.test.images)
    assert [labelled.class_names[i] for i in labelled.test.labels] == [folder.class_names[i] for i in folder.test.labels]
    _show_data(tmp_path / "hf", tmp_path / "parquet.png")


@pytest.mark.parametrize("damage, match", [
    ("no_image", r"data/train-00000-of-00003.parquet:1: no image \(the 'image' cell is empty\)"),
    ("bad_label", r"data/train-00000-of-00003.parquet:1: label 7 is not a class of the file's ClassLabel"),
    ("bad_png", r"data/train-00000-of-00003.parquet:1"),
    ("no_label_column", r"data/train-00000-of-00003.parquet: no 'label' column"),
])
def test_a_bad_image_parquet_row_is_an_error_naming_file_and_row(damage: str, match: str, tmp_path: Path) -> None:
    source = write_image_parquet(tmp_path / "hf", _samples())
    path = source / "data" / "train-00000-of-00003.parquet"
    table = pa.parquet.read_table(path)
    if damage == "no_image":
        images = table.column("image").to_pylist()
        images[1] = None
        table = table.set_column(0, "image", pa.array(images, table.schema.field("image").type))
    elif damage == "bad_label":
        labels = table.column("label").to_pylist()
        labels[1] = 7
        table = table.set_column(1, "label", pa.array(labels))
    elif damage == "bad_png":
        images = table.column("image").to_pylist()
        images[1] = {"bytes": b"not a png", "path": "x.png"}
        table = table.set_column(0, "image", pa.array(images, table.schema.field("image").type))
    else:
        table = table.drop_columns(["label"])
    pa.parquet.write_table(table, path)
    with pytest.raises(DataError, match=f"image-parquet {source}: {match}"):
        load_dataset(str(source))


def test_integer_labels_and_classes_json_mean_what_they_mean_for_an_imagefolder(tmp_path: Path) -> None:
    samples = _samples(masks=False)
    names = ["cat", "dog", "bird"]
    for rows in samples.values():
        for s in rows:
            s["json"] = json.dumps({"label": names.index(s["label"])}).encode()
    root = write_shards(tmp_path / "wds", samples)
    assert load_dataset(str(root)).class_names == ["0", "1", "2"]
    (root / "classes.json").write_text(json.dumps(names))
    data = load_dataset(str(root))
    assert data.class_names == names and data.train.masks is None
    assert [names[k] for k in data.test.labels.tolist()] == [s["label"] for s in samples["test"]]


@pytest.mark.parametrize(("damage", "match"), [
    ("no label", r"train/00000\.tar:000002\.json: no 'label'"),
    ("bad json", r"train/00000\.tar:000002\.json: not valid JSON"),
    ("corrupt image", r"train/00000\.tar:000002\.png: corrupt or unreadable image"),
    ("small mask", r"train/00000\.tar:000002\.mask\.png: mask is 3x3 but its image train/00000\.tar:000002\.png is 7x6"),
])
def test_a_bad_sample_is_an_error_naming_shard_and_key(damage: str, match: str, tmp_path: Path) -> None:
    samples = _samples()
    bad = samples["train"][2]
    if damage == "no label":
        bad["json"] = json.dumps({"caption": "x"}).encode()
    elif damage == "bad json":
        bad["json"] = b"{label: cat"
    elif damage == "corrupt image":
        bad["image"] = bad["image"][:40]
    else:
        bad["mask"] = _png(np.zeros((3, 3), np.uint8))
    root = write_shards(tmp_path / "wds", samples)
    with pytest.raises(DataError, match=match) as caught:
        load_dataset(str(root))
    assert str(caught.value).startswith(f"webdataset {root}: ")


def test_a_damaged_shard_is_named(tmp_path: Path) -> None:
    root = write_shards(tmp_path / "wds", _samples())
    (root / "test" / "00000.tar").write_bytes(b"not a tar at all" * 10)
    with pytest.raises(DataError, match=r"test/00000\.tar: not a readable tar file"):
        load_dataset(str(root))


def _truncate_in_a_header(shard: Path, sample: int) -> None:
    """Cut a shard 100 bytes into the first header of its ``sample``-th sample: tarfile alone would read it short."""
    with tarfile.open(shard) as tar:
        offsets = [m.offset for m in tar.getmembers()]
        keys = [m.name.split(".", 1)[0] for m in tar.getmembers()]
    first = offsets[keys.index(sorted(set(keys))[sample])]
    shard.write_bytes(shard.read_bytes()[:first + 100])


def test_a_truncated_shard_is_refused_not_read_short(tmp_path: Path) -> None:
    root = write_shards(tmp_path / "wds", _samples())
    _truncate_in_a_header(root / "train" / "00000.tar", sample=2)
    with pytest.raises(DataError, match=r"^webdataset .*: train/00000\.tar: the tar file is truncated"):
        load_dataset(str(root))


def test_image_parquet_tasks_read_a_file_a_stretch_at_a_time(tmp_path: Path, monkeypatch) -> None:
    from raydd.pipeline.preprocess import samples as ingest_samples

    samples = _samples()
    samples["train"][4]["image"] = None  # row 4 of the first file: a problem that must keep its row number
    source = write_image_parquet(tmp_path / "hf", {"train": samples["train"]}, per_file=7, hub=False)
    monkeypatch.setattr(ingest_samples, "PARQUET_ROWS", 3)
    files = pa.table({"file": ["train/part-0.parquet", "train/part-1.parquet"], "split": ["train", "train"]})
    tables = list(ingest_samples._parquet_samples(files, str(source), ["cat", "dog", "bird"]))
    assert [t.num_rows for t in tables] == [3, 3, 1, 3, 2]
    rows = pa.concat_tables(tables)
    assert rows.column("id").to_pylist() == [f"train/part-{k}.parquet:{i}" for k, n in ((0, 7), (1, 5)) for i in range(n)]
    problems = rows.column("problem").to_pylist()
    assert [i for i, p in enumerate(problems) if p] == [4] and problems[4].startswith("train/part-0.parquet:4: the 'image' has no bytes")
    labels = [json.loads(v) for v in rows.column("label").to_pylist() if v is not None]
    assert labels == [s["label"] for i, s in enumerate(samples["train"]) if i != 4]


def test_a_folder_with_metadata_is_an_imagefolder_and_bad_options_are_refused(tmp_path: Path) -> None:
    samples = _samples()
    assert load_dataset(str(write_folder(tmp_path / "folder", samples))).name.startswith("imagefolder:")
    with pytest.raises(ConfigError, match="on_bad_row must be one of fail, skip"):
        preprocess_to_parquet(str(tmp_path / "folder"), str(tmp_path / "out"), on_bad_row="ignore",
                              show_progress=False)


def _show_data(dataset: Path, grid: Path) -> None:
    from typer.testing import CliRunner

    from raydd.cli import app

    result = CliRunner().invoke(app, ["show-data", "--dataset", str(dataset), "--output", str(grid), "--per-class", "2"])
    assert result.exit_code == 0, result.output
    assert Image.open(grid).size[0] > 0


def test_show_data_draws_a_webdataset_folder_and_an_imagefolder(tmp_path: Path) -> None:
    samples = _samples()
    _show_data(write_shards(tmp_path / "wds", samples), tmp_path / "shards.png")
    _show_data(write_folder(tmp_path / "folder", samples), tmp_path / "folder.png")


# ----------------------------------------------------------------------------- through Ray


@pytest.fixture()
def no_decoding_here(monkeypatch: pytest.MonkeyPatch):
    """Any image decoded in this (the driver's) process fails the test; Ray's workers are other processes."""
    from raydd.data.imagefolder import pixels

    calls: list[str] = []

    def refuse(*args, **kwargs):
        calls.append(str(args[1] if len(args) > 1 else args))
        raise AssertionError("an image was decoded in the driver")

    monkeypatch.setattr(pixels, "open_image", refuse)
    monkeypatch.setattr(Image, "open", refuse)
    yield calls


@pytest.mark.timeout(RAY_TIMEOUT)
def test_shards_and_imagefolder_preprocess_on_ray_to_the_same_rows_without_decoding_in_the_driver(
        ray_local, tmp_path: Path, no_decoding_here) -> None:
    samples = _samples()
    wds, folder = write_shards(tmp_path / "wds", samples), write_folder(tmp_path / "folder", samples)
    kwargs = {"text_encoder": "none", "show_progress": False}
    manifest_a = preprocess_to_parquet(str(wds), str(tmp_path / "a"), **kwargs)
    manifest_b = preprocess_to_parquet(str(folder), str(tmp_path / "b"), **kwargs)
    assert no_decoding_here == []
    rows_a, rows_b = _by_key(_rows(tmp_path / "a")), _by_key(_rows(tmp_path / "b"))
    assert len(rows_a) == 16
    _assert_same_rows(rows_a, rows_b)
    for key in ("classes", "counts", "mean", "std", "image_size", "channels", "segmenter"):
        assert manifest_a[key] == manifest_b[key], key
    assert manifest_a["segmenter"]["spec"] == "annotations" and manifest_a["rejected"]["total"] == 0
    assert manifest_a["source"] == f"webdataset:{wds}"


@pytest.mark.timeout(RAY_TIMEOUT)
def test_rows_on_ray_equal_the_in_process_loader(ray_local, tmp_path: Path) -> None:
    samples = _samples()
    wds = write_shards(tmp_path / "wds", samples, per_shard=3)
    manifest = preprocess_to_parquet(str(wds), str(tmp_path / "out"), text_encoder="none", show_progress=False)
    read, source = load_dataset(str(tmp_path / "out")), load_dataset(str(wds))
    for split in ("train", "val", "test"):
        got, want = getattr(read, split), getattr(source, split)
        assert got.ids == sorted(want.ids)
        order = [want.ids.index(i) for i in got.ids]
        assert torch.equal(got.images, want.images[order]) and torch.equal(got.masks, want.masks[order])
        assert got.captions == [want.captions[i] for i in order]
    assert manifest["mean"] == list(source.mean) and manifest["std"] == list(source.std)
    _show_data(tmp_path / "out", tmp_path / "preprocessed.png")  # the third layout


@pytest.mark.timeout(RAY_TIMEOUT)
def test_image_parquet_on_ray_equals_the_in_process_loader_and_skips_bad_rows(ray_local, tmp_path: Path,
                                                                             no_decoding_here, monkeypatch) -> None:
    samples = _samples()
    source = write_image_parquet(tmp_path / "hf", samples, per_file=3)
    manifest = preprocess_to_parquet(str(source), str(tmp_path / "out"), text_encoder="none", show_progress=False)
    assert no_decoding_here == []
    monkeypatch.undo()  # the in-process loader below decodes here, as it should
    read, want_all = load_dataset(str(tmp_path / "out")), load_dataset(str(source))
    assert read.class_names == want_all.class_names == ["cat", "dog", "bird"]
    for split in ("train", "val", "test"):
        got, want = getattr(read, split), getattr(want_all, split)
        assert got.ids == sorted(want.ids)
        order = [want.ids.index(i) for i in got.ids]
        assert torch.equal(got.images, want.images[order]) and torch.equal(got.masks, want.masks[order])
        assert torch.equal(got.labels, want.labels[order]) and got.captions == [want.captions[i] for i in order]
    assert manifest["mean"] == list(want_all.mean) and manifest["source"] == f"image-parquet:{source}"

    # A row without its image: named (file and row) by fail, listed by skip.
    path = source / "data" / "train-00001-of-00004.parquet"
    table = pa.parquet.read_table(path)
    images = table.column("image").to_pylist()
    images[2] = None
    pa.parquet.write_table(table.set_column(0, "image", pa.array(images, table.schema.field("image").type)), path)
    with pytest.raises(DataError, match=r"data/train-00001-of-00004.parquet:2: no image"):
        preprocess_to_parquet(str(source), str(tmp_path / "fail"), text_encoder="none", show_progress=False)
    skipped = preprocess_to_parquet(str(source), str(tmp_path / "skip"), text_encoder="none", show_progress=False,
                                    on_bad_row="skip")
    assert skipped["rejected"]["total"] == 1
    rejected = [json.loads(line) for line in (tmp_path / "skip" / "rejected.jsonl").read_text().splitlines()]
    assert rejected[0]["id"] == "data/train-00001-of-00004.parquet:2"


@pytest.mark.timeout(RAY_TIMEOUT)
def test_bad_rows_fail_naming_the_first_or_are_skipped_and_listed(ray_local, tmp_path: Path, capsys) -> None:
    samples = _samples()
    samples["train"][1]["image"] = samples["train"][1]["image"][:40]  # corrupt image
    samples["train"][3]["json"] = json.dumps({"lable": "cat"}).encode()  # label missing
    samples["test"][2]["mask"] = _png(np.zeros((2, 2), np.uint8))  # mask of the wrong size
    wds = write_shards(tmp_path / "wds", samples)
    with pytest.raises(DataError) as caught:
        preprocess_to_parquet(str(wds), str(tmp_path / "fail"), text_encoder="none", show_progress=False)
    message = str(caught.value)
    assert message.startswith(f"webdataset {wds}: train/00000.tar:000001.png: corrupt or unreadable image")
    assert type(caught.value) is DataError and "Traceback" not in message and "\n" not in message
    assert not (tmp_path / "fail" / "manifest.json").exists() and not list((tmp_path / "fail").rglob("*.parquet"))

    capsys.readouterr()
    manifest = preprocess_to_parquet(str(wds), str(tmp_path / "skip"), text_encoder="none", show_progress=False,
                                     on_bad_row="skip")
    assert "3 rejected" in capsys.readouterr().out
    rejected = [json.loads(line) for line in (tmp_path / "skip" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["file"], r["reason"].split(" (")[0]) for r in rejected] == [
        ("train/00000.tar:000001.png", "corrupt or unreadable image"),
        ("train/00000.tar:000003.json", "no 'label'"),
        ("test/00000.tar:000014.mask.png", "mask is 2x2 but its image test/00000.tar:000014.png is 7x6"),
    ]
    assert manifest["rejected"] == {"on_bad_row": "skip", "total": 3, "per_split": {"train": 2, "test": 1},
                                    "file": "rejected.jsonl"}
    assert sum(c["total"] for c in manifest["counts"].values()) == 13
    assert read_manifest(str(tmp_path / "skip"))["rejected"]["total"] == 3
    written = _by_key(_rows(tmp_path / "skip"))
    assert "000001" not in written and "000003" not in written and "000014" not in written and len(written) == 13


@pytest.mark.timeout(RAY_TIMEOUT)
def test_imagefolder_errors_on_ray_name_the_users_file(ray_local, tmp_path: Path) -> None:
    samples = _samples(masks=False)
    folder = write_folder(tmp_path / "folder", samples)
    (folder / "test" / f"{samples['test'][1]['key']}.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError) as caught:
        preprocess_to_parquet(str(folder), str(tmp_path / "out"), text_encoder="none", show_progress=False)
    assert str(caught.value).startswith(f"imagefolder {folder}: test/000013.png: corrupt or unreadable image")
    assert type(caught.value) is DataError and "Traceback" not in str(caught.value)


_METADATA_CASES = [
    b'{"file_name": "a.png", "label": "x"}\n\n{"file_name": "b.png", "label": "y", "caption": "hi", '
    b'"mask_file_name": "m/b.png"}\r\n{"file_name": "./a.png", "label": "x"}\n{bad\n',  # listed twice before bad JSON
    b'{"file_name": "a.png", "label": "x"}\n{"file_name": "c.png"}\n{"file_name": "a.png", "label": "x"}\n',
    b'{"file_name": "a.png", "label": 3}\n{"file_name": "b.png", "label": 1, "caption": null}\n',
    b'{"file_name": "a.png", "label": "x"}\n\n  \n{"file_name": "../b.png", "label": "x"}\n',
    b'\n\n', b'\xff\n', b'[1]\n',
    # two names listed again: the first repeat in file order (line 4, b) is reported, with its first line
    b'{"file_name": "c.png", "label": "x"}\n{"file_name": "b.png", "label": "x"}\n{"file_name": "a.png", '
    b'"label": "x"}\n{"file_name": "b.png", "label": "x"}\n{"file_name": "c.png", "label": "x"}\n'
    b'{"file_name": "c.png", "label": "x"}\n',
]


@pytest.mark.parametrize("data", _METADATA_CASES)
def test_metadata_as_columns_says_what_the_row_parser_says(data: bytes) -> None:
    """The driver's columnar metadata.jsonl parse: the same rows, the same first error (line and file)."""
    from raydd.data.imagefolder.metadata import parse_metadata, parse_metadata_columns

    try:
        rows = parse_metadata("train", data)
    except DataError as error:
        with pytest.raises(DataError) as got:
            parse_metadata_columns("train", data)
        assert str(got.value) == str(error)
        return
    table = parse_metadata_columns("train", data)
    assert table.column("line").to_pylist() == [r.line for r in rows]
    assert table.column("file_name").to_pylist() == [r.file_name for r in rows]
    assert table.column("label").to_pylist() == [json.dumps(r.label) for r in rows]
    assert table.column("caption").to_pylist() == [r.caption for r in rows]
    assert table.column("has_caption").to_pylist() == [r.has_caption for r in rows]
    assert table.column("mask_file_name").to_pylist() == [r.mask_file_name for r in rows]


@pytest.mark.parametrize("train, test, listed", [
    ('"a" "b" "a"', '"b" "c"', None),  # unknown test label
    ('"a" 1', '"a"', None),  # mixed kinds
    ("0 2", "0", None),  # class 1 has no train images
    ("0 1 5", "0", ["x", "y"]),  # out of range for classes.json
    ('"a" "z"', '"a"', ["a", "b"]),  # not listed
    ('"b" "a"', '"a" "b"', None),  # fine
    ("1 0", "1", ["p", "q"]),  # fine
])
def test_label_checks_on_columns_say_what_check_rows_says(train: str, test: str, listed) -> None:
    from raydd.data.imagefolder.loader import check_rows
    from raydd.data.imagefolder.metadata import parse_metadata, parse_metadata_columns
    from raydd.pipeline.preprocess.columns import check_label_columns, encode_labels

    def lines(labels: str) -> bytes:
        return "".join(json.dumps({"file_name": f"{i}.png", "label": json.loads(v)}) + "\n"
                       for i, v in enumerate(labels.split())).encode()

    data = {"train": lines(train), "test": lines(test)}
    rows = {split: parse_metadata(split, raw) for split, raw in data.items()}
    columns = {split: parse_metadata_columns(split, raw) for split, raw in data.items()}

    def where(split: str, i: int) -> str:
        return rows[split][i].where

    try:
        want = check_rows(rows, listed, require_captions=False)
    except DataError as error:
        with pytest.raises(DataError) as got:
            check_label_columns(*encode_labels({s: t.column("label") for s, t in columns.items()}),
                                {s: np.zeros(t.num_rows, bool) for s, t in columns.items()}, listed, where, "mask")
        assert str(got.value) == str(error)
        return
    plan = check_label_columns(*encode_labels({s: t.column("label") for s, t in columns.items()}),
                               {s: np.zeros(t.num_rows, bool) for s, t in columns.items()}, listed, where, "mask")
    assert plan.class_names == want.class_names
    assert {s: v.tolist() for s, v in plan.labels.items()} == want.labels


@pytest.mark.timeout(RAY_TIMEOUT)
def test_damaged_shards_and_files_on_ray_name_the_source_and_the_file(ray_local, tmp_path: Path) -> None:
    samples = _samples()

    def refused(source: Path, pattern: str) -> None:
        out = tmp_path / f"out-{source.name}"
        with pytest.raises(DataError) as caught:
            preprocess_to_parquet(str(source), str(out), text_encoder="none", show_progress=False)
        message = str(caught.value)
        assert type(caught.value) is DataError and "\n" not in message and "Traceback" not in message
        assert re.match(pattern, message), message
        assert not (out / "manifest.json").exists()

    garbage = write_shards(tmp_path / "garbage", samples)
    (garbage / "test" / "00000.tar").write_bytes(b"not a tar at all" * 10)
    refused(garbage, rf"webdataset {re.escape(str(garbage))}: test/00000\.tar: not a readable tar file")
    cut = write_shards(tmp_path / "cut", samples)
    _truncate_in_a_header(cut / "train" / "00000.tar", sample=2)
    refused(cut, rf"webdataset {re.escape(str(cut))}: train/00000\.tar: the tar file is truncated")
    table = write_image_parquet(tmp_path / "table", samples, per_file=3)
    (table / "data" / "train-00001-of-00004.parquet").write_bytes(b"PAR1 but nothing else")
    refused(table, rf"image-parquet {re.escape(str(table))}: data/train-00001-of-00004\.parquet: "
                   "not a readable Parquet file")
