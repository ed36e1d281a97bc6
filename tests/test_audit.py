"""Privacy audit: metrics against scikit-learn, attacks on toy models whose answer is known, the
nearest-neighbour search against brute force, and a tiny end-to-end audit of a real run directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raydd.audit.attacks import (
    lira_offline_scores,
    logit_confidence,
    loss_scores,
    out_gaussian,
)
from raydd.audit.metrics import attack_metrics, roc_auc, roc_curve, tpr_at_fpr
from raydd.audit.nearest import feature_pool, nearest_cosine, nearest_l2, same_class_reference
from raydd.audit.population import draw_population, per_class_sample, shadow_halves
from tests.helpers import tiny_splits, write_imagefolder

sklearn_metrics = pytest.importorskip("sklearn.metrics")


# -- metrics ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,n_in,n_out,decimals",
                         [(0, 300, 500, 1), (1, 50, 40, 3), (2, 1000, 1000, 6), (3, 7, 5, 0)])
def test_roc_auc_and_tpr_match_sklearn_including_ties(seed, n_in, n_out, decimals):
    rng = np.random.default_rng(seed)
    members = np.round(rng.normal(0.7, 1, n_in), decimals)
    nonmembers = np.round(rng.normal(0, 1, n_out), decimals)
    y = np.r_[np.ones(n_in), np.zeros(n_out)]
    s = np.r_[members, nonmembers]
    ref_fpr, ref_tpr, ref_thr = sklearn_metrics.roc_curve(y, s, drop_intermediate=False)
    fpr, tpr, thr = roc_curve(members, nonmembers)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    np.testing.assert_allclose(thr[1:], ref_thr[1:])
    assert roc_auc(fpr, tpr) == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-12)
    for level in (0.01, 0.001, 0.1, 0.0):
        assert tpr_at_fpr(fpr, tpr, level) == pytest.approx(ref_tpr[ref_fpr <= level].max())
    out = attack_metrics(members, nonmembers)
    assert set(out) >= {"auc", "tpr@1%fpr", "tpr@0.1%fpr", "n_members", "n_nonmembers"}
    assert (out["n_members"], out["n_nonmembers"]) == (n_in, n_out)


def test_metric_extremes():
    assert attack_metrics([2, 3], [0, 1])["auc"] == 1.0
    assert attack_metrics([2, 3], [0, 1])["tpr@0.1%fpr"] == 1.0
    assert attack_metrics([0, 1], [2, 3])["auc"] == 0.0
    tied = attack_metrics([1, 1, 1], [1, 1])
    assert tied["auc"] == 0.5 and tied["tpr@1%fpr"] == 0.0  # an all-tied attack reaches no low-FPR point
    with pytest.raises(ValueError):
        attack_metrics([], [1.0])
    with pytest.raises(ValueError):
        attack_metrics([float("nan")], [1.0])


# -- attack scores ------------------------------------------------------------------------------------
def test_logit_confidence_is_log_odds_and_stays_finite():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0], [1000.0, 0.0, -5.0]])
    labels = torch.tensor([0, 2, 0])
    p = torch.softmax(logits.double(), dim=1)[torch.arange(3), labels]
    phi = logit_confidence(logits, labels)
    assert torch.allclose(phi[:2], torch.log(p[:2] / (1 - p[:2])))
    assert torch.isfinite(phi).all() and phi[2] > 900  # p_y rounds to 1.0 here; phi does not
    assert torch.allclose(loss_scores(logits, labels), -F.cross_entropy(logits.double(), labels, reduction="none"))


def _auc(scores: torch.Tensor, is_member: torch.Tensor) -> float:
    return attack_metrics(scores[is_member].numpy(), scores[~is_member].numpy())["auc"]


def test_lira_gaussian_scoring_finds_a_shifted_in_distribution():
    """Per-example difficulty hides the shift from a raw threshold; comparing with OUT shadows reveals it."""
    g = torch.Generator().manual_seed(0)
    n, shadows = 2000, 16
    difficulty = 3.0 * torch.randn(n, generator=g)
    shadow_in = shadow_halves(torch.zeros(n, dtype=torch.int64), shadows, seed=0)
    shadow_phi = difficulty + 0.5 * torch.randn((shadows, n), generator=g) + 2.0 * shadow_in
    is_member = torch.arange(n) < n // 2
    target_phi = difficulty + 0.5 * torch.randn(n, generator=g) + 2.0 * is_member
    for variance in ("global", "per_example"):
        mean, std, used = out_gaussian(shadow_phi, shadow_in, variance=variance)
        assert used == variance
        assert std.mean() == pytest.approx(0.5, rel=0.2)
        lira = lira_offline_scores(target_phi, mean, std)
        assert torch.isfinite(lira).all()
        assert _auc(lira, is_member) > 0.95 > _auc(target_phi, is_member)
    # Without a shift between members and non-members LiRA finds nothing.
    null_phi = difficulty + 0.5 * torch.randn(n, generator=g)
    mean, std, _ = out_gaussian(shadow_phi, shadow_in)
    assert abs(_auc(lira_offline_scores(null_phi, mean, std), is_member) - 0.5) < 0.05


def test_out_gaussian_choices_and_errors():
    phi = torch.randn(4, 6)
    all_in = torch.ones(4, 6, dtype=torch.bool)
    with pytest.raises(ValueError, match="no OUT shadow"):
        out_gaussian(phi, all_in)
    one_out = torch.ones(4, 6, dtype=torch.bool)
    one_out[0] = False
    _, std, used = out_gaussian(phi, one_out)  # one OUT value per example: pooled spread of all OUT values
    assert used == "global" and torch.isfinite(std).all() and (std > 0).all()
    with pytest.raises(ValueError):
        out_gaussian(phi, one_out, variance="per_example")
    with pytest.raises(ValueError):
        out_gaussian(phi, one_out, variance="sometimes")


# -- the attacks on toy models -------------------------------------------------------------------------
def _toy_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs with random labels: anything a model gets right on a training point is memorised."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, 16), generator=g), torch.randint(0, 4, (n,), generator=g)


def _train_toy(x: torch.Tensor, y: torch.Tensor, seed: int, steps: int = 150) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(16, 128), torch.nn.ReLU(), torch.nn.Linear(128, 4))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


@torch.no_grad()
def _toy_attacks(target: torch.nn.Module, x, y, is_member, shadows: list[tuple[torch.nn.Module, torch.Tensor]]):
    loss = loss_scores(target(x), y)
    shadow_phi = torch.stack([logit_confidence(net(x), y) for net, _ in shadows])
    mean, std, _ = out_gaussian(shadow_phi, torch.stack([m for _, m in shadows]))
    lira = lira_offline_scores(logit_confidence(target(x), y), mean, std)
    return _auc(loss, is_member), _auc(lira, is_member)


@pytest.fixture
def one_thread():
    """Tiny models: on a loaded 2-core machine, a second OpenMP thread only adds waiting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_attacks_separate_members_of_an_overfit_model_and_find_nothing_between_outsiders(one_thread):
    x, y = _toy_data(600, seed=0)
    members = torch.arange(600) < 200  # the target trains on these 200; 400 never seen
    target = _train_toy(x[members], y[members], seed=1)
    audited = torch.arange(400)  # 200 members + 200 outsiders
    halves = shadow_halves(y[audited], 4, seed=0)
    shadows = [(_train_toy(x[audited][h], y[audited][h], seed=10 + k), h) for k, h in enumerate(halves)]
    loss_auc, lira_auc = _toy_attacks(target, x[audited], y[audited], members[audited], shadows)
    assert loss_auc > 0.8 and lira_auc > 0.8

    # "Members" and "non-members" both drawn from the 400 images the target never saw: no signal.
    outsiders = torch.arange(200, 600)
    fake = torch.zeros(400, dtype=torch.bool)
    fake[torch.randperm(400, generator=torch.Generator().manual_seed(3))[:200]] = True
    halves = shadow_halves(y[outsiders], 4, seed=1)
    shadows = [(_train_toy(x[outsiders][h], y[outsiders][h], seed=20 + k), h) for k, h in enumerate(halves)]
    loss_auc, lira_auc = _toy_attacks(target, x[outsiders], y[outsiders], fake, shadows)
    assert abs(loss_auc - 0.5) < 0.1 and abs(lira_auc - 0.5) < 0.1


# -- populations ---------------------------------------------------------------------------------------
def test_population_is_seeded_disjoint_and_balanced():
    splits = tiny_splits(num_classes=3, n_per_class=12)
    member_ids = list(splits.train.ids)
    a = draw_population(splits, member_ids, 8, seed=0)
    b = draw_population(splits, member_ids, 8, seed=0)
    assert a.ids == b.ids and (a.n_members, a.n_nonmembers) == (8, 8)
    assert set(a.ids[:8]) <= set(member_ids) and set(a.ids[8:]) <= set(splits.test.ids)
    assert draw_population(splits, member_ids, 8, seed=1).ids != a.ids
    assert draw_population(splits, member_ids, 10_000, seed=0).n_members == len(splits.test)  # capped
    with pytest.raises(Exception, match="members.json"):
        draw_population(splits, ["not/an/id"], 4, seed=0)


@pytest.mark.parametrize("shadows", [2, 4, 5])
def test_shadow_halves_give_every_example_out_shadows(shadows):
    labels = torch.arange(3).repeat_interleave(7)
    halves = shadow_halves(labels, shadows, seed=0)
    ins = halves.sum(dim=0)
    assert int(ins.min()) >= shadows // 2 and int(ins.max()) <= (shadows + 1) // 2
    assert int((~halves).sum(dim=0).min()) >= 1
    for half in halves:  # stratified: each shadow sees about half of every class
        counts = torch.bincount(labels[half], minlength=3)
        assert int(counts.min()) >= 3 and int(counts.max()) <= 4


def test_per_class_sample_takes_ipc_of_each_class_from_the_candidates():
    labels = torch.arange(3).repeat_interleave(10)
    candidates = torch.arange(0, 30, 2)
    picked = per_class_sample(labels, candidates, 2, 0, "k")
    assert set(picked.tolist()) <= set(candidates.tolist())
    assert torch.bincount(labels[picked]).tolist() == [2, 2, 2]


# -- nearest neighbours --------------------------------------------------------------------------------
def test_nearest_l2_and_cosine_match_brute_force():
    g = torch.Generator().manual_seed(0)
    queries = torch.randn((13, 2, 4, 4), generator=g)
    keys_u8 = torch.randint(0, 256, (101, 2, 4, 4), generator=g, dtype=torch.uint8)
    keys_u8[7] = ((queries[3] * 0.3 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)  # a near-copy

    def prepare(x):
        return (x.float() / 255 - 0.5) / 0.3

    flat_q, flat_k = queries.reshape(13, -1).double(), prepare(keys_u8).reshape(101, -1).double()
    brute = torch.cdist(flat_q, flat_k)
    dist, index = nearest_l2(queries, keys_u8, prepare=prepare, chunk=10)
    assert torch.equal(index, brute.argmin(dim=1)) and int(index[3]) == 7
    assert torch.allclose(dist, brute.min(dim=1).values, atol=1e-9)

    cos = F.normalize(flat_q, dim=1) @ F.normalize(flat_k, dim=1).T
    sim, cindex = nearest_cosine(queries, prepare(keys_u8), chunk=7)
    assert torch.equal(cindex, cos.argmax(dim=1)) and torch.allclose(sim, cos.max(dim=1).values, atol=1e-6)

    exclude = brute.argmin(dim=1)  # forbid each query its nearest key: the runner-up must come back
    _, second = nearest_l2(queries, keys_u8, prepare=prepare, chunk=10, exclude=exclude)
    brute[torch.arange(13), exclude] = float("inf")
    assert torch.equal(second, brute.argmin(dim=1))


def test_same_class_reference_never_matches_an_image_with_itself():
    points = torch.tensor([[0.0], [1.0], [3.0], [10.0], [10.5], [20.0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    medians = same_class_reference(points, labels, 3, per_class=10, seed=0, metric="l2")
    assert medians[0] == pytest.approx(1.0) and medians[1] == pytest.approx(0.5) and np.isnan(medians[2])


def test_feature_pool_keeps_the_init_images():
    splits = tiny_splits(num_classes=3, n_per_class=20)
    init = [splits.train.ids[i] for i in (0, 25, 59)]
    pool = feature_pool(splits.train, init, 5, seed=0)
    assert {0, 25, 59} <= set(pool.tolist()) and len(pool) <= 8
    assert len(feature_pool(splits.train, init, None, seed=0)) == len(splits.train)


@pytest.mark.parametrize("init", ["real", "noise"])
def test_own_init_neighbour_is_counted_for_real_init_only(init):
    from raydd.audit.nearest import memorisation
    from raydd.synthetic import SyntheticSet

    splits = tiny_splits(num_classes=2, n_per_class=6)
    members = splits.train
    pick = [int((members.labels == c).nonzero()[0]) for c in range(2)]  # one real image of each class
    images = splits.normalize(members.images[pick]).clone()
    if init == "noise":
        images = torch.randn_like(images)
    syn = SyntheticSet(images=images, labels=torch.arange(2), ipc=1, class_names=splits.class_names,
                       mean=splits.mean, std=splits.std,
                       init_ids=[members.ids[i] for i in pick] if init == "real" else ["", ""])
    from raydd.models.init import build_seeded

    net = build_seeded("convnet3", 0, "cpu", channels=1, num_classes=2, image_size=(28, 28))
    stats, _ = memorisation(syn, members, splits.normalize, net, pool_size=None, queries_per_class=3, seed=0,
                            device=torch.device("cpu"))
    own = stats["pixel_l2"]["nearest_is_init_image_fraction"]
    # A copied real image is its own nearest neighbour; under noise init there is nothing to count.
    assert own == (1.0 if init == "real" else None)


# -- end to end ----------------------------------------------------------------------------------------
TINY_AUDIT = ["audit.epochs=1", "audit.real_epochs=2", "audit.shadow_iterations=1", "audit.nn_pool=6",
              "audit.nn_queries=3"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from raydd.config import build_config
    from raydd.distill import run_distillation

    root = tmp_path_factory.mktemp("audit")
    data = write_imagefolder(root / "data", n_train=8, n_test=4, size=16)
    cfg = build_config("quick", overrides={"device": "cpu", "data": {"name": str(data)},
                                           "distill": {"ipc": 1, "iterations": 2, "batch_real": 4}})
    run_distillation(cfg, str(root / "run"), show_progress=False)
    return root / "run"


@pytest.mark.timeout(120)
def test_audit_run_end_to_end_writes_every_figure(tiny_run):
    from raydd.audit import audit_command, format_audit_table

    result = audit_command(str(tiny_run), preset="quick", shadows=2, members=100, sets=TINY_AUDIT, no_ray=True,
                           quiet=True)
    saved = json.loads((tiny_run / "audit.json").read_text())
    assert saved["attacks"] == json.loads(json.dumps(result.attacks))
    for kind in ("synthetic", "real_members", "random_subset"):
        for attack in ("loss", "lira"):
            figures = saved["attacks"][kind][attack]
            assert set(figures) >= {"auc", "tpr@1%fpr", "tpr@0.1%fpr", "n_members", "n_nonmembers"}
            assert 0.0 <= figures["auc"] <= 1.0
            assert figures["n_members"] == figures["n_nonmembers"] == 12  # capped by the test split
    p = saved["protocol"]
    assert (p["audit_preset"], p["shadows"], p["members"], p["epochs"], p["real_epochs"]) == ("quick", 2, 12, 1, 2)
    assert {"seed", "shadow_iterations", "nonmembers_from"} <= set(p)
    near = saved["nearest"]
    assert 0.0 <= near["pixel_l2"]["fraction_closer_than_real_median"] <= 1.0
    assert near["pixel_l2"]["searched"] == 21 and near["feature_cosine"]["searched"] <= 6 + 3
    assert (tiny_run / "nn_pairs.png").read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads((tiny_run / "nn_pairs.json").read_text())["pairs"]) == 3
    scores = json.loads((tiny_run / "audit" / "scores.json").read_text())
    assert len(scores["ids"]) == 24 and len(scores["scores"]["synthetic"]["lira"][0]) == 24
    # Shadow sets are distilled by run_distillation into run directories of their own.
    assert (tiny_run / "audit" / "shadow-1" / "synthetic.safetensors").exists()
    table = format_audit_table(result)
    assert "synthetic set" in table and "real members" in table and "random real subset" in table
    # The grid job reads the same files back: one line naming the run beside its LiRA figures.
    grid = subprocess.run([sys.executable, "jobs/audit_grid.py", str(tiny_run)], capture_output=True, text=True,
                          cwd=Path(__file__).parents[1], check=True).stdout.splitlines()
    assert len(grid) == 3 and grid[2].startswith(f"| {tiny_run.parent / 'data'} | dm | real | — | 2 | ")
    assert f"{saved['attacks']['synthetic']['lira']['auc']:.3f} ± " in grid[2]
    assert f"| {saved['attacks']['real_members']['lira']['auc']:.3f} |" in grid[2]


def test_audit_config_layers_and_checks(tiny_run):
    from raydd.audit import audit_config
    from raydd.errors import ConfigError

    paper = audit_config(str(tiny_run), preset="paper")
    assert paper.audit.preset == "paper" and paper.audit.shadows >= 64
    assert paper.distill.iterations == 2  # the run's own sections never change
    cfg = audit_config(str(tiny_run), shadows=6, sets=["audit.variance=global"])
    assert (cfg.audit.shadows, cfg.audit.variance, cfg.audit.preset) == (6, "global", "quick")
    with pytest.raises(ConfigError):
        audit_config(str(tiny_run), shadows=1)
    with pytest.raises(ConfigError):
        audit_config(str(tiny_run), sets=["audit.variance=maybe"])


@pytest.mark.timeout(180)
def test_ray_runner_matches_the_in_process_runner(ray_local, tiny_run):
    """Independent jobs give the same models as Ray tasks as in this process (named seeds)."""
    from raydd.audit import audit_config, local_runner, ray_audit_runner
    from raydd.audit.population import draw_population
    from raydd.audit.workflow import plan_jobs
    from raydd.run_inputs import load_splits
    from raydd.rundir import RunDir
    from raydd.synthetic import SyntheticSet

    cfg = audit_config(str(tiny_run), shadows=2, sets=TINY_AUDIT)
    splits = load_splits(cfg)
    population = draw_population(splits, RunDir(str(tiny_run)).read_json("members.json")["ids"], 12, cfg.seed)
    syn = SyntheticSet.load(str(tiny_run))
    jobs = plan_jobs(cfg, syn, splits, population, shadow_halves(population.labels, 2, cfg.seed), str(tiny_run))
    jobs = [j for j in jobs if j.kind == "real_members"][:1]  # one worker to start: the test's main cost
    remote = ray_audit_runner(show_progress=False)(jobs, population)
    local = local_runner(torch.device("cpu"), show_progress=False)(jobs, population)
    for r, l in zip(remote, local):
        assert (r["kind"], r["role"], r["index"]) == (l["kind"], l["role"], l["index"])
        assert torch.allclose(r["logits"], l["logits"], atol=1e-3), (r["logits"] - l["logits"]).abs().max()


def test_audit_command_refuses_no_ray_with_an_address(tiny_run):
    from raydd.audit import audit_command
    from raydd.errors import RayddError

    with pytest.raises(RayddError, match="--no-ray"):
        audit_command(str(tiny_run), no_ray=True, address="127.0.0.1:6379")


def test_quick_audit_section_equals_the_defaults():
    """Run directories from before the audit section read it back as the defaults; they must resume under quick."""
    from raydd.config import AuditConfig, build_config

    assert build_config("quick").audit == AuditConfig()
