"""fashion-mnist and mnist: fixed 28x28 grayscale datasets shipped as four IDX files.

Both share one loader; what differs (names, statistics, checksums, where to look) is data in
an ``IdxDataset`` record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError
from .base import DatasetSplits, ImageData
from .idx import IdxFile, load_idx
from .locate import locate_files
from .registry import SourceRequest, register_source
from .resize import resize_images
from .splits import carve_validation


@dataclass(frozen=True)
class IdxDataset:
    name: str
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip_ok: bool
    train_images: IdxFile
    train_labels: IdxFile
    test_images: IdxFile
    test_labels: IdxFile
    system_dirs: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[IdxFile, ...]:
        return self.train_images, self.train_labels, self.test_images, self.test_labels


def _files(train_sha: tuple[str, str] | None = None, test_sha: tuple[str, str] | None = None) -> dict[str, IdxFile]:
    train_sha = train_sha or (None, None)
    test_sha = test_sha or (None, None)
    return {
        "train_images": IdxFile("train-images-idx3-ubyte", (60000, 28, 28), train_sha[0]),
        "train_labels": IdxFile("train-labels-idx1-ubyte", (60000,), train_sha[1]),
        "test_images": IdxFile("t10k-images-idx3-ubyte", (10000, 28, 28), test_sha[0]),
        "test_labels": IdxFile("t10k-labels-idx1-ubyte", (10000,), test_sha[1]),
    }


FASHION_MNIST = IdxDataset(
    name="fashion-mnist",
    class_names=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),  # fmt: skip
    mean=(0.2860,),
    std=(0.3530,),
    flip_ok=True,
    **_files(
        train_sha=(
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        test_sha=(
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    ),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
)

# No checksums are pinned for mnist (none were available to verify against), so its files are
# checked for structure only, and it is never downloaded: an unverified download is not worth it.
MNIST = IdxDataset(
    name="mnist",
    class_names=tuple(str(d) for d in range(10)),
    mean=(0.1307,),
    std=(0.3081,),
    flip_ok=False,  # a mirrored digit is a different (or no) digit
    **_files(),
)


def _split_data(
    dataset: IdxDataset, split: str, images: np.ndarray, labels: np.ndarray, request: SourceRequest, shown_as: str
) -> ImageData:
    if labels.size and int(labels.max()) >= len(dataset.class_names):
        raise DataError(f"{shown_as}: label {int(labels.max())} is out of range 0..{len(dataset.class_names) - 1}")
    pixels = torch.from_numpy(images).unsqueeze(1)
    if request.image_size is not None:
        pixels = resize_images(pixels, request.image_size)
    return ImageData(
        images=pixels,
        labels=torch.from_numpy(labels).to(torch.int64),
        ids=[f"{dataset.name}/{split}/{i:05d}" for i in range(len(labels))],
        class_names=list(dataset.class_names),
        captions=None,
        # Black background: any pixel brighter than the threshold belongs to the object.
        masks=(pixels > request.mask_threshold).to(torch.uint8),
    )


def load_idx_dataset(dataset: IdxDataset, request: SourceRequest) -> DatasetSplits:
    """Locate, verify and parse the four files, then carve the validation split."""
    paths = locate_files(
        dataset.name, dataset.files, root=request.root, system_dirs=dataset.system_dirs, mirrors=dataset.mirrors
    )
    arrays = {spec.name: load_idx(paths[spec.name], spec) for spec in dataset.files}
    full_train = _split_data(
        dataset,
        "train",
        arrays[dataset.train_images.name],
        arrays[dataset.train_labels.name],
        request,
        str(paths[dataset.train_labels.name]),
    )
    test = _split_data(
        dataset,
        "test",
        arrays[dataset.test_images.name],
        arrays[dataset.test_labels.name],
        request,
        str(paths[dataset.test_labels.name]),
    )
    train, val = carve_validation(full_train, request.val_fraction, request.seed)
    return DatasetSplits(
        name=dataset.name,
        train=train,
        val=val,
        test=test,
        class_names=list(dataset.class_names),
        mean=dataset.mean,
        std=dataset.std,
        flip_ok=dataset.flip_ok,
    )


@register_source("fashion-mnist")
def load_fashion_mnist(request: SourceRequest) -> DatasetSplits:
    return load_idx_dataset(FASHION_MNIST, request)


@register_source("mnist")
def load_mnist(request: SourceRequest) -> DatasetSplits:
    return load_idx_dataset(MNIST, request)
