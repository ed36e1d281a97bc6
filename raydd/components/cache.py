"""A disk cache from content hashes to arrays (caption embeddings, masks).

Layout: one directory per producer (an encoder or segmenter together with its weights), holding
append-only *shard* files. Every ``put`` writes a new shard under a unique name (temp file +
rename), so several Ray actors can fill the same cache at once without locks or lost updates;
when shards pile up, a writer merges them into one and deletes only the shards it merged.
Files are safetensors (``keys``: uint8 [n, 32] sha256 digests, ``values``: [n, ...]): no pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from ..data.locate import user_cache_dir

_SHARD_SUFFIX = ".safetensors"
_MERGE_AFTER = 64  # shards; beyond this, reading the cache costs more file opens than it should


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def array_key(array: np.ndarray) -> bytes:
    """Hash of an array's shape, dtype and bytes, so equal pixels give equal keys."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.digest()


def default_cache_root(kind: str) -> Path:
    """``$XDG_CACHE_HOME/raydd/<kind>`` (``kind`` = "text-emb" or "masks"), read at call time."""
    return user_cache_dir(kind)


def producer_dir(root: Path, producer_id: str) -> Path:
    """A readable, collision-free directory name for an id that may contain paths and colons."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", producer_id).strip("_")[:48]
    return Path(root) / f"{slug}-{hashlib.sha256(producer_id.encode()).hexdigest()[:12]}"


def _write_atomic(path: Path, write) -> None:
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


class ArrayCache:
    """Key -> array store for one producer; loads every shard on first use, then stays in memory."""

    def __init__(self, directory: Path, producer_id: str) -> None:
        self.directory = Path(directory)
        self.producer_id = producer_id
        self._entries: dict[bytes, np.ndarray] | None = None

    def _shards(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.suffix == _SHARD_SUFFIX and not p.name.startswith("."))

    def _load(self) -> dict[bytes, np.ndarray]:
        if self._entries is None:
            self._entries = {}
            for shard in self._shards():
                self._entries.update(self._read_shard(shard) or {})
        return self._entries

    @staticmethod
    def _read_shard(shard: Path) -> dict[bytes, np.ndarray] | None:
        try:
            tensors = load_file(str(shard))
        except FileNotFoundError:  # merged away by another writer between listing and reading
            return None
        keys, values = tensors["keys"], tensors["values"]
        return {bytes(k): values[i] for i, k in enumerate(keys)}

    def get_many(self, keys: Sequence[bytes]) -> list[np.ndarray | None]:
        entries = self._load()
        return [entries.get(key) for key in keys]

    def put_many(self, keys: Sequence[bytes], values: Sequence[np.ndarray]) -> None:
        """Store new entries; one shard per distinct (shape, dtype), since a shard is one array."""
        entries = self._load()
        groups: dict[tuple, list[int]] = {}
        for i, (key, value) in enumerate(zip(keys, values)):
            if key not in entries:
                groups.setdefault((value.shape, value.dtype.str), []).append(i)
        if not groups:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self._describe()
        for positions in groups.values():
            self._write_shard([keys[i] for i in positions], [values[i] for i in positions])
            for i in positions:
                entries[keys[i]] = values[i]
        if len(self._shards()) > _MERGE_AFTER:
            self._merge()

    def _write_shard(self, keys: Sequence[bytes], values: Sequence[np.ndarray], name: str | None = None) -> None:
        tensors = {
            "keys": np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), -1).copy(),
            "values": np.ascontiguousarray(np.stack(values)),
        }
        path = self.directory / (name or f"{uuid.uuid4().hex}{_SHARD_SUFFIX}")
        _write_atomic(path, lambda temp: save_file(tensors, str(temp)))

    def _merge(self) -> None:
        """Rewrite all shards as one file per (shape, dtype); delete only what was merged."""
        merged: dict[tuple, dict[bytes, np.ndarray]] = {}
        read: list[Path] = []
        for shard in self._shards():
            content = self._read_shard(shard)
            if content is None:
                continue
            read.append(shard)
            for key, value in content.items():
                merged.setdefault((value.shape, value.dtype.str), {})[key] = value
        for group in merged.values():
            self._write_shard(list(group), list(group.values()))
        for shard in read:
            shard.unlink(missing_ok=True)

    def _describe(self) -> None:
        """A small JSON naming the producer, for whoever looks inside the cache directory."""
        info = self.directory / "producer.json"
        if not info.exists():
            _write_atomic(info, lambda temp: temp.write_text(json.dumps({"producer": self.producer_id}) + "\n"))

    def __len__(self) -> int:
        return len(self._load())
