"""Finished evaluation models, kept while an evaluation runs so that a killed one resumes.

The paper's evaluation trains 5 networks for 1000 epochs each: on a CPU, over an hour per network for a
multi-formation set. Each model's training is independent and seeded by (run seed, architecture,
index), so a model finished before a kill need not be trained again. Each finished model writes one
small JSON file, stamped with a fingerprint of everything its accuracy depends on (training and test
tensors, the evaluation settings, its seed and index); a later evaluation takes a file only when the
fingerprint matches, and trains the rest. The caller removes the directory once the final result is
written, so a deliberate re-evaluation trains afresh.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch

from raydd.errors import RayddError, RunDirError
from raydd.storage import exists, read_text, write_text_atomic

if TYPE_CHECKING:
    from raydd.evaluate import EvalJob


def tensor_digest(*tensors: torch.Tensor | None) -> str:
    """A digest of the tensors' shapes, dtypes and bytes (None counts as absent)."""
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def job_name(job: "EvalJob") -> str:
    return f"{job.model}-{'fused' if job.fused else 'image'}-{job.index}.json"


def job_fingerprint(job: "EvalJob", data_digest: str) -> str:
    settings = [asdict(job.cfg), job.model, job.num_classes, job.seed, job.index, job.flip_ok, job.epochs,
                asdict(job.fusion) if job.fused else None]
    return hashlib.sha256((data_digest + json.dumps(settings, sort_keys=True, default=str)).encode()).hexdigest()[:32]


def finished_and_pending(jobs: list["EvalJob"], record_dir: str) -> tuple[list[dict[str, Any]], list["EvalJob"]]:
    """Results already kept for these jobs, and the jobs still to train (each told where to keep its result)."""
    import dataclasses

    if not jobs:
        return [], []
    first = jobs[0]
    digest = tensor_digest(first.train_images, first.train_labels, first.test_images, first.test_labels,
                           first.train_captions, first.test_captions)
    finished, pending = [], []
    for job in jobs:
        path = f"{record_dir}/{job_name(job)}"
        fingerprint = job_fingerprint(job, digest)
        kept = _read(path)
        if kept is not None and kept.get("fingerprint") == fingerprint:
            finished.append(kept["result"])
        else:
            pending.append(dataclasses.replace(job, record_to=path, fingerprint=fingerprint))
    return finished, pending


def keep(job: "EvalJob", result: dict[str, Any]) -> None:
    """Called where the model trained (a Ray task or this process) as soon as it is tested.

    Keeping is a convenience for a later resume: a record that cannot be written (a full disk, a run
    directory on a disk this node does not see) leaves the model's result itself untouched.
    """
    if not job.record_to:
        return
    try:
        write_text_atomic(job.record_to, json.dumps({"fingerprint": job.fingerprint, "result": result}))
    except (OSError, RayddError):
        pass


def _read(path: str) -> dict[str, Any] | None:
    """A kept result, or None when absent or unreadable (a cut file is trained again, not an error)."""
    if not exists(path):
        return None
    try:
        data = json.loads(read_text(path))
    except (ValueError, UnicodeDecodeError, RunDirError):
        return None
    ok = isinstance(data, dict) and isinstance(data.get("result"), dict) and "accuracy" in data["result"]
    return data if ok else None
