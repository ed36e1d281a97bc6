"""Read an audit.json of any reasonable shape into table rows and the few figures a comparison needs.

The audit layer decides its own layout (attacks nested by name and target, or a list of records; TPR
keys such as ``tpr_at_1pct_fpr``, ``tpr@0.1%fpr`` or ``{"tpr_at_fpr": {"0.01": ...}}``). Rather than
pin one layout, rows are found by shape: a mapping with at least one AUC or TPR number is an attack
result, labelled by where it sits and by its text fields; every other number is listed as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from raydd.report.summaries import is_number

LABEL_FIELDS = ("attack", "name", "target", "model", "trained_on", "reference", "against", "kind")
OTHER_TARGET_WORDS = ("real", "member", "subset", "random", "full", "shadow", "baseline")


@dataclass
class AttackRow:
    label: str  # e.g. "attacks / lira / synthetic"
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class AuditView:
    attacks: list[AttackRow] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)  # (path, value shown)

    @property
    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self.attacks:
            seen.update(dict.fromkeys(row.values))
        return list(seen)


def _is_attack_key(key: str) -> bool:
    k = key.lower()
    return "auc" in k or "tpr" in k


def _row_numbers(node: dict[str, Any]) -> dict[str, float]:
    """A mapping's own numbers, plus TPR/AUC tables one level down (``{"tpr_at_fpr": {"0.01": x}}``
    -> ``tpr_at_fpr.0.01``). Deeper mappings are rows of their own, not columns of this one."""
    out: dict[str, float] = {}
    for key, value in node.items():
        if is_number(value):
            out[str(key)] = float(value)
        elif isinstance(value, dict) and _is_attack_key(str(key)):
            out.update({f"{key}.{sub}": float(v) for sub, v in value.items() if is_number(v)})
    return out


def _summary_of_list(values: list[Any]) -> str | None:
    nums = [float(v) for v in values if is_number(v)]
    if not nums or len(nums) != len(values):
        return None
    mean = sum(nums) / len(nums)
    return f"{len(nums)} values: mean {mean:.4g}, min {min(nums):.4g}, max {max(nums):.4g}"


def _walk(node: Any, path: list[str], view: AuditView) -> None:
    if isinstance(node, dict):
        numbers = _row_numbers(node)
        if any(_is_attack_key(k) for k in numbers):
            texts = [str(node[k]) for k in LABEL_FIELDS if isinstance(node.get(k), str)]
            # Lists inside a result (ROC curve points, per-sample scores) are too long for a table.
            view.attacks.append(AttackRow(" / ".join([*path, *texts]) or "attack", numbers))
            return
        for key, value in node.items():
            _walk(value, [*path, str(key)], view)
    elif isinstance(node, list):
        summary = _summary_of_list(node)
        if summary is not None:
            view.other.append((" / ".join(path), summary))
            return
        for index, item in enumerate(node):
            _walk(item, [*path, str(index)] if not isinstance(item, dict) else path, view)
    elif is_number(node) or isinstance(node, (str, bool)):
        if path:
            view.other.append((" / ".join(path), _show(node)))


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 160 else text[:157] + "..."



def read_audit(audit: dict[str, Any] | None) -> AuditView:
    view = AuditView()
    if audit:
        _walk(audit, [], view)
    return view


# -- the figures a comparison table needs ----------------------------------------------------------
def fpr_level(key: str) -> float | None:
    """The false-positive rate a TPR key is measured at (0.01 for ``tpr_at_1pct_fpr``), else None."""
    k = key.lower()
    if "tpr" not in k:
        return None
    tail = k.split("tpr", 1)[1].replace("_", ".").replace("..", ".")
    percent = re.search(r"(\d+(?:\.\d+)?)\.?(?:%|pct|percent)", tail)
    if percent:
        return float(percent.group(1)) / 100
    number = re.search(r"\d+(?:\.\d+)?(?:e-?\d+)?", tail)
    if number:
        value = float(number.group(0))
        return value if value < 1 else value / 100  # "tpr_at_1" read as 1 %
    return None


def _target_is_synthetic(label: str) -> bool:
    words = label.lower()
    if "syn" in words:
        return True
    return not any(w in words for w in OTHER_TARGET_WORDS)


def attack_row(view: AuditView, attack: str) -> AttackRow | None:
    """The row for ``attack`` (loss, lira) against the model trained on the synthetic set."""
    matching = [r for r in view.attacks if attack in r.label.lower()]
    synthetic = [r for r in matching if _target_is_synthetic(r.label)]
    return synthetic[0] if synthetic else None


def auc(row: AttackRow | None) -> float | None:
    if row is None:
        return None
    keys = [k for k in row.values if "auc" in k.lower()]
    preferred = [k for k in keys if k.lower() in ("auc", "roc_auc", "auroc")]
    chosen = (preferred or keys or [None])[0]
    return row.values[chosen] if chosen else None


def tpr_at(row: AttackRow | None, fpr: float) -> float | None:
    if row is None:
        return None
    for key, value in row.values.items():
        level = fpr_level(key)
        if level is not None and abs(level - fpr) < 1e-9:
            return value
    return None
