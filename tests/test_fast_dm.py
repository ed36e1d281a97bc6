"""The fast DM family: multi-formation, the real-feature bank, the trained model pool, the image optimiser.

Each part is held to a definition written out here (the bank's loss against a hand-built real mean,
a decoded tile against the interpolated crop), to class sharding (shards equal one process), and to
resume (a restored state continues bit for bit).
"""

import json

import pytest
import torch
import torch.nn.functional as F

from raydd.artifacts import MODEL_POOL
from raydd.config import DistillConfig, DMConfig, build_config
from raydd.distill import run_distillation
from raydd.errors import ConfigError, RunDirError
from raydd.formation import check_factor, decode, decoded_labels, encode
from raydd.methods import method_class
from raydd.methods.base import NetworkSpec
from raydd.methods.dm_setup import check_memory
from raydd.methods.model_pool import ResidentImages, TrainedPool, pool_fingerprint, train_pool
from raydd.realpool import RealPool
from raydd.seeding import derive_seed, generator
from raydd.synthetic import SyntheticSet
from tests.helpers import KillAt, Killed, step_shards_together, tiny_splits

DEVICE = torch.device("cpu")


@pytest.fixture(scope="module")
def splits():
    return tiny_splits()


def make(splits, fast: DMConfig, classes=None, trained=None, **cfg_kwargs):
    cfg = DistillConfig(method="dm", ipc=2, iterations=4, batch_real=8, **cfg_kwargs)
    pool = RealPool.from_data(splits, splits.train, DEVICE)
    syn = SyntheticSet.initialise(pool, ipc=2, init="real", seed=0, class_names=splits.class_names,
                                  mean=splits.mean, std=splits.std, formation=fast.formation)
    dist = method_class("dm")(cfg, pool, syn, classes=classes, seed=0, device=DEVICE, section=fast,
                              model_pool=trained)
    return dist, pool, syn


def small_pool(splits, fast, source=None):
    source = source or ResidentImages(RealPool.from_data(splits, splits.train, DEVICE))
    spec = NetworkSpec("convnet3", 1, 3, (28, 28))
    return train_pool(fast, spec, source, 0, DEVICE, "color_crop_cutout_flip_scale_rotate", True)


# -- multi-formation ---------------------------------------------------------------------------------
def test_decoding_upsamples_each_tile_in_row_major_order():
    x = torch.randn(3, 2, 8, 6, requires_grad=True)
    out = decode(x, 2)
    assert out.shape == (12, 2, 8, 6)
    for i in range(3):
        for a in range(2):
            for b in range(2):
                tile = x[i : i + 1, :, 4 * a : 4 * a + 4, 3 * b : 3 * b + 3]
                expected = F.interpolate(tile, size=(8, 6), mode="bilinear", align_corners=False)
                assert torch.allclose(out[i * 4 + a * 2 + b], expected[0])
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert decoded_labels(torch.tensor([0, 1]), 2).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_encoding_packs_area_downsampled_images_that_decode_back_in_place():
    full = torch.randn(8, 1, 8, 8)
    stored = encode(full, 2)
    assert stored.shape == (2, 1, 8, 8)
    small = F.interpolate(full, size=(4, 4), mode="area")
    assert torch.allclose(stored[1, :, 4:, :4], small[6])  # image 6 = stored 1, tile (1, 0)
    # Decoding a packed constant image gives the constant back: tiles land where they came from.
    const = torch.arange(8.0).view(8, 1, 1, 1).expand(8, 1, 8, 8)
    assert torch.allclose(decode(encode(const, 2), 2), const)


def test_a_multi_formation_set_trains_networks_on_its_decoded_images(splits):
    pool = RealPool.from_data(splits, splits.train, DEVICE)
    syn = SyntheticSet.initialise(pool, ipc=2, init="real", seed=0, class_names=splits.class_names,
                                  mean=splits.mean, std=splits.std, formation=2)
    images, labels, _ = syn.training_set()
    assert syn.images.shape == (6, 1, 28, 28) and images.shape == (24, 1, 28, 28)
    assert labels.tolist() == [c for c in range(3) for _ in range(8)]
    assert len(syn.init_ids) == 24 and len(set(syn.init_ids)) == 24  # four distinct real images per stored one
    assert syn.meta["formation"] == 2


# -- the bank ------------------------------------------------------------------------------------------
def test_a_bank_step_matches_stored_real_means_through_the_entry_network_and_draw(splits):
    fast = DMConfig(bank=True, networks=2, draws=2, bank_real=8)
    dist, pool, _ = make(splits, fast)
    before = dist.images.detach().clone()
    entry = torch.randperm(4, generator=generator(0, "bank-entry", 0))[0].item()
    m, r = divmod(entry, 2)
    net = NetworkSpec("convnet3", 1, 3, (28, 28)).build(derive_seed(0, "bank-net", 0, m), DEVICE)
    net = net.to(memory_format=torch.channels_last)  # as DM runs its networks (same math, other summation order)
    draw = dist.dsa.draw(3, (28, 28), generator(0, "bank-dsa", 0, m, r))
    syn = before.clone().requires_grad_(True)
    expected = 0.0
    for c in range(3):
        index, _ = pool.sample_indices([c], 8, 0, "bank-real", 0, m, r)
        real = dist.dsa.apply(pool.images[index], draw, groups=torch.full((len(index),), c))
        with torch.no_grad():
            real_mean = net.embed(real).mean(0)
        s = dist.dsa.apply(syn[2 * c : 2 * c + 2], draw, groups=torch.full((2,), c))
        expected = expected + ((real_mean - net.embed(s).mean(0)) ** 2).sum()
    expected.backward()
    loss = dist.step(0)["loss"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert torch.allclose(dist.images.detach(), before - syn.grad, atol=1e-5)  # SGD lr 1, first step


@pytest.mark.parametrize("fast", [
    DMConfig(bank=True, networks=2, draws=2, bank_real=6, refresh_every=2, entries_per_step=2),
    DMConfig(bank=True, networks=2, draws=1, bank_real=6, pool="trained", pool_trainings=2, pool_steps=2,
             formation=2, optimizer="adam", schedule="cosine"),
], ids=["random-refreshed", "trained-formation-adam"])
def test_bank_shards_compute_what_one_process_computes(splits, fast):
    trained = small_pool(splits, fast) if fast.pool == "trained" else None
    whole, _, _ = make(splits, fast, trained=trained, lr_img=0.1)
    first, _, _ = make(splits, fast, classes=[0, 2], trained=trained, lr_img=0.1)
    second, _, _ = make(splits, fast, classes=[1], trained=trained, lr_img=0.1)
    combined = step_shards_together(whole, [first, second], 4)
    assert torch.allclose(combined, whole.images.detach(), atol=1e-5)
    assert not torch.equal(whole.images.detach(), make(splits, fast, trained=trained)[0].images.detach())


def test_a_restored_adam_cosine_bank_run_continues_bit_for_bit(splits):
    fast = DMConfig(bank=True, networks=2, draws=2, bank_real=6, refresh_every=3, optimizer="adam",
                    schedule="cosine")
    straight, _, _ = make(splits, fast, lr_img=0.05)
    for it in range(5):
        straight.step(it)
    first, _, _ = make(splits, fast, lr_img=0.05)
    for it in range(2):
        first.step(it)
    state = first.state_dict()
    assert {"images_exp_avg", "images_exp_avg_sq", "images_step"} <= set(state)
    assert all(v.shape[0] == 6 for v in state.values())  # per row, so Ray shards can assemble them
    resumed, _, _ = make(splits, fast, lr_img=0.05)
    resumed.load_state_dict(state)
    for it in range(2, 5):
        resumed.step(it)
    assert torch.equal(straight.images.detach(), resumed.images.detach())


def test_a_bank_beyond_the_memory_limit_is_refused_with_its_size():
    cfg = build_config("quick", sets=["dm.bank=true", "dm.networks=50", "dm.draws=10", "dm.max_bank_gb=0.01"])
    with pytest.raises(ConfigError, match=r"GiB.*dm.networks 50 x dm.draws 10 x 10 classes x 2048 features"):
        check_memory(cfg, channels=1, num_classes=10, image_size=(28, 28))
    check_memory(build_config("quick", sets=["dm.bank=true"]), channels=1, num_classes=10, image_size=(28, 28))


def test_fast_dm_settings_are_checked_where_they_are_read():
    with pytest.raises(ConfigError, match="dm.pool=trained needs dm.bank"):
        build_config("quick", sets=["dm.pool=trained", "dm.bank=false"])
    with pytest.raises(ConfigError, match="belong to the DM method"):
        build_config("quick", sets=["distill.method=dsa", "dm.bank=true"])
    with pytest.raises(ConfigError, match="dm.optimizer"):
        build_config("quick", sets=["dm.optimizer=lbfgs"])
    with pytest.raises(ConfigError, match="divisible by 2, got 27x28"):
        check_factor(2, (27, 28))


# -- the trained pool ----------------------------------------------------------------------------------
def test_the_trained_pool_is_seeded_stored_and_refused_when_it_belongs_to_another_run(splits, tmp_path):
    fast = DMConfig(bank=True, pool="trained", pool_trainings=2, pool_steps=3)
    a, b = small_pool(splits, fast), small_pool(splits, fast)
    assert all(torch.equal(a.trained[i][k], b.trained[i][k]) for i in range(2) for k in a.trained[i])
    assert not torch.equal(a.trained[0]["classifier.weight"], a.initial[0]["classifier.weight"])
    assert all(torch.equal(v, a.initial[1][k]) for k, v in a.interpolated(1, 0.0).items())
    spec = NetworkSpec("convnet3", 1, 3, (28, 28))
    fingerprint = pool_fingerprint(fast, spec, 0, "tiny")
    path = str(tmp_path / MODEL_POOL)
    a.save(path, fingerprint)
    back = TrainedPool.load(path, fingerprint)
    assert all(torch.equal(back.trained[i][k], a.trained[i][k]) for i in range(2) for k in a.trained[i])
    with pytest.raises(RunDirError, match="another configuration"):
        TrainedPool.load(path, pool_fingerprint(DMConfig(pool_steps=4), spec, 0, "tiny"))
    (tmp_path / "cut.safetensors").write_bytes(open(path, "rb").read()[:100])
    with pytest.raises(RunDirError, match="cut short or not a raydd model pool"):
        TrainedPool.load(str(tmp_path / "cut.safetensors"), fingerprint)


class StretchesOf(ResidentImages):
    """Serves several steps' batches per fetch, as a preprocessed source does, and counts the fetches."""

    def __init__(self, real, steps):
        super().__init__(real)
        self.steps_per_fetch, self.fetched = steps, []

    def fetch(self, index):
        self.fetched.append(len(index))
        return super().fetch(index)


def test_the_trained_pool_does_not_depend_on_how_many_steps_one_fetch_serves(splits):
    fast = DMConfig(bank=True, pool="trained", pool_trainings=2, pool_steps=5)
    one_step = small_pool(splits, fast)
    stretched = StretchesOf(RealPool.from_data(splits, splits.train, DEVICE), steps=2)
    by_stretch = small_pool(splits, fast, stretched)
    batch = min(256, len(splits.train))
    assert stretched.fetched == [2 * batch, 2 * batch, batch] * 2  # 5 steps: 2 + 2 + 1, per training
    assert all(torch.equal(one_step.trained[i][k], by_stretch.trained[i][k]) for i in range(2) for k in one_step.trained[i])


# -- through the driver --------------------------------------------------------------------------------
def fast_config(**distill):
    return build_config("quick", overrides={
        "device": "cpu",
        "distill": {"ipc": 2, "iterations": 6, "batch_real": 8, "checkpoint_every": 2, "log_every": 1,
                    "snapshots": [1, 4], **distill},
        "dm": {"bank": True, "networks": 2, "draws": 2, "bank_real": 8, "pool": "trained", "pool_trainings": 1,
               "pool_steps": 2, "formation": 2, "optimizer": "adam", "schedule": "cosine"},
        "eval": {"models": 1, "epochs": 2}})


def test_a_fast_dm_run_resumes_to_the_uninterrupted_result_and_keeps_its_snapshots(splits, tmp_path):
    cfg = fast_config(lr_img=0.05)
    straight = run_distillation(cfg, str(tmp_path / "a"), splits=splits, show_progress=False)
    with pytest.raises(Killed):
        run_distillation(cfg, str(tmp_path / "b"), splits=splits, show_progress=False, backend=KillAt(5))
    resumed = run_distillation(cfg, str(tmp_path / "b"), splits=splits, show_progress=False, resume=True)
    assert torch.equal(straight.images, resumed.images)
    assert (tmp_path / "b" / MODEL_POOL).exists()  # trained once, read back on resume
    for run in ("a", "b"):
        snaps = sorted(p.name for p in (tmp_path / run / "snapshots").iterdir())
        assert snaps == ["iteration-000001", "iteration-000004"]
    snap = SyntheticSet.load(str(tmp_path / "a" / "snapshots" / "iteration-000004"))
    assert snap.meta["iterations"] == 4 and snap.meta["distill_seconds"] > 0 and snap.formation == 2
    with pytest.raises(RunDirError, match="cosine decays over the run's length"):
        longer = fast_config(lr_img=0.05, iterations=8)
        run_distillation(longer, str(tmp_path / "a"), splits=splits, show_progress=False, resume=True)
    meta = json.loads((tmp_path / "a" / "metadata.json").read_text())
    assert meta["formation"] == 2 and meta["distill_seconds"] >= snap.meta["distill_seconds"]
    assert meta["model_pool_seconds"] > 0
