"""Reading IDX files (the MNIST family's format) and proving they are the files we expect.

The checksum is taken over the *decompressed* bytes so that a ``.gz`` and an unpacked copy of
the same data verify against the same value.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

_UBYTE = 0x08  # IDX type code for unsigned bytes, the only type the MNIST family uses
# Compression is recognised by content, not by name, so a temp download or a renamed
# file is read correctly; IDX data itself always starts with two zero bytes.
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class IdxFile:
    """One expected IDX file: its name without ``.gz``, its array shape and optional checksum."""

    name: str
    shape: tuple[int, ...]
    sha256: str | None = None

    @property
    def size(self) -> int:
        """Decompressed size in bytes: 4-byte magic, 4 bytes per dim, then one byte per value."""
        return 4 + 4 * len(self.shape) + int(np.prod(self.shape))

    def file_names(self) -> tuple[str, str]:
        """Accepted on-disk names, preferred first (the unpacked file needs no decompression)."""
        return self.name, self.name + ".gz"


def read_content(path: Path, spec: IdxFile, shown_as: str | None = None) -> bytes:
    """Return the decompressed bytes of ``path`` after checking their size and checksum."""
    shown = shown_as or str(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{shown}: cannot read ({error.strerror or error})") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            content = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{shown}: corrupt or truncated gzip file ({error})") from None
    else:
        content = raw
    if len(content) != spec.size:
        raise DataError(
            f"{shown}: truncated or wrong file: {len(content)} bytes after decompression, expected {spec.size}"
        )
    if spec.sha256 is not None:
        digest = hashlib.sha256(content).hexdigest()
        if digest != spec.sha256:
            raise DataError(f"{shown}: checksum mismatch (sha256 {digest}, expected {spec.sha256}); the file is corrupt")
    return content


def parse_idx(content: bytes, spec: IdxFile, shown_as: str) -> np.ndarray:
    """Decode verified IDX bytes into a writable uint8 array of ``spec.shape``."""
    if len(content) < 4 or content[0] != 0 or content[1] != 0:
        raise DataError(f"{shown_as}: not an IDX file (bad magic number)")
    type_code, ndim = content[2], content[3]
    if type_code != _UBYTE:
        raise DataError(f"{shown_as}: IDX type code 0x{type_code:02x}, expected 0x{_UBYTE:02x} (unsigned bytes)")
    if ndim != len(spec.shape):
        raise DataError(f"{shown_as}: IDX file has {ndim} dimensions, expected {len(spec.shape)}")
    header_end = 4 + 4 * ndim
    if len(content) < header_end:
        raise DataError(f"{shown_as}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(content, dtype=">u4", count=ndim, offset=4))
    if dims != spec.shape:
        raise DataError(f"{shown_as}: IDX dimensions {dims}, expected {spec.shape}")
    values = np.frombuffer(content, dtype=np.uint8, offset=header_end)
    if values.size != int(np.prod(dims)):
        raise DataError(f"{shown_as}: IDX body has {values.size} values, the header promises {int(np.prod(dims))}")
    return values.reshape(dims).copy()


def load_idx(path: Path, spec: IdxFile) -> np.ndarray:
    """Verify then parse one IDX file."""
    return parse_idx(read_content(path, spec), spec, str(path))
