"""DM and DC/DSA against their reference formulations; class sharding; the image update."""

import pytest
import torch
import torch.nn.functional as F

from raydd.config import DistillConfig
from raydd.methods import method_class
from raydd.methods.gradmatch import reference_loops
from raydd.methods.losses import gradient_distance
from raydd.models.init import build_seeded
from raydd.realpool import RealPool
from raydd.seeding import derive_seed, generator
from raydd.synthetic import SyntheticSet
from tests.helpers import step_shards_together, tiny_splits

DEVICE = torch.device("cpu")


@pytest.fixture(scope="module")
def splits():
    return tiny_splits()


def make(splits, method, classes=None, **cfg_kwargs):
    cfg = DistillConfig(method=method, ipc=2, iterations=3, batch_real=8, **cfg_kwargs)
    pool = RealPool.from_data(splits, splits.train, DEVICE)
    syn = SyntheticSet.initialise(pool, ipc=2, init="real", seed=0, class_names=splits.class_names,
                                  mean=splits.mean, std=splits.std)
    return method_class(method)(cfg, pool, syn, classes=classes, seed=0, device=DEVICE), pool, syn


def test_dm_step_equals_the_per_class_reference_loop(splits):
    dist, pool, syn = make(splits, "dm")
    before = dist.images.detach().clone()
    # Reference: a loop over classes, each with its own real batch, same network, same Siamese draw.
    net = build_seeded("convnet3", derive_seed(0, "net", 0), DEVICE, channels=1, num_classes=3, image_size=(28, 28))
    draw = dist.dsa.draw(3, (28, 28), generator(0, "dsa", 0))
    expected = 0.0
    syn_images = before.clone().requires_grad_(True)
    for c in range(3):
        index, _ = pool.sample_indices([c], 8, 0, "real", 0)
        groups_real = torch.full((len(index),), c)
        real = dist.dsa.apply(pool.images[index], draw, groups=groups_real)
        s = dist.dsa.apply(syn_images[c * 2 : c * 2 + 2], draw, groups=torch.full((2,), c))
        with torch.no_grad():
            real_mean = net.embed(real).mean(0)
        expected = expected + ((real_mean - net.embed(s).mean(0)) ** 2).sum()
    expected.backward()
    metrics = dist.step(0)
    assert metrics["loss"].item() == pytest.approx(expected.item(), rel=1e-4)
    # First SGD step with momentum 0.5 and lr 1 is a plain gradient step.
    assert torch.allclose(dist.images.detach(), before - 1.0 * syn_images.grad, atol=1e-5)


def test_dm_class_shards_compute_what_one_process_computes(splits):
    whole, _, _ = make(splits, "dm")
    first, _, _ = make(splits, "dm", classes=[0, 2])
    second, _, _ = make(splits, "dm", classes=[1])
    combined = step_shards_together(whole, [first, second], 3)
    assert torch.allclose(combined, whole.images.detach(), atol=1e-5)
    # Shards leave the classes they do not own untouched.
    assert not torch.equal(first.images.detach()[second.own_rows], whole.images.detach()[second.own_rows])


def test_dsa_matching_loss_equals_reference_definition(splits):
    dist, pool, _ = make(splits, "dsa", outer_loop=1, inner_loop=1)
    net = dist.net_spec.build(derive_seed(0, "net", 0), DEVICE)
    params = list(net.parameters())
    draw = dist.dsa.draw(3, (28, 28), generator(0, "dsa", 0, 0))
    expected = 0.0
    for c in range(3):
        index, _ = pool.sample_indices([c], 8, 0, "real", 0, 0)
        real = dist.dsa.apply(pool.images[index], draw, groups=torch.full((len(index),), c))
        syn = dist.dsa.apply(dist.images[c * 2 : c * 2 + 2], draw, groups=torch.full((2,), c))
        gr = torch.autograd.grad(F.cross_entropy(net(real), torch.full((len(index),), c)), params)
        gs = torch.autograd.grad(F.cross_entropy(net(syn), torch.full((2,), c)), params, create_graph=True)
        expected = expected + gradient_distance([g.detach() for g in gr], list(gs))
    got = dist.matching_loss(net, 0, 0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-4)
    assert got.requires_grad


def test_dc_uses_no_augmentation_and_reference_loops(splits):
    dist, _, _ = make(splits, "dc")
    assert dist.dsa is None
    assert (dist.outer_loop, dist.inner_loop) == reference_loops(2) == (1, 1)
    assert reference_loops(10) == (10, 50) and reference_loops(50) == (50, 10)
    before = dist.images.detach().clone()
    metrics = dist.step(0)
    assert torch.isfinite(metrics["loss"]) and not torch.equal(before, dist.images.detach())


def test_gradmatch_inner_loop_trains_the_network(splits):
    dist, _, _ = make(splits, "dsa", outer_loop=2, inner_loop=3)
    for it in range(2):
        assert torch.isfinite(dist.step(it)["loss"])


def test_dm_real_pass_in_chunks_gives_the_unchunked_loss_and_update(splits):
    whole, _, _ = make(splits, "dm", real_chunk=None)
    chunked, _, _ = make(splits, "dm", real_chunk=5)  # 3 classes x 8 real images: chunks of 5, 5, 5, 5, 4
    a, b = whole.step(0), chunked.step(0)
    assert torch.allclose(a["loss"], b["loss"], rtol=1e-5)
    assert torch.allclose(whole.images.detach(), chunked.images.detach(), atol=1e-6)
