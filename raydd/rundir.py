"""The run directory: resolved config, membership record, metrics log, atomic checkpoints.

Layout (DESIGN §3, names in ``raydd.artifacts``): config.yaml, members.json, metrics.jsonl,
checkpoint/state.safetensors, synthetic.safetensors + metadata.json, eval.json, synthetic.png.
Paths may be fsspec URIs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save as save_safetensors

import raydd
from raydd.artifacts import CHECKPOINT, CHECKPOINT_DIR, CONFIG, MEMBERS, METRICS, SNAPSHOTS, parse_object
from raydd.config import Config, config_from_dict, dump_yaml, merge, named_protocol, protocol_layer, stored_layer
from raydd.errors import ArtifactError, RunDirError
from raydd.storage import (append_text, exists, makedirs, read_bytes, read_safetensors, read_text, remove,
                           safetensors_metadata, write_bytes_atomic, write_text_atomic)


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(raydd.__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class RunDir:
    def __init__(self, path: str) -> None:
        self.path = str(path).rstrip("/")

    def file(self, name: str) -> str:
        return f"{self.path}/{name}"

    def has(self, name: str) -> bool:
        return exists(self.file(name))

    # -- config ---------------------------------------------------------------------------------
    def write_config(self, cfg: Config) -> None:
        data = {"raydd_version": raydd.__version__, "git_sha": git_sha(), **cfg.to_dict()}
        write_text_atomic(self.file(CONFIG), dump_yaml(data))

    def read_config(self, *layers: dict[str, Any]) -> Config:
        """The run's config; each layer (nested dict, e.g. from ``--set``) replaces the fields it names.

        A layer naming an evaluation protocol brings that protocol's fields, below the layers' own.
        """
        if not self.has(CONFIG):
            raise RunDirError(f"{self.path}: not a raydd run directory ({CONFIG} is missing)")
        data = self._read_config_yaml()
        data.pop("raydd_version", None)
        data.pop("git_sha", None)
        protocol = named_protocol(layers)
        return config_from_dict(merge(stored_layer(data), protocol_layer(protocol) if protocol else None, *layers))

    def _read_config_yaml(self) -> dict[str, Any]:
        path, what = self.file(CONFIG), "raydd config"
        remedy = "restore it from a copy, or distill again into a new --out"
        try:
            data = yaml.safe_load(read_text(path)) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ArtifactError(path, what, " ".join(str(exc).split()), remedy) from None
        if not isinstance(data, dict):
            raise ArtifactError(path, what, f"a YAML {type(data).__name__}, not a mapping", remedy)
        return data

    def create_or_check(self, cfg: Config, *, resume: bool) -> None:
        """Create the directory for a new run, or check that a resumed run is the same run."""
        if resume:
            previous = self.read_config().to_dict()
            current = cfg.to_dict()
            if current.get("dm", {}).get("schedule") == "cosine" and \
                    previous["distill"]["iterations"] != current["distill"]["iterations"]:
                raise RunDirError(
                    f"{self.path}: dm.schedule=cosine decays over the run's length "
                    f"({previous['distill']['iterations']} iterations); a resume cannot change it "
                    f"to {current['distill']['iterations']}"
                )
            # Only the length of the run, its bookkeeping (how often it logs, checkpoints, keeps
            # snapshots) and settings of later stages may change on resume: none changes the result.
            for cfg_dict in (previous, current):
                for key in ("iterations", "log_every", "checkpoint_every", "snapshots"):
                    cfg_dict["distill"].pop(key, None)
                for later in ("device", "eval", "audit"):
                    cfg_dict.pop(later, None)
            if previous != current:
                raise RunDirError(
                    f"{self.path}: --resume with a different configuration than the run's config.yaml; "
                    "start a new --out directory instead"
                )
            return
        if self.has(CONFIG):
            raise RunDirError(f"{self.path}: already holds a run; use --resume to continue it or pick another --out")
        makedirs(self.path)

    # -- members --------------------------------------------------------------------------------
    def write_members(self, ids: list[str], dataset: str) -> None:
        payload = {"dataset": dataset, "count": len(ids), "ids": ids}
        write_text_atomic(self.file(MEMBERS), json.dumps(payload))

    # -- metrics --------------------------------------------------------------------------------
    def log_metrics(self, row: dict[str, Any]) -> None:
        append_text(self.file(METRICS), json.dumps(row) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """The logged rows; a torn last line (a process killed mid-append) is dropped, as a resume redoes it."""
        if not self.has(METRICS):
            return []
        lines = [line for line in read_text(self.file(METRICS)).splitlines() if line.strip()]
        rows = []
        for number, line in enumerate(lines, start=1):
            try:
                rows.append(json.loads(line))
            except ValueError:
                if number < len(lines):
                    raise ArtifactError(self.file(METRICS), "raydd metrics log", f"line {number} is not JSON",
                                        "delete that line") from None
        return rows

    def seconds_at(self, iteration: int) -> float:
        """A resume's clock offset: the seconds stored with the checkpoint at ``iteration``, else (a
        checkpoint from before they were stored) the last logged seconds at or before it, else 0."""
        header = self._checkpoint_header()
        if header.get("iteration") == str(iteration) and "seconds" in header:
            return float(header["seconds"])
        rows = [r for r in self.read_metrics() if r.get("iteration", -1) <= iteration and "seconds" in r]
        return float(rows[-1]["seconds"]) if rows else 0.0

    def checkpoint_iteration(self) -> int:
        """The iteration of the last checkpoint (0 without one), read from its header alone."""
        return int(self._checkpoint_header().get("iteration", 0))

    def _checkpoint_header(self) -> dict[str, str]:
        if not self.has(CHECKPOINT):
            return {}
        try:
            return safetensors_metadata(read_bytes(self.file(CHECKPOINT)))
        except ValueError:  # load_checkpoint says what is wrong with it
            return {}

    def snapshot_dir(self, iteration: int) -> str:
        return self.file(f"{SNAPSHOTS}/iteration-{iteration:06d}")

    def truncate_metrics(self, after_iteration: int) -> None:
        """Drop rows a killed run logged after its last checkpoint (they are recomputed on resume)."""
        rows = [r for r in self.read_metrics() if r.get("iteration", -1) <= after_iteration]
        write_text_atomic(self.file(METRICS), "".join(json.dumps(r) + "\n" for r in rows))

    # -- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, torch.Tensor], iteration: int, seconds: float | None = None) -> None:
        """Atomically; ``seconds`` (the run's clock at ``iteration``) lets a resume continue the clock."""
        meta = {"iteration": str(iteration)}
        if seconds is not None:
            meta["seconds"] = f"{seconds:.3f}"
        blob = save_safetensors({k: v.contiguous() for k, v in state.items()}, metadata=meta)
        write_bytes_atomic(self.file(CHECKPOINT), blob)

    def load_checkpoint(self) -> tuple[dict[str, torch.Tensor], int] | None:
        if not self.has(CHECKPOINT):
            return None
        # The iteration lives in the safetensors header so state and counter change in one rename.
        remedy = f"delete {self.file('checkpoint')}, then --resume distills again from iteration 0"
        tensors, meta = read_safetensors(self.file(CHECKPOINT), "raydd checkpoint", remedy)
        if not str(meta.get("iteration", "")).isdigit():
            raise ArtifactError(self.file(CHECKPOINT), "raydd checkpoint", "no iteration in its header", remedy)
        return tensors, int(meta["iteration"])

    def clear_checkpoint(self) -> None:
        remove(self.file(CHECKPOINT_DIR))

    # -- results --------------------------------------------------------------------------------
    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        write_text_atomic(self.file(name), json.dumps(payload, indent=2))

    def read_json(self, name: str) -> dict[str, Any]:
        """A JSON object; a missing, truncated or non-object file is a ``RunDirError`` naming it."""
        if not self.has(name):
            raise RunDirError(f"{self.path}: {name} is missing")
        path = self.file(name)
        try:
            data = json.loads(read_text(path))
        except ValueError as exc:
            raise ArtifactError(path, "JSON file", str(exc), "delete it and rerun the stage that wrote it") from None
        return parse_object(data, path)
