"""Small real-looking datasets built in memory or on disk for fast tests."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from raydd.config import DistillConfig
from raydd.data import DatasetSplits, ImageData
from raydd.data.mnist_family import FASHION_MNIST
from raydd.distill_loop import LoopBackend
from raydd.pipeline.sharding import rows_only

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = [spec.name + ".gz" for spec in FASHION_MNIST.files]
STRICT = "RAYDD_STRICT_TESTS"  # set by .ci/run, whose setup installs everything the tests read


def installed(present: bool, what: str) -> pytest.MarkDecorator:
    """Skip where ``what`` is missing on this machine; under ``RAYDD_STRICT_TESTS=1`` a missing one fails
    the collection instead, so a broken setup cannot pass as a run with a few skips."""
    if not present and os.environ.get(STRICT) == "1":
        raise RuntimeError(f"{what} is not installed, and {STRICT}=1 (bash setup.sh installs it)")
    return pytest.mark.skipif(not present, reason=f"{what} is not installed (bash setup.sh installs it)")


def debian_fmnist_installed() -> pytest.MarkDecorator:
    return installed(all((DEBIAN_FMNIST / name).is_file() for name in FMNIST_FILES),
                     f"Debian's dataset-fashion-mnist ({DEBIAN_FMNIST})")


def isolate_data_env(mp: pytest.MonkeyPatch, cache: Path) -> None:
    """No user cache, $RAYDD_DATA or testbed override of the machine running the tests may leak in."""
    from raydd.data import cluttered

    for name in ("RAYDD_DATA", cluttered.ENV_CAPTION_ACCURACY, cluttered.ENV_LIMIT):
        mp.delenv(name, raising=False)
    mp.setenv("XDG_CACHE_HOME", str(cache))


def blob_images(n_per_class: int, num_classes: int, size: int, channels: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c is a bright square at a class-specific place over noise: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for c in range(num_classes):
        x = torch.randint(0, 60, (n_per_class, channels, size, size), generator=g)
        row, col = divmod(c, 2)
        half = size // 2
        x[:, :, row * half // 2 + 2 : row * half // 2 + 2 + half // 2, col * half : col * half + half // 2] = 230
        images.append(x.to(torch.uint8))
        labels.append(torch.full((n_per_class,), c, dtype=torch.int64))
    return torch.cat(images), torch.cat(labels)


def method_configs(method: str, **fields) -> tuple[DistillConfig, object]:
    """A distiller's shared ``DistillConfig`` and its method's own section, each from the ``fields`` it has
    (``outer_loop`` goes to DC/DSA's ``gradmatch``, ``real_chunk`` to DM's ``dm``)."""
    from raydd.methods import method_class

    section_type = method_class(method).section_type
    own = {f.name for f in dataclasses.fields(section_type)} if section_type else set()
    section = section_type(**{k: v for k, v in fields.items() if k in own}) if section_type else None
    shared = {k: v for k, v in fields.items() if k not in own}
    return DistillConfig(method=method, **shared), section


def tiny_splits(num_classes: int = 3, n_per_class: int = 12, size: int = 28, channels: int = 1) -> DatasetSplits:
    names = [f"class{c}" for c in range(num_classes)]

    def part(split: str, n: int, seed: int) -> ImageData:
        x, y = blob_images(n, num_classes, size, channels, seed)
        masks = (x[:, :1] > 100).to(torch.uint8)
        return ImageData(x, y, [f"tiny/{split}/{i}" for i in range(len(y))], names, masks=masks)

    return DatasetSplits("tiny", part("train", n_per_class, 0), part("val", 2, 1), part("test", 4, 2), names,
                         mean=(0.3,) * channels, std=(0.3,) * channels, flip_ok=True)


def write_imagefolder(root: Path, *, num_classes: int = 3, n_train: int = 8, n_test: int = 3, size: int = 16) -> Path:
    """An imagefolder dataset (RGB PNGs, string labels, captions) on disk."""
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        folder = root / split
        folder.mkdir(parents=True)
        x, y = blob_images(n, num_classes, size, 3, seed)
        rows = []
        for i in range(len(y)):
            name = f"img{i:03d}.png"
            Image.fromarray(np.ascontiguousarray(x[i].permute(1, 2, 0).numpy())).save(folder / name)
            rows.append({"file_name": name, "label": f"kind{int(y[i])}", "caption": f"a picture of kind {int(y[i])}"})
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def step_shards_together(whole, shards, iterations: int) -> torch.Tensor:
    """Step a whole-run distiller and its class shards in lockstep; the shards' own rows combined."""
    for it in range(iterations):
        whole.step(it)
        for shard in shards:
            shard.step(it)
    return _combined(whole, shards)


def _combined(whole, shards) -> torch.Tensor:
    """The whole run's image tensor with each shard's own rows put in its place."""
    combined = whole.images.detach().clone()
    for shard in shards:
        combined[shard.own_rows] = shard.images.detach()[shard.own_rows]
    return combined


class Killed(Exception):
    """Raised by ``KillAt`` to stand for a process killed mid-run."""


class KillAt(LoopBackend):
    """The in-process loop backend, killed after ``iteration`` (its bookkeeping done, as a real kill
    after a finished iteration would leave it)."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_step(self, run, done: int) -> None:
        if done == self.iteration:
            raise Killed


class ThreadedExchange:
    """``share_rows`` hooks for class shards stepped in threads of one process: a stand-in for the
    all-reduce across Ray Train workers. Each shard contributes its rows; all receive the sum, in rank order."""

    def __init__(self, shards: int) -> None:
        self.barrier = threading.Barrier(shards, timeout=120)
        self.parts: list[torch.Tensor | None] = [None] * shards

    def hook(self, rank: int):
        def share_rows(tensor: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            self.parts[rank] = rows_only(tensor, rows)
            self.barrier.wait()
            total = self.parts[0].clone()
            for part in self.parts[1:]:
                total += part
            self.barrier.wait()  # everyone has read the parts before the next call replaces them
            return total

        return share_rows


def step_shards_in_threads(whole, shards, exchange: ThreadedExchange, iterations: int) -> torch.Tensor:
    """As ``step_shards_together`` for methods whose shards exchange rows every step (DC/DSA): each shard
    runs in its own thread, meeting the others in ``exchange``.

    Seeded network construction reseeds torch's process-wide generator, which threads share (Ray
    workers are processes and do not): the shards build their networks one at a time.
    """
    building = threading.Lock()

    def one_at_a_time(build):
        def locked(*args):
            with building:
                return build(*args)
        return locked

    for shard in shards:
        shard.build_network = one_at_a_time(shard.build_network)

    def run(shard) -> None:
        try:
            for it in range(iterations):
                shard.step(it)
        except BaseException:
            exchange.barrier.abort()  # do not leave the other shards waiting
            raise

    for it in range(iterations):
        whole.step(it)
    with ThreadPoolExecutor(len(shards)) as pool:
        for future in [pool.submit(run, shard) for shard in shards]:
            future.result()
    return _combined(whole, shards)
