"""The ``webdataset`` source: split folders of ``.tar`` shards in the img2dataset layout.

Layout (local path or fsspec URI)::

    <root>/classes.json                 optional, as for an imagefolder: fixes class names and order
    <root>/train/00000.tar ...          shards; any other file in the folder is ignored
    <root>/validation/*.tar             optional: used as the validation split instead of carving one
    <root>/test/*.tar

A sample is the tar members sharing a key (the member name up to the first dot of its base name):
``<key>.jpg`` (or ``.jpeg``, ``.png``, ``.webp``), ``<key>.json`` holding ``{"label": ...}`` (a class name
or a class index, exactly as an imagefolder's ``label``), optional ``<key>.txt`` (the caption, UTF-8)
and optional ``<key>.mask.png`` (same size as the image, 0 = background). A sample's id, and how errors
name it, is ``<split>/<shard>.tar:<key>``. Rows are ordered by shard, then key.

This module reads shards in-process with ``tarfile`` (``load_dataset``, ``--no-ray``); ``raydd preprocess``
reads them with Ray Data tasks (``raydd.pipeline.preprocess.ingest``) and shares ``parse_sample``.
"""

from __future__ import annotations

import gzip
import json
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import DataError
from .base import DatasetSplits
from .imagefolder.loader import assemble_splits, listed_classes, open_root, split_folders
from .imagefolder.metadata import METADATA_FILE, _label
from .imagefolder.storage import DatasetRoot
from .registry import SourceRequest, register_source

SOURCE_NAME = "webdataset"
SHARD_EXTENSION = ".tar"
IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")
MASK_SUFFIX = "mask.png"
LABEL_SUFFIX = "json"
CAPTION_SUFFIX = "txt"
_MEMBER = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # key = up to the first dot of the base name


def split_member(name: str) -> tuple[str, str] | None:
    """``"000012.mask.png"`` -> ``("000012", "mask.png")``; None for a name without an extension."""
    match = _MEMBER.match(name)
    return None if match is None else (match.group(1), match.group(2))


@dataclass(frozen=True)
class SampleRow:
    """One sample's metadata, shaped like an imagefolder metadata row so the same checks apply."""

    MASK_FIELD = f"mask (<key>.{MASK_SUFFIX})"

    split: str  # split folder: train, validation or test
    shard: str  # relative to the root: train/00000.tar
    key: str
    label: str | int
    has_caption: bool
    caption: str | None
    image_suffix: str
    has_mask: bool

    @property
    def id(self) -> str:
        return f"{self.shard}:{self.key}"

    @property
    def where(self) -> str:
        return self.id

    @property
    def image_path(self) -> str:
        return f"{self.shard}:{self.key}.{self.image_suffix}"

    @property
    def mask_path(self) -> str | None:
        return f"{self.shard}:{self.key}.{MASK_SUFFIX}" if self.has_mask else None


def sample_id(shard: str, key: str) -> str:
    return f"{shard}:{key}"


def parse_sample(split: str, shard: str, key: str, suffixes: dict[str, bytes | None]) -> SampleRow:
    """The metadata of one sample from its members' bytes (label and caption parsed, images not read).

    ``suffixes`` maps a member's extension (``jpg``, ``json``, ``mask.png``...) to its bytes; a
    problem is a DataError naming ``<shard>:<key>`` and the member.
    """
    where = sample_id(shard, key)
    present = [s for s in IMAGE_SUFFIXES if suffixes.get(s) is not None]
    if not present:
        raise DataError(f"{where}: no image (expected {key}.jpg or {key}.png in the shard)")
    if len(present) > 1:
        raise DataError(f"{where}: two images ({key}.{present[0]} and {key}.{present[1]}); keep one per sample")
    raw = suffixes.get(LABEL_SUFFIX)
    if raw is None:
        raise DataError(f"{where}: no {key}.{LABEL_SUFFIX} (it holds the sample's label: {{\"label\": ...}})")
    member = f"{where}.{LABEL_SUFFIX}"
    try:
        record = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{member}: not valid JSON ({error})") from None
    if not isinstance(record, dict):
        raise DataError(f"{member}: expected a JSON object with a 'label', got {type(record).__name__}")
    if "label" not in record:
        raise DataError(f"{member}: no 'label' (expected {{\"label\": <class name or index>}})")
    label = _label(record["label"], member)
    text = suffixes.get(CAPTION_SUFFIX)
    caption = None
    if text is not None:
        try:
            caption = text.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise DataError(f"{where}.{CAPTION_SUFFIX}: caption is not UTF-8 text ({error.reason} at byte "
                            f"{error.start})") from None
    return SampleRow(split, shard, key, label, text is not None, caption, present[0],
                     suffixes.get(MASK_SUFFIX) is not None)


def shard_paths(root: DatasetRoot, split: str) -> list[str]:
    """The split's shards relative to the root (``train/00000.tar``), sorted; none is an error."""
    if not root.is_dir(split):
        raise DataError(f"missing {split}/ folder (expected {split}/*{SHARD_EXTENSION} shards)")
    try:
        names = root.fs.ls(f"{root.path}/{split}", detail=False)
    except OSError as error:
        raise DataError(f"{split}/: cannot list the folder ({error})") from None
    shards = sorted(f"{split}/{n.rstrip('/').rsplit('/', 1)[-1]}" for n in names if n.endswith(SHARD_EXTENSION))
    if not shards:
        raise DataError(f"{split}/: no {SHARD_EXTENSION} shards")
    return shards


def is_webdataset_dir(url: str) -> bool:
    """A folder whose ``train/`` holds ``.tar`` shards and no ``metadata.jsonl`` (cheap; failures say no)."""
    try:
        root = DatasetRoot(url)
        if not root.is_dir("train") or root.is_file(f"train/{METADATA_FILE}"):
            return False
        return any(n.endswith(SHARD_EXTENSION) for n in root.fs.ls(f"{root.path}/train", detail=False))
    except (DataError, OSError, ValueError):
        return False


class _TailedStream:
    """A binary stream that remembers how it began and ended, so an archive's end can be checked.

    tarfile reading a stream takes a header cut short by the end of the file for the end of the archive,
    so a truncated shard would silently lose its last samples; a whole tar ends in zero blocks.
    """

    def __init__(self, raw) -> None:
        self.raw = raw
        self.head = b""
        self.tail = b""
        self.length = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if len(self.head) < _MAGIC_BYTES:
            self.head += data[: _MAGIC_BYTES - len(self.head)]
        self.tail = (self.tail + data)[-_END_BLOCK:]
        self.length += len(data)
        return data

    def check_end(self, shard: str) -> None:
        """A DataError unless the stream, read to its end, closes like a whole tar (compressed: its codec checks)."""
        while self.read(1 << 20):
            pass
        if self.head.startswith(_COMPRESSED):
            return
        if self.length % _END_BLOCK or self.tail != bytes(_END_BLOCK):
            raise DataError(f"{shard}: the tar file is truncated (it ends after {self.length} bytes without the "
                            "end-of-archive block; the samples after the cut would be lost)")


_END_BLOCK = 512  # tar's block; a whole archive ends in (at least) one block of zeros
_MAGIC_BYTES = 6
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz


def iter_shard(handle, shard: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {suffix: bytes}) of each sample of an open shard, in tar order, streaming; ``shard`` names it in errors.

    Used in this process and by the Ray Data datasource of ``raydd preprocess``, so both read a shard alike.
    """
    current: tuple[str, dict[str, bytes]] | None = None
    seen: set[str] = set()
    stream = _TailedStream(handle)
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for info in tar:
                parts = split_member(info.name) if info.isreg() else None
                if parts is None:
                    continue
                key, suffix = parts
                data = tar.extractfile(info).read()
                if current is None or key != current[0]:
                    if current is not None:
                        seen.add(current[0])
                        yield current
                    if key in seen:
                        raise DataError(f"{shard}:{key}: the sample's files are not next to each other in the shard "
                                        "(write shards with each key's files together, e.g. tar --sort=name)")
                    current = (key, {})
                if suffix in current[1]:
                    raise DataError(f"{shard}:{key}.{suffix}: in the shard twice")
                current[1][suffix] = data
        stream.check_end(shard)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DataError(f"{shard}: not a readable tar file ({error})") from None
    if current is not None:
        yield current


def read_shard(root: DatasetRoot, shard: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {suffix: bytes}) of each sample of one shard of ``root``, in tar order, streaming."""
    try:
        with root.fs.open(f"{root.path}/{shard}", "rb") as handle:
            yield from iter_shard(handle, shard)
    except FileNotFoundError:
        raise DataError(f"{shard}: missing shard") from None


@register_source(SOURCE_NAME)
def load_webdataset(request: SourceRequest) -> DatasetSplits:
    """Every shard read and decoded in this process (the Ray path is ``raydd preprocess``)."""
    root = open_root(request, SOURCE_NAME)
    try:
        rows: dict[str, list[SampleRow]] = {}
        members: dict[str, dict[str, bytes]] = {}
        for split in split_folders(root):
            rows[split] = []
            for shard in shard_paths(root, split):
                for key, suffixes in sorted(read_shard(root, shard), key=lambda item: item[0]):
                    row = parse_sample(split, shard, key, suffixes)
                    rows[split].append(row)
                    members[row.id] = suffixes
            if not rows[split]:
                raise DataError(f"{split}/: the shards hold no samples; each split needs at least one image")

        def fetch(row: SampleRow) -> tuple[bytes, bytes | None]:
            suffixes = members[row.id]
            return suffixes[row.image_suffix], suffixes.get(MASK_SUFFIX)

        return assemble_splits(f"{SOURCE_NAME}:{root.display}", rows, listed_classes(root), request, fetch)
    except DataError as error:
        raise DataError(f"{SOURCE_NAME} {root.display}: {error}") from None
