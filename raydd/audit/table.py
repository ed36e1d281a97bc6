"""The audit as a plain-text table: one row per target kind, the figures that matter side by side."""

from __future__ import annotations

from typing import Any

from raydd.results import AuditResult

ROWS = (("synthetic", "synthetic set"), ("real_members", "real members"), ("random_subset", "random real subset"))


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def _own_init(fraction: float | None) -> str:
    return "— (no real init images)" if fraction is None else f"{fraction:.0%}"


def format_audit_table(result: AuditResult) -> str:
    p = result.protocol
    lines = [
        f"Privacy audit: {result.method} ipc={result.ipc} on {result.dataset} "
        f"(audit preset {p['audit_preset']}, {p['members']} members vs {p['nonmembers']} non-members from the "
        f"test split, {p['shadows']} shadows, {p['targets']} target(s) per row)",
        f"  {'target trained on':<20} {'loss AUC':>13} {'LiRA AUC':>13} {'TPR@1%FPR loss/LiRA':>21} "
        f"{'TPR@0.1%FPR loss/LiRA':>23}",
    ]
    for kind, title in ROWS:
        figures = result.attacks.get(kind)
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
    near = result.nearest
    if near:
        l2, cos = near["pixel_l2"], near["feature_cosine"]
        lines.append(
            f"  nearest real image: pixel L2 median {l2['distance']['median']:.2f}; "
            f"{l2['fraction_closer_than_real_median']:.0%} of synthetic images are closer to a real image than "
            f"real images of their class are to each other (median); feature cosine median "
            f"{cos['similarity']['median']:.3f} ({cos['fraction_more_similar_than_real_median']:.0%} above the real "
            f"median); nearest is its own init image: {_own_init(l2.get('nearest_is_init_image_fraction'))}"
        )
    return "\n".join(lines)


def describe_run(cfg: dict[str, Any]) -> dict[str, str]:
    """What distinguishes one audited run from another: dataset, method, init and switches on."""
    distill, mm = cfg.get("distill", {}), cfg.get("mm", {})
    switches = [name for name in ("cc", "cm", "mfa", "mgm", "mask_init") if mm.get(name)]
    return {"dataset": cfg.get("data", {}).get("name", "?"),
            "method": distill.get("recipe") or distill.get("method", "?"),
            "init": distill.get("init", "?"), "switches": "+".join(switches) or "—",
            "iterations": str(distill.get("iterations"))}


def format_audit_grid(rows: list[tuple[dict[str, Any], AuditResult]]) -> str:
    """Markdown: one line per audited run (its config, its audit.json), LiRA AUC against both references.

    The references (a model on the real members, one on a random real subset of the synthetic set's
    size) are re-trained per run, so each line carries its own.
    """
    lines = ["| dataset | method | init | enhancements | iterations | synthetic: LiRA AUC | TPR@1% / 0.1%FPR | "
             "real members: LiRA AUC | random subset: LiRA AUC (TPR@0.1%) | NN pixel L2 median | closer than "
             "same-class real | nearest = own init |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for cfg, audit in rows:
        d = describe_run(cfg)
        attacks = audit.attacks
        syn, real, rand = (attacks[k]["lira"] for k in ("synthetic", "real_members", "random_subset"))
        l2 = audit.nearest["pixel_l2"]
        # Under noise init no synthetic image has an init image of its own (older audit.json files say 0).
        own = None if d["init"] == "noise" else l2.get("nearest_is_init_image_fraction")
        lines.append(
            f"| {d['dataset']} | {d['method']} | {d['init']} | {d['switches']} | {d['iterations']} | "
            f"{syn['auc']:.3f} ± {syn['auc_se']:.3f} | {_pct(syn['tpr@1%fpr']).strip()} / "
            f"{_pct(syn['tpr@0.1%fpr']).strip()} | {real['auc']:.3f} | {rand['auc']:.3f} "
            f"({_pct(rand['tpr@0.1%fpr']).strip()}) | {l2['distance']['median']:.2f} | "
            f"{l2['fraction_closer_than_real_median']:.0%} | {'—' if own is None else f'{own:.0%}'} |"
        )
    return "\n".join(lines)
