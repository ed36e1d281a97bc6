"""The output directory: what may be replaced, where Ray writes, and whether every row arrived."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raydd.artifacts import REJECTED as REJECTED_FILE
from raydd.data import parquet as schema
from raydd.errors import ConfigError
from raydd.pipeline.cluster import ClusterError


@dataclass(frozen=True)
class Output:
    url: str
    location: schema.Location = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> Output:
        return cls(url, schema.Location.parse(url))

    @property
    def is_local(self) -> bool:
        protocol = self.location.fs.protocol
        return "file" in (protocol if isinstance(protocol, tuple) else (protocol,))

    def entries(self) -> list[str]:
        fs, path = self.location.fs, self.location.path
        if not fs.exists(path):
            return []
        if not fs.isdir(path):
            raise ConfigError(f"output {self.url} exists and is not a directory")
        return [entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False)]

    def check_writable(self, overwrite: bool) -> None:
        """Refuse a non-empty directory unless asked, and even then anything raydd did not write."""
        entries = self.entries()
        if entries and not overwrite:
            raise ConfigError(f"output {self.url} is not empty; choose another directory or pass "
                              "overwrite=True (--overwrite) to replace it")
        foreign = [e for e in entries if not (e.startswith("split=") or e.startswith(schema.MANIFEST_FILE)
                                              or e.startswith(REJECTED_FILE))]
        if foreign:
            raise ConfigError(f"refusing to overwrite {self.url}: {foreign[0]!r} was not written by raydd preprocess")

    def clear(self) -> None:
        """Manifest first: if the deletion is interrupted, what is left is visibly unfinished."""
        fs = self.location.fs
        for name in sorted(self.entries(), key=lambda e: not e.startswith(schema.MANIFEST_FILE)):
            fs.rm(self.location.join(name), recursive=True)
        fs.makedirs(self.location.path, exist_ok=True)

    def ray_target(self) -> tuple[str, Any]:
        """(path, filesystem) for ``write_parquet``: any fsspec filesystem, through pyarrow's adapter."""
        if self.is_local:
            return self.location.path, None
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        return self.location.path, PyFileSystem(FSSpecHandler(self.location.fs))


def check_written(out: Output, counts: dict[str, dict[str, Any]]) -> None:
    """Rows on disk per split and class must be the rows sent: catches a local path on a multi-node
    cluster (each node wrote to its own disk) and anything else that lost rows."""
    for split, expected in counts.items():
        found = schema.class_counts(out.url, split)
        wanted = {k: n for k, n in enumerate(expected["per_class"]) if n}
        if found != wanted:
            raise ClusterError(
                f"{out.url}: split {split} has {sum(found.values())} rows on disk where {expected['total']} were "
                "written; on a multi-node cluster write to storage every node shares (s3://, gs://, NFS)"
            )


def embedding_dim(out: Output, counts: dict[str, dict[str, Any]]) -> int:
    split = next(s for s, c in counts.items() if c["total"])
    return int(schema.file_schema(out.url, split).field("caption_emb").type.shape[0])
