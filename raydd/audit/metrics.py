"""How well an attack's scores separate members from non-members: ROC AUC and TPR at low FPR.

Pure functions of two score arrays (higher score = "more likely a member"). AUC summarises the whole
curve; TPR at 1% / 0.1% FPR is what matters for privacy (Carlini et al. 2022): an attack that is right
with confidence about a few records is a leak even when its AUC is near 0.5.
"""

from __future__ import annotations

import math

import numpy as np

FPR_LEVELS = {"tpr@1%fpr": 0.01, "tpr@0.1%fpr": 0.001}


def _as_scores(values) -> np.ndarray:
    scores = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(scores)):
        raise ValueError("attack scores must be finite")
    return scores


def roc_curve(member_scores, nonmember_scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): one point per distinct score, from (0, 0) at threshold +inf to (1, 1).

    Predicting "member" when score >= threshold; tied scores move together, so the curve has no point
    an attacker could not reach (the same points as scikit-learn's ``drop_intermediate=False``).
    """
    members, nonmembers = _as_scores(member_scores), _as_scores(nonmember_scores)
    if len(members) == 0 or len(nonmembers) == 0:
        raise ValueError("need at least one member and one non-member score")
    scores = np.concatenate([members, nonmembers])
    is_member = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    order = np.argsort(-scores, kind="stable")
    scores, is_member = scores[order], is_member[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_pos = np.cumsum(is_member)[last_of_tie]
    false_pos = (last_of_tie + 1) - true_pos
    fpr = np.r_[0.0, false_pos / len(nonmembers)]
    tpr = np.r_[0.0, true_pos / len(members)]
    thresholds = np.r_[np.inf, scores[last_of_tie]]
    return fpr, tpr, thresholds


def roc_auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the ROC curve by the trapezoid rule (ties count one half, as Mann-Whitney)."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> float:
    """The largest TPR among reachable operating points whose FPR is at most ``max_fpr``.

    No interpolation between points: a threshold between two points is not available to an attacker.
    With fewer than 1/max_fpr non-members this is the TPR at zero false positives.
    """
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def auc_standard_error(auc: float, n_members: int, n_nonmembers: int) -> float:
    """Hanley & McNeil (1982): how much the AUC of an audit this size moves from sample to sample."""
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    var = (auc * (1 - auc) + (n_members - 1) * (q1 - auc * auc) + (n_nonmembers - 1) * (q2 - auc * auc))
    return math.sqrt(max(var, 0.0) / (n_members * n_nonmembers))


def attack_metrics(member_scores, nonmember_scores) -> dict[str, float | int]:
    """Every figure the audit reports for one attack on one kind of target."""
    fpr, tpr, _ = roc_curve(member_scores, nonmember_scores)
    n_members, n_nonmembers = len(_as_scores(member_scores)), len(_as_scores(nonmember_scores))
    auc = roc_auc(fpr, tpr)
    out: dict[str, float | int] = {"auc": auc}
    out.update({name: tpr_at_fpr(fpr, tpr, level) for name, level in FPR_LEVELS.items()})
    out.update({"n_members": n_members, "n_nonmembers": n_nonmembers,
                "auc_se": auc_standard_error(auc, n_members, n_nonmembers)})
    return out
