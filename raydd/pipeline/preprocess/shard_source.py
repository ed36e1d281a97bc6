"""WebDataset shards as a Ray Data datasource: read tasks stream their shards into sample rows.

Ray Data lists, partitions and opens the shards (local paths or any fsspec/pyarrow filesystem) as for
``ray.data.read_webdataset``; each shard is then read by ``raydd.data.webdataset.iter_shard``, the
reader ``load_dataset`` uses in one process. So a damaged or truncated shard is named the same way on
both paths, and no shard is silently read short.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
from ray.data.datasource import FileBasedDatasource

from raydd.data.webdataset import iter_shard

ROWS_PER_BLOCK = 256  # samples per block handed on: small enough to stream, large enough to batch


class ShardSamples(FileBasedDatasource):
    """One block of samples per ``ROWS_PER_BLOCK`` samples of each shard, built by ``to_samples``."""

    def __init__(self, paths: list[str], to_samples: Callable[[str, list[tuple[str, dict[str, bytes]]]], pa.Table],
                 **kwargs: Any) -> None:
        super().__init__(paths, **kwargs)
        self._to_samples = to_samples

    def _read_stream(self, f, path: str) -> Iterator[pa.Table]:
        shard = shard_name(path)
        pending: list[tuple[str, dict[str, bytes]]] = []
        for sample in iter_shard(f, shard):
            pending.append(sample)
            if len(pending) == ROWS_PER_BLOCK:
                yield self._to_samples(shard, pending)
                pending = []
        if pending:
            yield self._to_samples(shard, pending)


def shard_name(path: str) -> str:
    """``…/root/train/00000.tar`` -> ``train/00000.tar``: the split folder and the shard, as the root lists it."""
    return "/".join(path.replace("\\", "/").rsplit("/", 2)[-2:])
