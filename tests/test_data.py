"""Tests of raydd.data: fashion-mnist/mnist from IDX files, imagefolder datasets, splits."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch
from PIL import Image

from raydd.data import DatasetSplits, ImageData, available_sources, load_dataset, register_source
from raydd.data import registry
from raydd.data.locate import locate_files
from raydd.data.mnist_family import FASHION_MNIST
from raydd.data.splits import carve_validation
from raydd.errors import ConfigError, DataError
from tests.helpers import DEBIAN_FMNIST, FMNIST_FILES, debian_fmnist_installed, isolate_data_env

pytestmark = pytest.mark.usefixtures("isolated_data_env")
needs_debian_fmnist = debian_fmnist_installed()


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory: pytest.TempPathFactory) -> DatasetSplits:
    with pytest.MonkeyPatch.context() as mp:
        isolate_data_env(mp, tmp_path_factory.mktemp("xdg-cache"))
        return load_dataset("fashion-mnist", val_fraction=0.1, seed=0)


def _copy_fmnist(target: Path, corrupt: str | None = None, how: str = "flipped-byte") -> None:
    """Link the Debian files into ``target``; the file named ``corrupt`` is written damaged instead."""
    target.mkdir(parents=True, exist_ok=True)
    for name in FMNIST_FILES:
        if corrupt is not None and name.startswith(corrupt):
            data = (DEBIAN_FMNIST / name).read_bytes()
            if how == "flipped-byte":  # right size, wrong content: only the checksum can tell
                content = bytearray(gzip.decompress(data))
                content[-1] ^= 0xFF
                (target / name.removesuffix(".gz")).write_bytes(content)  # unpacked copies are accepted too
            else:  # truncated download
                (target / name).write_bytes(data[: len(data) // 2])
        else:
            (target / name).symlink_to(DEBIAN_FMNIST / name)


# ---------------------------------------------------------------------------------------------
# fashion-mnist / mnist


@needs_debian_fmnist
def test_fashion_mnist_shapes_names_and_stats(fmnist: DatasetSplits) -> None:
    assert fmnist.name == "fashion-mnist"
    assert (len(fmnist.train), len(fmnist.val), len(fmnist.test)) == (54000, 6000, 10000)
    for split in (fmnist.train, fmnist.val, fmnist.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, 28, 28)
        assert split.labels.dtype == torch.int64
        assert split.captions is None
    assert fmnist.class_names[0] == "T-shirt/top" and fmnist.class_names[9] == "Ankle boot"
    assert (fmnist.channels, fmnist.image_size, fmnist.num_classes) == (1, (28, 28), 10)
    assert fmnist.mean == (0.2860,) and fmnist.std == (0.3530,) and fmnist.flip_ok
    assert fmnist.test.ids[42] == "fashion-mnist/test/00042"


@needs_debian_fmnist
def test_fashion_mnist_original_train_has_6000_per_class(fmnist: DatasetSplits) -> None:
    labels = torch.cat([fmnist.train.labels, fmnist.val.labels])
    assert labels.min() == 0 and labels.max() == 9
    assert torch.bincount(labels).tolist() == [6000] * 10
    assert torch.bincount(fmnist.test.labels).tolist() == [1000] * 10
    assert sorted(fmnist.train.ids + fmnist.val.ids) == [f"fashion-mnist/train/{i:05d}" for i in range(60000)]


@needs_debian_fmnist
def test_fashion_mnist_pixel_statistics_match_published_constants(fmnist: DatasetSplits) -> None:
    pixels = torch.cat([fmnist.train.images, fmnist.val.images]).float() / 255
    assert pixels.mean().item() == pytest.approx(0.2860, abs=5e-4)
    assert pixels.std().item() == pytest.approx(0.3530, abs=5e-4)


@needs_debian_fmnist
def test_validation_split_is_stratified_and_disjoint(fmnist: DatasetSplits) -> None:
    assert torch.bincount(fmnist.val.labels, minlength=10).tolist() == [600] * 10
    assert not set(fmnist.train.ids) & set(fmnist.val.ids)
    # The val images really are the original images with those ids (alignment survived the split).
    first_val = int(fmnist.val.ids[0].rsplit("/", 1)[1])
    raw = np.frombuffer(gzip.decompress((DEBIAN_FMNIST / "train-images-idx3-ubyte.gz").read_bytes()), np.uint8, offset=16)
    assert torch.equal(fmnist.val.images[0, 0], torch.from_numpy(raw[first_val * 784 : (first_val + 1) * 784].reshape(28, 28).copy()))


@needs_debian_fmnist
def test_validation_split_depends_only_on_seed(fmnist: DatasetSplits) -> None:
    torch.manual_seed(1234)  # global RNG state must not matter
    again = load_dataset("fashion-mnist", val_fraction=0.1, seed=0)
    other = load_dataset("fashion-mnist", val_fraction=0.1, seed=1)
    assert again.val.ids == fmnist.val.ids
    assert torch.equal(again.val.images, fmnist.val.images)
    assert other.val.ids != fmnist.val.ids
    assert torch.bincount(other.val.labels).tolist() == [600] * 10


@needs_debian_fmnist
def test_masks_are_pixels_above_threshold(fmnist: DatasetSplits) -> None:
    for split in (fmnist.train, fmnist.val, fmnist.test):
        assert torch.equal(split.masks, (split.images > 0).to(torch.uint8))


@needs_debian_fmnist
@pytest.mark.parametrize("how", ["flipped-byte", "truncated"])
@pytest.mark.parametrize("corrupt", ["train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"])
def test_corrupted_copy_in_root_raises_naming_the_file(tmp_path: Path, corrupt: str, how: str) -> None:
    _copy_fmnist(tmp_path / "copy", corrupt, how)
    with pytest.raises(DataError, match=corrupt):
        load_dataset("fashion-mnist", root=str(tmp_path / "copy"))


def test_root_without_the_files_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no complete copy") as info:
        load_dataset("fashion-mnist", root=str(tmp_path))
    assert str(tmp_path) in str(info.value)


@needs_debian_fmnist
def test_raydd_data_copy_beats_debian_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A corrupt copy under $RAYDD_DATA/fashion-mnist/ must be the one read (and rejected).
    _copy_fmnist(tmp_path / "data" / "fashion-mnist", corrupt="train-labels-idx1-ubyte")
    monkeypatch.setenv("RAYDD_DATA", str(tmp_path / "data"))
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "data" / "fashion-mnist" / "train-labels"))):
        load_dataset("fashion-mnist")
    # ... and a good copy there is found there, also directly in $RAYDD_DATA.
    _copy_fmnist(tmp_path / "flat")
    monkeypatch.setenv("RAYDD_DATA", str(tmp_path / "flat"))
    found = locate_files("fashion-mnist", FASHION_MNIST.files, root=None, system_dirs=FASHION_MNIST.system_dirs)
    assert {p.parent for p in found.values()} == {tmp_path / "flat"}


@needs_debian_fmnist
def test_resolution_order_cache_then_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def where() -> set[Path]:
        found = locate_files("fashion-mnist", FASHION_MNIST.files, root=None, system_dirs=FASHION_MNIST.system_dirs)
        return {p.parent for p in found.values()}

    assert where() == {DEBIAN_FMNIST}
    cache = tmp_path / "xdg-cache" / "raydd" / "fashion-mnist"
    _copy_fmnist(cache)
    assert where() == {cache}
    # An incomplete $RAYDD_DATA is skipped; the root argument beats everything.
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / FMNIST_FILES[0]).symlink_to(DEBIAN_FMNIST / FMNIST_FILES[0])
    monkeypatch.setenv("RAYDD_DATA", str(tmp_path / "partial"))
    assert where() == {cache}
    found = locate_files("fashion-mnist", FASHION_MNIST.files, root=str(DEBIAN_FMNIST), system_dirs=())
    assert {p.parent for p in found.values()} == {DEBIAN_FMNIST}


@needs_debian_fmnist
def test_no_download_when_a_local_copy_exists(tmp_path: Path) -> None:
    unreachable = (f"file://{tmp_path}/no-such-mirror/",)
    found = locate_files(
        "fashion-mnist", FASHION_MNIST.files, root=None, system_dirs=FASHION_MNIST.system_dirs, mirrors=unreachable
    )
    assert {p.parent for p in found.values()} == {DEBIAN_FMNIST}
    assert not (tmp_path / "xdg-cache").exists()


@needs_debian_fmnist
def test_download_verifies_before_placing_files_in_cache(tmp_path: Path) -> None:
    cache = tmp_path / "xdg-cache" / "raydd" / "fashion-mnist"
    spec = dataclasses.replace(FASHION_MNIST, system_dirs=(), mirrors=(f"file://{tmp_path}/bad-mirror/",))
    _copy_fmnist(tmp_path / "bad-mirror", corrupt="train-labels-idx1-ubyte")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte"):
        locate_files(spec.name, spec.files, root=None, mirrors=spec.mirrors)
    assert sorted(p.name for p in cache.iterdir()) == ["train-images-idx3-ubyte.gz"]  # no partial, no bad file

    spec = dataclasses.replace(spec, mirrors=(f"file://{tmp_path}/no-such-mirror/", f"file://{DEBIAN_FMNIST}/"))
    found = locate_files(spec.name, spec.files, root=None, mirrors=spec.mirrors)
    assert {p.parent for p in found.values()} == {cache}
    assert sorted(p.name for p in cache.iterdir()) == sorted(FMNIST_FILES)
    for name in FMNIST_FILES:
        assert (cache / name).read_bytes() == (DEBIAN_FMNIST / name).read_bytes()


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_reads_uncompressed_idx_files_and_forbids_flips(tmp_path: Path) -> None:
    pattern = (np.arange(28 * 28, dtype=np.uint8) % 3 * 100).reshape(28, 28)  # pixels 0, 100, 200
    for prefix, n in (("train", 60000), ("t10k", 10000)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", np.broadcast_to(pattern, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    mnist = load_dataset("mnist", root=str(tmp_path), val_fraction=0.2, seed=3, mask_threshold=100)
    assert not mnist.flip_ok and mnist.class_names == [str(d) for d in range(10)]
    assert mnist.mean == (0.1307,) and mnist.std == (0.3081,)
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (48000, 12000, 10000)
    assert mnist.test.labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    # The threshold is strict: a pixel equal to it is background.
    assert torch.equal(mnist.test.masks[0, 0], torch.from_numpy(pattern > 100).to(torch.uint8))
    assert torch.equal(mnist.test.masks, (mnist.test.images > 100).to(torch.uint8))


def test_mnist_bad_dims_and_missing_files_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="looked in"):
        load_dataset("mnist")
    for prefix, n in (("train", 60000), ("t10k", 10000)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", np.zeros((n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.zeros(n))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(10000, 10))  # label out of range
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*out of range"):
        load_dataset("mnist", root=str(tmp_path))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((10000, 14, 56)))  # same size, wrong dims
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*dimensions"):
        load_dataset("mnist", root=str(tmp_path))


def test_unknown_name_is_a_config_error_listing_sources() -> None:
    assert {"fashion-mnist", "mnist", "imagefolder"} <= set(available_sources())
    with pytest.raises(ConfigError, match="fashion-mnist.*imagefolder.*mnist"):
        load_dataset("cifar-10")


@pytest.mark.parametrize(
    "options", [{"val_fraction": 1.0}, {"val_fraction": -0.1}, {"image_size": 0}, {"mask_threshold": 300}]
)
def test_out_of_range_options_are_config_errors(options: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(options))):
        load_dataset("fashion-mnist", **options)


def test_register_source_makes_a_loader_reachable_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry.SOURCES, "_entries", dict(registry.SOURCES._entries))  # leave no test source behind
    name = "test-source"
    seen = []

    @register_source(name)
    def _loader(request):  # noqa: ANN001
        seen.append(request)
        return "sentinel"

    assert name in available_sources()
    assert load_dataset(name, seed=7) == "sentinel" and seen[0].seed == 7


# ---------------------------------------------------------------------------------------------
# ImageData / DatasetSplits / splitting


def _small_data(n_per_class: tuple[int, ...] = (5, 3, 1)) -> ImageData:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    n = len(labels)
    return ImageData(
        images=torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous(),
        labels=labels,
        ids=[f"img{i}" for i in range(n)],
        class_names=[f"c{c}" for c in range(len(n_per_class))],
        captions=[f"caption {i}" if i % 2 else None for i in range(n)],
        masks=(torch.arange(n).view(n, 1, 1, 1).expand(n, 1, 2, 2) % 2).to(torch.uint8),
    )


def test_subset_keeps_every_field_aligned() -> None:
    data = _small_data()
    part = data.subset(torch.tensor([7, 2, 3]))
    assert part.ids == ["img7", "img2", "img3"]
    assert part.images[:, 0, 0, 0].tolist() == [7, 2, 3]
    assert part.labels.tolist() == [1, 0, 0]
    assert part.captions == ["caption 7", None, "caption 3"]
    assert part.masks[:, 0, 0, 0].tolist() == [1, 0, 1]
    assert len(data.subset([])) == 0


def test_indices_by_class() -> None:
    by_class = _small_data((2, 0, 3)).indices_by_class()
    assert [t.tolist() for t in by_class] == [[0, 1], [], [2, 3, 4]]
    assert all(t.dtype == torch.int64 for t in by_class)


def test_carve_validation_counts_and_edge_cases() -> None:
    data = _small_data((5, 3, 1))
    train, val = carve_validation(data, 0.2, seed=0)
    # round(0.2*5)=1, round(0.2*3)=1 (at least one), a single-image class stays in train
    assert torch.bincount(val.labels, minlength=3).tolist() == [1, 1, 0]
    assert sorted(train.ids + val.ids) == sorted(data.ids)
    assert all(val.captions[i] == data.captions[data.ids.index(v)] for i, v in enumerate(val.ids))
    train, val = carve_validation(data, 0.0, seed=0)
    assert len(val) == 0 and val.images.shape[1:] == (3, 2, 2) and train.ids == data.ids


@needs_debian_fmnist
def test_normalize_and_denormalize_round_trip(fmnist: DatasetSplits) -> None:
    x = fmnist.test.images[:64]
    z = fmnist.normalize(x)
    assert z.dtype == torch.float32
    assert torch.allclose(z, (x.float() / 255 - 0.2860) / 0.3530)
    assert torch.allclose(fmnist.denormalize(z), x.float() / 255, atol=1e-6)
    assert fmnist.denormalize(torch.full((1, 1, 2, 2), 100.0)).max() == 1.0
    with pytest.raises(TypeError):
        fmnist.normalize(x.float())


# ---------------------------------------------------------------------------------------------
# imagefolder


@dataclasses.dataclass
class FakeFolder:
    """A tiny imagefolder dataset kept in memory so that tests can break it before writing."""

    files: dict[str, bytes]  # path relative to root -> bytes
    rows: dict[str, list[dict]]  # split -> metadata rows (written as <split>/metadata.jsonl)
    pixels: dict[str, np.ndarray]  # image path -> expected [H, W, 3]
    masks: dict[str, np.ndarray]  # image path -> expected [H, W] 0/1

    def serialized(self) -> dict[str, bytes]:
        out = dict(self.files)
        for split, rows in self.rows.items():
            out[f"{split}/metadata.jsonl"] = "".join(json.dumps(r) + "\n" for r in rows).encode()
        return out

    def write(self, root: Path) -> Path:
        for relative, data in self.serialized().items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_bytes(data)
        return root


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def make_folder(
    per_class: dict[str, tuple[int, int]] | None = None, size: tuple[int, int] = (6, 5), captions: bool = True, masks: bool = True
) -> FakeFolder:
    """Classes -> (train count, test count); RGB noise images of size (W, H) with masks and captions."""
    per_class = per_class or {"dog": (4, 2), "cat": (4, 2), "bird": (4, 1)}
    rng = np.random.default_rng(0)
    folder = FakeFolder({}, {"train": [], "test": []}, {}, {})
    for split, column in (("train", 0), ("test", 1)):
        for label, counts in per_class.items():
            for i in range(counts[column]):
                name = f"{label}/{i}.png"
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                folder.files[f"{split}/{name}"] = _png(pixels)
                folder.pixels[f"{split}/{name}"] = pixels
                row = {"file_name": name, "label": label}
                if captions:
                    row["caption"] = f"a {label} in {split}, number {i}"
                if masks:
                    mask = rng.integers(0, 2, (size[1], size[0]), dtype=np.uint8)
                    folder.files[f"{split}/masks/{name}"] = _png(mask * 255)
                    folder.masks[f"{split}/{name}"] = mask
                    row["mask_file_name"] = f"masks/{name}"
                folder.rows[split].append(row)
    return folder


def _check_round_trip(splits: DatasetSplits, folder: FakeFolder) -> None:
    assert splits.class_names == ["bird", "cat", "dog"]
    assert splits.channels == 3 and splits.image_size == (5, 6) and splits.flip_ok
    for data, split in ((splits.train, "train"), (splits.test, "test")):
        rows = folder.rows[split]
        assert data.ids == [f"{split}/{row['file_name']}" for row in rows]
        assert [splits.class_names[i] for i in data.labels.tolist()] == [row["label"] for row in rows]
        assert data.captions == [row["caption"] for row in rows]
        for i, image_id in enumerate(data.ids):
            assert np.array_equal(data.images[i].permute(1, 2, 0).numpy(), folder.pixels[image_id])
            assert np.array_equal(data.masks[i, 0].numpy(), folder.masks[image_id])
    assert data.masks.dtype == torch.uint8 and set(data.masks.unique().tolist()) == {0, 1}


def test_imagefolder_round_trip(tmp_path: Path) -> None:
    folder = make_folder()
    splits = load_dataset(str(folder.write(tmp_path / "ds")), val_fraction=0)
    _check_round_trip(splits, folder)
    assert len(splits.val) == 0
    assert splits.name == f"imagefolder:{tmp_path / 'ds'}"
    expected = splits.train.images.float().div(255)
    assert splits.mean == pytest.approx(tuple(expected.mean(dim=(0, 2, 3)).tolist()))
    assert splits.std == pytest.approx(tuple(expected.std(dim=(0, 2, 3), unbiased=False).tolist()))


def test_imagefolder_carves_a_stratified_validation_split(tmp_path: Path) -> None:
    root = str(make_folder().write(tmp_path / "ds"))
    splits = load_dataset(root, val_fraction=0.25, seed=5)
    assert torch.bincount(splits.val.labels).tolist() == [1, 1, 1]
    assert sorted(splits.train.ids + splits.val.ids) == sorted(f"train/{r['file_name']}" for r in make_folder().rows["train"])
    again = load_dataset("imagefolder", root=root, val_fraction=0.25, seed=5)
    assert again.val.ids == splits.val.ids
    assert load_dataset(splits.name, val_fraction=0.25, seed=5).val.ids == splits.val.ids


def test_imagefolder_validation_folder_replaces_the_carved_split(tmp_path: Path) -> None:
    folder = make_folder()
    folder.rows["validation"] = [dict(folder.rows["test"][0])]
    folder.files["validation/" + folder.rows["test"][0]["file_name"]] = folder.files["test/" + folder.rows["test"][0]["file_name"]]
    folder.files["validation/" + folder.rows["test"][0]["mask_file_name"]] = folder.files["test/" + folder.rows["test"][0]["mask_file_name"]]
    splits = load_dataset(str(folder.write(tmp_path / "ds")), val_fraction=0.5)
    assert splits.val.ids == ["validation/dog/0.png"]
    assert len(splits.train) == 12


def test_imagefolder_through_fsspec_memory() -> None:
    folder = make_folder()
    fs = fsspec.filesystem("memory")
    base = f"/raydd-test-{uuid.uuid4().hex}"
    try:
        for relative, data in folder.serialized().items():
            fs.pipe(f"{base}/{relative}", data)
        splits = load_dataset(f"memory://{base}", val_fraction=0)
        _check_round_trip(splits, folder)
        assert splits.name == f"imagefolder:memory://{base}"
    finally:
        fs.rm(base, recursive=True)


def test_imagefolder_grey_images_integer_labels_and_classes_json(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    rng = np.random.default_rng(1)
    for split, n in (("train", 6), ("test", 3)):
        (root / split).mkdir(parents=True)
        rows = [{"file_name": f"{i}.png", "label": i % 3} for i in range(n)]
        for row in rows:
            Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(root / split / row["file_name"])
        (root / split / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    splits = load_dataset(str(root), val_fraction=0)
    assert splits.channels == 1 and splits.class_names == ["0", "1", "2"]
    assert splits.train.captions is None and splits.train.masks is None
    assert splits.train.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert torch.equal(splits.test.images[2, 0], torch.from_numpy(np.array(Image.open(root / "test" / "2.png"))))
    (root / "classes.json").write_text(json.dumps(["zero", "one", "two"]))
    assert load_dataset(str(root), val_fraction=0).class_names == ["zero", "one", "two"]


def test_imagefolder_resizes_images_and_masks_when_asked(tmp_path: Path) -> None:
    folder = make_folder()
    odd = folder.rows["test"][0]
    bigger = np.zeros((9, 7, 3), dtype=np.uint8)
    folder.files[f"test/{odd['file_name']}"] = _png(bigger)
    folder.files[f"test/{odd['mask_file_name']}"] = _png(np.full((9, 7), 255, dtype=np.uint8))
    splits = load_dataset(str(folder.write(tmp_path / "ds")), image_size=4, val_fraction=0)
    assert splits.image_size == (4, 4) and splits.train.masks.shape == (12, 1, 4, 4)
    assert set(splits.train.masks.unique().tolist()) <= {0, 1}
    assert splits.test.images[0].max() == 0 and splits.test.masks[0].min() == 1


def test_imagefolder_captions_none_when_absent_and_none_for_rows_without(tmp_path: Path) -> None:
    assert load_dataset(str(make_folder(captions=False).write(tmp_path / "a")), val_fraction=0).test.captions is None
    folder = make_folder(masks=False)
    del folder.rows["test"][1]["caption"]
    splits = load_dataset(str(folder.write(tmp_path / "b")), val_fraction=0)
    assert splits.test.captions[1] is None and splits.test.captions[0] == folder.rows["test"][0]["caption"]
    assert splits.test.masks is None


# Each case: (mutation of a valid FakeFolder, strings the error message must contain).
def _drop_split(split: str) -> Callable[[FakeFolder], None]:
    def mutate(f: FakeFolder) -> None:
        del f.rows[split]
        for key in [k for k in f.files if k.startswith(split + "/")]:
            del f.files[key]

    return mutate


def _set_row(split: str, index: int, **changes) -> Callable[[FakeFolder], None]:
    def mutate(f: FakeFolder) -> None:
        for key, value in changes.items():
            if value is None:
                f.rows[split][index].pop(key, None)
            else:
                f.rows[split][index][key] = value

    return mutate


def _set_file(relative: str, data: bytes | None) -> Callable[[FakeFolder], None]:
    def mutate(f: FakeFolder) -> None:
        if data is None:
            del f.files[relative]
        else:
            f.files[relative] = data

    return mutate


def _raw_metadata(split: str, text: str) -> Callable[[FakeFolder], None]:
    def mutate(f: FakeFolder) -> None:
        del f.rows[split]
        f.files[f"{split}/metadata.jsonl"] = text.encode()

    return mutate


def _drop_metadata(split: str) -> Callable[[FakeFolder], None]:
    def mutate(f: FakeFolder) -> None:
        del f.rows[split]

    return mutate


def _truncated_png(relative: str) -> Callable[[FakeFolder], None]:
    def mutate(f: FakeFolder) -> None:
        f.files[relative] = f.files[relative][: len(f.files[relative]) // 2]

    return mutate


BAD_INPUTS = {
    "missing train folder": (_drop_split("train"), ["train/"]),
    "missing test folder": (_drop_split("test"), ["test/"]),
    "missing metadata": (_drop_metadata("test"), ["test/metadata.jsonl", "missing"]),
    "malformed json": (
        _raw_metadata("train", '{"file_name": "dog/0.png", "label": "dog"}\n\n{"file_name": "dog/1.png", "label": \n'),
        ["train/metadata.jsonl line 3", "malformed JSON"],
    ),
    "row without file_name": (_set_row("train", 1, file_name=None), ["train/metadata.jsonl line 2", "file_name"]),
    "row without label": (_set_row("test", 0, label=None), ["test/dog/0.png", "label"]),
    "missing image": (_set_file("train/cat/2.png", None), ["train/cat/2.png", "missing"]),
    "garbage image": (_set_file("train/cat/2.png", b"not a png at all"), ["train/cat/2.png", "corrupt"]),
    "truncated image": (_truncated_png("test/bird/0.png"), ["test/bird/0.png", "corrupt"]),
    "unknown test label": (_set_row("test", 1, label="zebra"), ["test/dog/1.png", "zebra", "unknown label"]),
    "missing mask": (_set_file("test/masks/cat/1.png", None), ["test/masks/cat/1.png", "missing"]),
    "unreadable mask": (_set_file("train/masks/dog/3.png", b"\x89PNG broken"), ["train/masks/dog/3.png", "mask"]),
    "mask of another size": (
        _set_file("train/masks/dog/3.png", _png(np.zeros((2, 2), dtype=np.uint8))),
        ["train/masks/dog/3.png", "2x2", "6x5"],
    ),
    "row without mask": (_set_row("test", 2, mask_file_name=None), ["test/cat/0.png", "mask_file_name"]),
    "image of another size": (
        lambda f: (
            _set_file("test/cat/1.png", _png(np.zeros((7, 6, 3), dtype=np.uint8)))(f),
            _set_file("test/masks/cat/1.png", _png(np.zeros((7, 6), dtype=np.uint8)))(f),
        ),
        ["test/cat/1.png", "6x7", "6x5", "data.image_size"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_imagefolder_bad_input_raises_one_data_error_naming_the_file(tmp_path: Path, case: str) -> None:
    mutate, expected = BAD_INPUTS[case]
    folder = make_folder()
    mutate(folder)
    root = folder.write(tmp_path / "ds")
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    with pytest.raises(DataError) as info:
        load_dataset(str(root))
    for text in expected:
        assert text in str(info.value)
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before  # nothing written


def test_imagefolder_missing_root_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not-there"):
        load_dataset(str(tmp_path / "not-there"))
    with pytest.raises(DataError, match="not-there"):
        load_dataset("memory://not-there")


@pytest.mark.parametrize("caption", ["", "   ", None])
def test_require_captions_rejects_an_empty_or_missing_caption(tmp_path: Path, caption: str | None) -> None:
    folder = make_folder(masks=False)
    if caption is None:
        del folder.rows["train"][5]["caption"]
    else:
        folder.rows["train"][5]["caption"] = caption
    root = str(folder.write(tmp_path / "ds"))
    assert load_dataset(root).train.captions is not None  # fine unless captions are required
    with pytest.raises(DataError, match="train/cat/1.png") as info:
        load_dataset(root, require_captions=True)
    assert "caption" in str(info.value)


def test_resize_images_keeps_uint8_and_averages_when_shrinking() -> None:
    from raydd.data.resize import resize_images

    flat = torch.full((3, 1, 28, 28), 77, dtype=torch.uint8)
    assert torch.equal(resize_images(flat, 32), torch.full((3, 1, 32, 32), 77, dtype=torch.uint8))
    stripes = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    stripes[..., ::4] = 200  # plain bilinear sampling at 8 -> 2 would miss every stripe and return zeros
    small = resize_images(stripes, 2)
    assert small.dtype == torch.uint8 and small.shape == (1, 1, 2, 2)
    assert small.min() > 0 and small.max() < 200
