"""Audit a run directory: membership inference against three kinds of target, plus memorisation.

Targets are trained under the run's evaluation protocol (sized by the audit preset) on
(1) the run's synthetic set, (2) the audited real members themselves (the leak to beat) and
(3) a random real subset of the synthetic set's size. Each is attacked by the loss threshold and by
offline LiRA with shadows that mirror its pipeline. Writes audit.json, nn_pairs.png, nn_pairs.json
and audit/scores.json (per-image scores, for re-analysis) into the run directory.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

import torch

from raydd.artifacts import AUDIT, AUDIT_SCORES, AUDIT_SHADOWS, MEMBERS, NN_PAIRS, NN_PAIRS_PNG
from raydd.config import Config
from raydd.data import DatasetSplits
from raydd.run_inputs import check_names, load_splits, resolve_device
from raydd.models.init import build_seeded
from raydd.results import AuditResult
from raydd.rundir import RunDir
from raydd.seeding import derive_seed
from raydd.storage import absolute, check_writable, write_text_atomic
from raydd.synthetic import SyntheticSet
from raydd.workflows import check_compatible

from .attacks import logit_confidence, lira_offline_scores, loss_scores, out_gaussian
from .shadow_tasks import AuditRunner, local_runner
from .jobs import KINDS, AuditJob, dataset_info
from .metrics import attack_metrics
from .nearest import memorisation, pair_records, write_pairs_png
from .population import Population, draw_population, per_class_sample, shadow_halves
from .settings import check_audit

SEED_KEYS = ("audit-members, audit-nonmembers (population); audit-halves/<pair> (shadow halves); "
             "audit-subset/<role>/<index>/<class> (random subsets); audit-model/<kind>/<role>/<index> "
             "(training); audit-shadow/<index> (shadow distillation seed); audit-nn-pool, audit-nn-reference")


def _mask(n: int, positions: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[positions] = True
    return mask


def plan_jobs(cfg: Config, syn: SyntheticSet, splits: DatasetSplits, population: Population, halves: torch.Tensor,
              run_path: str) -> list[AuditJob]:
    """Every target and shadow model, longest first so a few workers are not left with a long tail."""
    a = cfg.audit
    info = dataset_info(splits)
    n = len(population.ids)
    syn_epochs = a.epochs or cfg.eval.epochs
    real_epochs = a.real_epochs or cfg.eval.epochs
    members = population.member_positions()
    syn_images, syn_labels, _ = syn.training_set()
    syn_images, syn_labels = syn_images.cpu(), syn_labels.cpu()

    def job(kind: str, role: str, index: int, trains_on: torch.Tensor, epochs: int, **extra) -> AuditJob:
        return AuditJob(kind, role, index, cfg, info, trains_on, epochs,
                        derive_seed(cfg.seed, "audit-model", kind, role, index), **extra)

    def subset(candidates: torch.Tensor, role: str, index: int) -> torch.Tensor:
        return _mask(n, per_class_sample(population.labels, candidates, syn.ipc, cfg.seed, "audit-subset", role, index))

    jobs = [job("synthetic", "shadow", k, halves[k], syn_epochs, shadow_dir=f"{run_path}/{AUDIT_SHADOWS}/shadow-{k}")
            for k in range(a.shadows)]
    jobs += [job("real_members", "shadow", k, halves[k], real_epochs) for k in range(a.shadows)]
    jobs += [job("real_members", "target", t, population.is_member.clone(), real_epochs, keep_weights=t == 0)
             for t in range(a.targets)]
    jobs += [job("synthetic", "target", t, population.is_member.clone(), syn_epochs,
                 images=syn_images, labels=syn_labels) for t in range(a.targets)]
    jobs += [job("random_subset", "target", t, subset(members, "target", t), syn_epochs) for t in range(a.targets)]
    jobs += [job("random_subset", "shadow", k, subset(torch.nonzero(halves[k]).flatten(), "shadow", k), syn_epochs)
             for k in range(a.shadows)]
    return jobs


def _accuracy(logits: torch.Tensor, labels: torch.Tensor, where: torch.Tensor) -> float:
    return float((logits[where].argmax(dim=1) == labels[where]).double().mean())


def attack_kind(kind: str, jobs: list[AuditJob], results: list[dict[str, Any]], population: Population,
                variance: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(figures, model facts, per-image scores) of one target kind; scores pooled over its targets."""
    labels, is_member = population.labels, population.is_member
    mine = [(j, r) for j, r in zip(jobs, results) if j.kind == kind]
    shadows = [(j, r) for j, r in mine if j.role == "shadow"]
    targets = [(j, r) for j, r in mine if j.role == "target"]
    shadow_phi = torch.stack([logit_confidence(r["logits"], labels) for _, r in shadows])
    shadow_in = torch.stack([j.trains_on for j, _ in shadows])
    mean_out, std_out, used = out_gaussian(shadow_phi, shadow_in, variance=variance)

    loss = [loss_scores(r["logits"], labels) for _, r in targets]
    lira = [lira_offline_scores(logit_confidence(r["logits"], labels), mean_out, std_out) for _, r in targets]

    def pooled(scores: list[torch.Tensor], members: list[torch.Tensor]) -> dict[str, Any]:
        inside = torch.cat([s[m] for s, m in zip(scores, members)])
        outside = torch.cat([s[~is_member] for s in scores])
        return attack_metrics(inside.numpy(), outside.numpy())

    audited = [is_member] * len(targets)
    figures = {"loss": pooled(loss, audited), "lira": pooled(lira, audited)}
    if kind == "random_subset":
        # The subset trains on a few of the audited members only: their exposure, on its own.
        trained = [j.trains_on for j, _ in targets]
        figures["loss_subset_images"] = pooled(loss, trained)
        figures["lira_subset_images"] = pooled(lira, trained)
    out_count = (~shadow_in).sum(dim=0)
    facts = {
        "targets": len(targets),
        "shadows": len(shadows),
        "target_train_size": targets[0][1]["train_size"],
        "shadow_train_size_mean": sum(r["train_size"] for _, r in shadows) / len(shadows),
        "target_accuracy_members": sum(_accuracy(r["logits"], labels, is_member) for _, r in targets) / len(targets),
        "target_accuracy_nonmembers":
            sum(_accuracy(r["logits"], labels, ~is_member) for _, r in targets) / len(targets),
        "lira_variance": used,
        "out_shadows_per_example_min": int(out_count.min()),
        "out_shadows_per_example_max": int(out_count.max()),
        "model_seconds": sum(r["seconds"] for _, r in mine),
    }
    scores = {"loss": [s.tolist() for s in loss], "lira": [s.tolist() for s in lira],
              "target_trains_on": [j.trains_on.tolist() for j, _ in targets]}
    return figures, facts, scores


def _feature_net(cfg: Config, splits: DatasetSplits, weights: dict[str, torch.Tensor], device: torch.device):
    net = build_seeded(cfg.eval.model, 0, device, channels=splits.channels, num_classes=splits.num_classes,
                       image_size=splits.image_size)
    net.load_state_dict(weights)
    return net


def protocol(cfg: Config, syn: SyntheticSet, population: Population) -> dict[str, Any]:
    a, e = cfg.audit, cfg.eval
    return {
        "audit_preset": a.preset,
        "run_preset": cfg.preset,
        "members": population.n_members,
        "nonmembers": population.n_nonmembers,
        "members_from": "members.json (seeded sample of the real images distillation could see)",
        "nonmembers_from": "test split (seeded sample; no stage trains or selects on it)",
        "shadows": a.shadows,
        "targets": a.targets,
        "epochs": a.epochs or e.epochs,
        "real_epochs": a.real_epochs or e.epochs,
        "shadow_iterations": a.shadow_iterations if a.shadow_iterations is not None else cfg.distill.iterations,
        "subset_ipc": syn.ipc,
        "model": e.model,
        "training": {"lr": e.lr, "momentum": e.momentum, "weight_decay": e.weight_decay, "batch": e.batch,
                     "augment": e.augment, "lr_schedule": "x0.1 after half the epochs"},
        "lira": "offline, one-sided: -log P[Z > phi_target], Z ~ N(OUT mean, OUT std), "
                "phi = logit_y - logsumexp(others)",
        "lira_variance": a.variance,
        "shadow_halves": "complementary class-stratified halves of the population, in pairs",
        "scores": "pooled over the targets of a row",
        "seed": cfg.seed,
        "seed_keys": SEED_KEYS,
        "audit_config": asdict(a),
    }


def audit_run(run_dir: str, cfg: Config | None = None, *, runner: AuditRunner | None = None,
              show_progress: bool = True) -> AuditResult:
    """Audit the synthetic set in ``run_dir`` (its config, or ``cfg``: see ``audit_config``); writes audit.json."""
    start = time.perf_counter()
    run = RunDir(run_dir)
    cfg = cfg or run.read_config()
    check_audit(cfg.audit)
    check_names(cfg)
    syn = SyntheticSet.load(run.path)
    check_writable(run.path)  # before the training whose result it must hold
    splits = load_splits(cfg)
    check_compatible(syn, splits, run.path)
    member_ids = run.read_json(MEMBERS)["ids"]
    population = draw_population(splits, member_ids, cfg.audit.members, cfg.seed)
    halves = shadow_halves(population.labels, cfg.audit.shadows, cfg.seed)
    device = resolve_device(cfg.device)

    # Shadow distillations write from Ray workers, whose working directory need not be ours.
    jobs = plan_jobs(cfg, syn, splits, population, halves, absolute(run.path))
    results = (runner or local_runner(device, show_progress))(jobs, population)

    attacks, models, scores = {}, {}, {}
    for kind in KINDS:
        attacks[kind], models[kind], scores[kind] = attack_kind(kind, jobs, results, population, cfg.audit.variance)

    weights = next(r["weights"] for j, r in zip(jobs, results) if j.keep_weights)
    position = {image_id: i for i, image_id in enumerate(splits.train.ids)}
    members = splits.train.subset([position[i] for i in member_ids])
    nearest, pairs = memorisation(syn, members, splits.normalize, _feature_net(cfg, splits, weights, device),
                                  pool_size=cfg.audit.nn_pool, queries_per_class=cfg.audit.nn_queries, seed=cfg.seed,
                                  device=device, batch=cfg.eval.batch_test)
    write_pairs_png(run.file(NN_PAIRS_PNG), syn, members, pairs)
    run.write_json(NN_PAIRS, {"pairs": pair_records(pairs, syn, members)})
    write_text_atomic(run.file(AUDIT_SCORES), json.dumps({
        "ids": population.ids, "is_member": population.is_member.tolist(), "labels": population.labels.tolist(),
        "scores": scores,
    }))

    result = AuditResult(attacks=attacks, dataset=splits.name, method=syn.meta.get("method"), ipc=syn.ipc,
                         models=models, nearest=nearest, protocol=protocol(cfg, syn, population),
                         seconds=time.perf_counter() - start)
    run.write_json(AUDIT, result.to_json())
    return result
