"""Byte-level file access through fsspec, so run directories may be local paths or s3:// / gs:// URIs.

Writes go to a temporary name first and are renamed into place, so a killed process never leaves a
half-written artifact under the final name.
"""

from __future__ import annotations

import os
import uuid

import fsspec


def _fs(path: str):
    return fsspec.core.url_to_fs(path)


def _is_local_fs(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URI (``s3://``, ``gs://``, ``file://`` ...) rather than a plain path.

    A URI means the same on every machine; a plain path is relative to this process's directory.
    """
    return "://" in str(path)


def absolute(path: str) -> str:
    """A location another process (a Ray worker, a trial actor) resolves the same: URIs as they are."""
    return path if is_remote(path) else os.path.abspath(path)


def protocol(path: str) -> str:
    """The URI scheme (``s3``, ``gs``), or ``file`` for a plain path."""
    return str(path).split("://", 1)[0].lower() if is_remote(path) else "file"


def is_local(path: str) -> bool:
    """Whether the path is on this machine's file system (locks and appends work there)."""
    return _is_local_fs(_fs(path)[0])


def read_bytes(path: str) -> bytes:
    fs, p = _fs(path)
    with fs.open(p, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode()


def exists(path: str) -> bool:
    fs, p = _fs(path)
    return fs.exists(p)


def makedirs(path: str) -> None:
    fs, p = _fs(path)
    fs.makedirs(p, exist_ok=True)


def write_bytes_atomic(path: str, data: bytes) -> None:
    fs, p = _fs(path)
    parent = p.rsplit("/", 1)[0] if "/" in p else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "wb") as f:
        f.write(data)
        if hasattr(f, "flush"):
            f.flush()
        fileno = getattr(f, "fileno", None)
        if fileno is not None and _is_local_fs(fs):
            try:
                os.fsync(fileno())
            except (OSError, ValueError):
                pass
    fs.mv(tmp, p)


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def append_text(path: str, text: str) -> None:
    """Append (local files); for object stores, rewrite the object with the new tail."""
    fs, p = _fs(path)
    if _is_local_fs(fs):
        with fs.open(p, "a") as f:
            f.write(text)
        return
    old = fs.cat_file(p).decode() if fs.exists(p) else ""
    write_text_atomic(path, old + text)


def remove(path: str) -> None:
    fs, p = _fs(path)
    if fs.exists(p):
        fs.rm(p, recursive=True)
