"""Byte-level file access through fsspec, so run directories may be local paths or s3:// / gs:// URIs.

Writes go to a temporary name first and are renamed into place, so a killed process never leaves a
half-written artifact under the final name. A write that fails (full disk, read-only or vanished
directory, no permission) removes its temporary file, leaves the previous file as it was, and raises
:class:`~raydd.errors.StorageError` naming the file; a safetensors file that is cut short or foreign
raises :class:`~raydd.errors.ArtifactError`.
"""

from __future__ import annotations

import errno
import json
import os
import uuid
from contextlib import contextmanager

import fsspec

from raydd.errors import ArtifactError, StorageError

# errno -> (what is wrong, what to do): the causes a user can fix; others keep the system's words.
_CAUSES = {
    errno.ENOSPC: ("the disk is full", "free space"),
    errno.EDQUOT: ("the disk quota is used up", "free space"),
    errno.EROFS: ("the file system is read-only", "make it writable or copy the run directory somewhere writable"),
    errno.EACCES: ("permission denied", "make the directory writable"),
    errno.EPERM: ("permission denied", "make the directory writable"),
    errno.ENOENT: ("its directory is gone (moved or deleted while raydd ran)", "put the directory back"),
}


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


def write_failure(path: str, exc: OSError) -> StorageError:
    """The user's view of a failed write: the file, the cause in words, and what to do."""
    problem, action = _CAUSES.get(exc.errno, (exc.strerror or str(exc), "fix that"))
    return StorageError(path, problem, action)


@contextmanager
def _writing(path: str):
    """An OSError inside becomes a StorageError naming ``path`` (a user's problem, not a bug)."""
    try:
        yield
    except OSError as exc:
        raise write_failure(path, exc) from None


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
    with _writing(path):
        fs.makedirs(p, exist_ok=True)


def check_writable(directory: str) -> None:
    """Fail before long work whose result could not be stored: create and remove a probe file.

    Object stores are not probed (a write there costs a request and cannot be refused this way)."""
    fs, p = _fs(directory)
    if not _is_local_fs(fs):
        return
    probe = os.path.join(p, f".raydd-probe-{uuid.uuid4().hex[:8]}")
    with _writing(directory):
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        os.remove(probe)


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write to a temporary name and rename it into place; on failure the temporary file goes and
    the previous file under ``path`` stays as it was."""
    fs, p = _fs(path)
    parent = p.rsplit("/", 1)[0] if "/" in p else ""
    tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
    with _writing(path):
        if parent:
            fs.makedirs(parent, exist_ok=True)
        try:
            _write_synced(fs, tmp, data)
            fs.mv(tmp, p)
        except BaseException:
            _discard(fs, tmp)
            raise


def _write_synced(fs, path: str, data: bytes) -> None:
    """Write and, locally, fsync: a full disk can surface only at fsync, and must not go unnoticed."""
    with fs.open(path, "wb") as f:
        f.write(data)
        if hasattr(f, "flush"):
            f.flush()
        fileno = getattr(f, "fileno", None)
        if fileno is not None and _is_local_fs(fs):
            try:
                os.fsync(fileno())
            except (ValueError, OSError) as exc:  # no descriptor, or a file system without fsync
                if isinstance(exc, OSError) and exc.errno not in (errno.EINVAL, errno.ENOTSUP):
                    raise


def _discard(fs, path: str) -> None:
    """Remove a temporary file if it is there; a failure here must not hide the first one."""
    try:
        if fs.exists(path):
            fs.rm(path)
    except OSError:
        pass


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def append_text(path: str, text: str) -> None:
    """Append (local files); for object stores, rewrite the object with the new tail.

    A local append that fails part-way is cut back to the old length, so no torn line is left."""
    fs, p = _fs(path)
    if not _is_local_fs(fs):
        old = fs.cat_file(p).decode() if fs.exists(p) else ""
        write_text_atomic(path, old + text)
        return
    with _writing(path):
        size = os.path.getsize(p) if os.path.exists(p) else 0
        try:
            with open(p, "a") as f:
                f.write(text)
        except OSError:
            _truncate(p, size)
            raise


def _truncate(path: str, size: int) -> None:
    try:
        os.truncate(path, size)
    except OSError:
        pass


def remove(path: str) -> None:
    fs, p = _fs(path)
    with _writing(path):
        if fs.exists(p):
            fs.rm(p, recursive=True)


def read_safetensors(path: str, what: str, remedy: str):
    """Tensors and header metadata of a safetensors file; cut short or foreign -> ArtifactError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    blob = read_bytes(path)
    try:
        return load(blob), safetensors_metadata(blob)
    except (SafetensorError, ValueError) as exc:
        raise ArtifactError(path, what, str(exc), remedy) from None


def safetensors_metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (raises ValueError when the header is not JSON)."""
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}
