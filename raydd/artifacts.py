"""What a run directory holds (DESIGN §3), by name, and how its JSON artifacts are read back.

One list of names, so a writer and its readers cannot drift apart. The JSON helpers turn a foreign,
truncated or newer file into a ``RunDirError`` naming the file, never a ``KeyError`` traceback.
"""

from __future__ import annotations

import json
from typing import Any

from raydd.errors import RunDirError

# -- run directory --------------------------------------------------------------------------------
CONFIG = "config.yaml"
MEMBERS = "members.json"  # ids of the real images distillation could see
METRICS = "metrics.jsonl"
SYNTHETIC = "synthetic.safetensors"
METADATA = "metadata.json"  # beside SYNTHETIC: enough to evaluate the set with no other input
EVAL = "eval.json"
EVAL_VAL = "eval_val.json"  # the same figures on the validation split (tuning)
EVAL_MODELS = "eval_models_{split}"  # while an evaluation runs: its finished models, one JSON each
AUDIT = "audit.json"
AUDIT_SCORES = "audit/scores.json"  # per-image attack scores, for re-analysis
AUDIT_SHADOWS = "audit"  # shadow distillations: audit/shadow-<k>
NN_PAIRS = "nn_pairs.json"
NN_PAIRS_PNG = "nn_pairs.png"
GRID = "synthetic.png"
INIT_GRID = "synthetic_init.png"
REPORT = "report.html"
CAPTIONS = "captions.json"  # real captions with their embeddings, for the report's nearest captions
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT = f"{CHECKPOINT_DIR}/state.safetensors"
SNAPSHOTS = "snapshots"  # distill.snapshots: the set at chosen iterations, each a loadable synthetic set
MODEL_POOL = "model_pool.safetensors"  # fast DM's trained networks, read by every worker and every resume
RAY_LOG = "ray.log"  # Ray's native lines of the command that wrote the run directory

# -- work directory of an ablation or a search ----------------------------------------------------
SHARED_POOLS = "model-pools"  # the trained model pools their runs share

# -- tune directory -------------------------------------------------------------------------------
TRIALS = "trials.json"
TRIALS_CSV = "trials.csv"  # the same trials, one row each, for a spreadsheet
BEST = "best.yaml"
SEARCH = "search.json"

# -- preprocessed dataset -------------------------------------------------------------------------
REJECTED = "rejected.jsonl"  # rows left out under on_bad_row="skip": file and reason


# -- reading JSON artifacts -----------------------------------------------------------------------
def parse_object(source: str | bytes | dict[str, Any], where: str) -> dict[str, Any]:
    """A JSON object from text (or an already parsed one); ``where`` names the file in errors."""
    if isinstance(source, (str, bytes, bytearray)):
        try:
            source = json.loads(source)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RunDirError(f"{where}: not valid JSON, truncated or corrupt ({exc})") from None
    if not isinstance(source, dict):
        raise RunDirError(f"{where}: expected a JSON object, found {type(source).__name__}")
    return source


def check_schema(data: dict[str, Any], where: str, current: int) -> None:
    """Files from before versioning have no ``schema_version`` and load as they are; newer ones refuse."""
    version = data.get("schema_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise RunDirError(f"{where}: schema_version must be a whole number, found {version!r}")
    if version > current:
        raise RunDirError(f"{where}: schema_version {version} is newer than this raydd reads ({current}); "
                          "upgrade raydd")


def field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, *, required: bool = False) -> Any:
    """``data[key]`` when it has the expected JSON type; None when absent or null (unless required)."""
    value = data.get(key)
    if value is None:
        if required:
            raise RunDirError(f"{where}: '{key}' is missing")
        return None
    numbers = kind in ((int, float), float, int)
    if isinstance(value, bool) and numbers or not isinstance(value, kind):
        name = "a number" if numbers else f"a JSON {_json_type(kind)}"
        raise RunDirError(f"{where}: '{key}' should be {name}, found {type(value).__name__}")
    return value


def _json_type(kind: type | tuple[type, ...]) -> str:
    return {dict: "object", list: "array", str: "string"}.get(kind, getattr(kind, "__name__", str(kind)))
