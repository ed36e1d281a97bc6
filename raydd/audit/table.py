"""The audit as a plain-text table: one row per target kind, the figures that matter side by side."""

from __future__ import annotations

from typing import Any

ROWS = (("synthetic", "synthetic set"), ("real_members", "real members"), ("random_subset", "random real subset"))


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def format_audit_table(result: dict[str, Any]) -> str:
    p = result["protocol"]
    lines = [
        f"Privacy audit: {result.get('method')} ipc={result.get('ipc')} on {result.get('dataset')} "
        f"(audit preset {p['audit_preset']}, {p['members']} members vs {p['nonmembers']} non-members from the "
        f"test split, {p['shadows']} shadows, {p['targets']} target(s) per row)",
        f"  {'target trained on':<20} {'loss AUC':>13} {'LiRA AUC':>13} {'TPR@1%FPR loss/LiRA':>21} "
        f"{'TPR@0.1%FPR loss/LiRA':>23}",
    ]
    for kind, title in ROWS:
        figures = result["attacks"].get(kind)
        if not figures:
            continue
        loss, lira = figures["loss"], figures["lira"]
        lines.append(
            f"  {title:<20} {loss['auc']:.3f}±{loss['auc_se']:.3f}  {lira['auc']:.3f}±{lira['auc_se']:.3f}  "
            f"{_pct(loss['tpr@1%fpr']):>9} /{_pct(lira['tpr@1%fpr']):>7}   "
            f"{_pct(loss['tpr@0.1%fpr']):>9} /{_pct(lira['tpr@0.1%fpr']):>7}"
        )
    lines.append("  AUC 0.5 = no signal (± one standard error); TPR at low FPR is what matters. "
                 f"With {p['nonmembers']} non-members the smallest FPR step is {1 / p['nonmembers']:.2%}.")
    near = result.get("nearest")
    if near:
        l2, cos = near["pixel_l2"], near["feature_cosine"]
        lines.append(
            f"  nearest real image: pixel L2 median {l2['distance']['median']:.2f}; "
            f"{l2['fraction_closer_than_real_median']:.0%} of synthetic images are closer to a real image than "
            f"real images of their class are to each other (median); feature cosine median "
            f"{cos['similarity']['median']:.3f} ({cos['fraction_more_similar_than_real_median']:.0%} above the real "
            f"median); nearest is its own init image: {l2['nearest_is_init_image_fraction']:.0%}"
        )
    return "\n".join(lines)
