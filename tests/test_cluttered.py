"""Tests of the cluttered-fashion-mnist testbed: determinism, cache, exact masks, captions, splits."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from raydd.data import DatasetSplits, load_dataset
from raydd.data import cluttered
from raydd.data.cluttered import (
    NOUNS,
    PALETTE,
    ClutteredOptions,
    build_split,
    cache_dir_for,
    column,
    load_photographs,
    render_backgrounds,
)
from raydd.data.mnist_family import FASHION_MNIST
from raydd.report.data_grid import show_data_grid
from raydd.errors import ConfigError
from tests.helpers import debian_fmnist_installed, isolate_data_env

pytestmark = [debian_fmnist_installed(), pytest.mark.usefixtures("isolated_data_env")]


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> DatasetSplits:
    """The real Fashion-MNIST objects the testbed is built from."""
    with pytest.MonkeyPatch.context() as mp:
        isolate_data_env(mp, tmp_path_factory.mktemp("xdg-fmnist"))
        return load_dataset("fashion-mnist", val_fraction=0)


@pytest.fixture(scope="module")
def photos():
    return load_photographs()


def _build(objects: DatasetSplits, photos, split: str, options: ClutteredOptions):
    data = objects.train if split == "train" else objects.test
    return build_split(split, data.images[:, 0].numpy(), data.labels.numpy(), photos, options)


def _mentions(caption: str, word: str) -> bool:
    """Whole-word match where a hyphen also joins words, so 'shirt' is not found in 't-shirt'."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", caption) is not None


def test_limited_build_is_deterministic_cached_and_shaped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(cluttered.ENV_LIMIT, "200,50")
    first = load_dataset("cluttered-fashion-mnist", val_fraction=0)
    assert first.train.images.dtype == torch.uint8 and tuple(first.train.images.shape) == (200, 3, 32, 32)
    assert tuple(first.train.masks.shape) == (200, 1, 32, 32) and tuple(first.test.images.shape) == (50, 3, 32, 32)
    assert len(first.train.captions) == 200 and len(first.val) == 0
    assert first.class_names == list(FASHION_MNIST.class_names) and first.flip_ok
    assert len(first.mean) == 3 and all(0 < s for s in first.std)

    directory = cache_dir_for(ClutteredOptions(train_limit=200, test_limit=50))
    assert (directory / "meta.json").is_file() and (directory / "train_images.npy").is_file()
    assert directory.parent == tmp_path / "xdg-cache" / "raydd" / "cluttered-fashion-mnist"

    def must_not_build(*args, **kwargs):
        raise AssertionError("the second load must read the cache")

    with monkeypatch.context() as mp:
        mp.setattr(cluttered, "build_split", must_not_build)
        cached = load_dataset("cluttered-fashion-mnist", val_fraction=0)
    assert torch.equal(cached.train.images, first.train.images) and cached.train.captions == first.train.captions

    shutil.rmtree(directory)
    rebuilt = load_dataset("cluttered-fashion-mnist", val_fraction=0)
    for a, b in ((first.train, rebuilt.train), (first.test, rebuilt.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks) and torch.equal(a.labels, b.labels)
        assert a.captions == b.captions and a.ids == b.ids


def test_cache_key_depends_on_limit_and_q() -> None:
    keys = {
        cache_dir_for(ClutteredOptions()),
        cache_dir_for(ClutteredOptions(train_limit=200, test_limit=50)),
        cache_dir_for(ClutteredOptions(train_limit=200, test_limit=60)),
        cache_dir_for(ClutteredOptions(caption_accuracy=0.5)),
    }
    assert len(keys) == 4


def test_sample_i_does_not_depend_on_how_many_are_built(objects, photos) -> None:
    small = _build(objects, photos, "train", ClutteredOptions(train_limit=30))
    large = _build(objects, photos, "train", ClutteredOptions(train_limit=120))
    assert np.array_equal(small.images, large.images[:30]) and np.array_equal(small.plan, large.plan[:30])
    assert small.captions == large.captions[:30]


def test_labels_are_those_of_the_source_objects(objects, photos) -> None:
    for split, source in (("train", objects.train), ("test", objects.test)):
        built = _build(objects, photos, split, ClutteredOptions(train_limit=300, test_limit=300))
        assert np.array_equal(built.labels, source.labels[:300].numpy())
        assert np.array_equal(column(built.plan, "label"), built.labels)


def test_masks_are_exact_object_footprints(objects, photos) -> None:
    built = _build(objects, photos, "train", ClutteredOptions(train_limit=300))
    background = render_backgrounds(built.plan, photos).transpose(0, 3, 1, 2)
    inside = np.broadcast_to(built.masks.astype(bool), built.images.shape)
    assert np.array_equal(built.images[~inside], background[~inside])  # outside: the crop, untouched
    changed = (built.images != background).any(axis=1)  # [N, H, W]
    object_pixels = built.masks[:, 0].astype(bool)
    assert changed[object_pixels].mean() > 0.9  # inside: tinted object (a pixel may match its background by chance)
    assert (object_pixels.sum(axis=(1, 2)) > 10).all()
    sizes = column(built.plan, "size")
    assert sizes.min() >= 14 and sizes.max() <= 24
    assert (column(built.plan, "x") + sizes <= 32).all() and (column(built.plan, "y") + sizes <= 32).all()


@pytest.mark.parametrize("q", [0.7, 0.3])
def test_captions_name_the_true_colour_and_the_true_noun_at_rate_q(objects, photos, q: float) -> None:
    built = _build(objects, photos, "train", ClutteredOptions(caption_accuracy=q, train_limit=3000))
    colours = column(built.plan, "colour")
    true_nouns = [NOUNS[label] for label in built.labels]
    assert all(_mentions(c, PALETTE[k][0]) for c, k in zip(built.captions, colours))
    correct = np.array([_mentions(c, noun) for c, noun in zip(built.captions, true_nouns)])
    assert abs(correct.mean() - q) < 0.04  # binomial sd at n=3000 is < 0.01
    vocabulary = set(NOUNS) | {cluttered.GENERIC_NOUN}
    for caption, ok in zip(built.captions, correct):
        assert sum(_mentions(caption, word) for word in vocabulary) == 1  # exactly one noun, right or wrong
    wrong = [c for c, ok in zip(built.captions, correct) if not ok]
    generic_share = np.mean([_mentions(c, cluttered.GENERIC_NOUN) for c in wrong])
    assert 0.15 < generic_share < 0.35  # a quarter of the mistakes say "item"
    assert len({c.split(" ")[0] for c in built.captions}) > 3  # several templates


def test_train_and_test_backgrounds_come_from_disjoint_regions(objects, photos) -> None:
    options = ClutteredOptions(train_limit=2000, test_limit=2000)
    for split in ("train", "test"):
        plan = _build(objects, photos, split, options).plan
        for p, x, side in zip(column(plan, "photo"), column(plan, "crop_x"), column(plan, "crop_side")):
            start, stop = photos[p].column_range(split)
            assert start <= x and x + side <= stop
    for photo in photos:
        assert photo.column_range("train")[1] == photo.column_range("test")[0]  # touching, not overlapping


def test_options_from_environment_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cluttered.ENV_CAPTION_ACCURACY, "0.4")
    monkeypatch.setenv(cluttered.ENV_LIMIT, "80")
    assert cluttered.options_from_env() == ClutteredOptions(0.4, 80, 80)
    monkeypatch.setenv(cluttered.ENV_CAPTION_ACCURACY, "1.5")
    with pytest.raises(ConfigError, match=cluttered.ENV_CAPTION_ACCURACY):
        cluttered.options_from_env()
    monkeypatch.setenv(cluttered.ENV_CAPTION_ACCURACY, "0.7")
    monkeypatch.setenv(cluttered.ENV_LIMIT, "ten")
    with pytest.raises(ConfigError, match=cluttered.ENV_LIMIT):
        cluttered.options_from_env()


def test_image_size_val_split_and_data_grid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(cluttered.ENV_LIMIT, "100,20")
    splits = load_dataset("cluttered-fashion-mnist", val_fraction=0.2, seed=3, image_size=28)
    assert tuple(splits.train.images.shape[1:]) == (3, 28, 28) and tuple(splits.val.masks.shape[1:]) == (1, 28, 28)
    assert len(splits.train) + len(splits.val) == 100 and len(splits.val) > 0
    assert set(splits.train.masks.unique().tolist()) <= {0, 1}
    path = show_data_grid(splits, 2, str(tmp_path / "grid.png"))
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
