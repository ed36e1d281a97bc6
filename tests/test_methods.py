"""DM and DC/DSA against their reference formulations; class sharding; the image update."""

import pytest
import torch
import torch.nn.functional as F

from raydd.methods import method_class
from raydd.methods.gradmatch import BN_IMAGES_PER_CLASS, batchnorm_layers, reference_loops
from raydd.methods.losses import gradient_distance
from raydd.models.init import build_seeded
from raydd.realpool import RealPool
from raydd.seeding import derive_seed, generator
from raydd.synthetic import SyntheticSet
from tests.helpers import ThreadedExchange, method_configs, step_shards_in_threads, step_shards_together, tiny_splits

DEVICE = torch.device("cpu")
BN_MODEL = "convnet_bn"


@pytest.fixture(scope="module")
def splits():
    return tiny_splits()


def make(splits, method, classes=None, share_rows=None, **cfg_kwargs):
    cfg, section = method_configs(method, ipc=2, iterations=3, batch_real=8, **cfg_kwargs)
    pool = RealPool.from_data(splits, splits.train, DEVICE)
    syn = SyntheticSet.initialise(pool, ipc=2, init="real", seed=0, class_names=splits.class_names,
                                  mean=splits.mean, std=splits.std)
    hook = {} if share_rows is None else {"share_rows": share_rows}
    return (method_class(method)(cfg, pool, syn, classes=classes, seed=0, device=DEVICE, section=section, **hook),
            pool, syn)


def make_worker(splits, method, classes, share_rows, **cfg_kwargs):
    """A Ray Train worker's distiller: only its classes' real images, other synthetic rows zero until shared."""
    cfg, section = method_configs(method, ipc=2, iterations=3, batch_real=8, **cfg_kwargs)
    mine = torch.cat([splits.train.indices_by_class()[c] for c in classes]).sort().values
    pool = RealPool.from_data(splits, splits.train.subset(mine), DEVICE)
    syn = SyntheticSet.initialise(pool, ipc=2, init="real", seed=0, class_names=splits.class_names,
                                  mean=splits.mean, std=splits.std, classes=classes)
    return method_class(method)(cfg, pool, syn, classes=classes, seed=0, device=DEVICE, share_rows=share_rows,
                                section=section)


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
    assert set(metrics) == {"loss"}  # one term: the loss is the gradient distance itself


def test_gradmatch_inner_loop_trains_the_network(splits):
    dist, _, _ = make(splits, "dsa", outer_loop=2, inner_loop=3)
    for it in range(2):
        assert torch.isfinite(dist.step(it)["loss"])


def test_batchnorm_freeze_sets_the_statistics_of_16_real_images_per_class():
    splits = tiny_splits(n_per_class=20)
    dist, pool, _ = make(splits, "dc", model=BN_MODEL)
    net = dist.build_network(0)
    dist.freeze_batchnorm(net, 0, 0)
    layers = batchnorm_layers(net)
    assert len(layers) == 3 and not any(layer.training for layer in layers)
    # Independently: the same fresh network, the inputs of each batch-norm layer in a train-mode pass of
    # 16 images of every class; from fresh statistics (mean 0, var 1) one update with momentum 0.1 gives
    # 0.1 * batch mean and 0.9 + 0.1 * unbiased batch variance.
    batch = torch.cat([pool.images[pool.sample_indices([c], 16, 0, "bn", 0, 0)[0]] for c in range(3)])
    fresh = dist.build_network(0).train()
    inputs = []
    for layer in batchnorm_layers(fresh):
        layer.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach()))
    with torch.no_grad():
        fresh(batch)
    for layer, x in zip(layers, inputs, strict=True):
        assert int(layer.num_batches_tracked) == 1
        assert torch.allclose(layer.running_mean, 0.1 * x.mean(dim=(0, 2, 3)), atol=1e-6)
        assert torch.allclose(layer.running_var, 0.9 + 0.1 * x.var(dim=(0, 2, 3), unbiased=True), rtol=1e-5)


def test_batchnorm_batch_takes_every_image_of_a_class_with_fewer_than_16(splits):
    dist, pool, _ = make(splits, "dc", model=BN_MODEL)  # 12 images per class
    batch = dist.batchnorm_batch(0, 0)
    assert BN_IMAGES_PER_CLASS == 16 and batch.shape[0] == 3 * 12
    for c in range(3):  # class order; within a class, each of its images once
        block, own = batch[c * 12 : (c + 1) * 12], pool.images[pool.class_indices[c]]
        same = (block[:, None] == own[None]).flatten(2).all(dim=2)
        assert torch.equal(same.sum(dim=0), torch.ones(12, dtype=torch.int64))


def test_gradients_are_matched_with_frozen_batchnorm(splits):
    dist, pool, _ = make(splits, "dc", model=BN_MODEL, outer_loop=2, inner_loop=1)
    modes = {"matching": [], "inner": []}

    def spy(name, method):
        def call(net, *args):
            modes[name].append([layer.training for layer in batchnorm_layers(net)])
            return method(net, *args)
        return call

    dist.matching_loss = spy("matching", dist.matching_loss)
    dist.train_network = spy("inner", dist.train_network)
    dist.step(0)
    assert modes["matching"] == [[False] * 3] * 2  # both outer steps match in eval mode
    assert modes["inner"] == [[False] * 3]  # the network then trains (train_network switches to train mode)
    # Frozen statistics make a sample's output independent of the batch around it: the per-class real
    # gradient is that of per-sample losses, whatever else is in the batch.
    net = dist.build_network(0)
    x = pool.images[:10]
    with torch.no_grad():
        in_batch_train = net(x)[:4]
        dist.freeze_batchnorm(net, 0, 0)
        alone, in_batch = net(x[:4]), net(x)[:4]
    assert torch.allclose(alone, in_batch, atol=1e-5)
    assert not torch.allclose(in_batch_train, in_batch, atol=1e-3)


def test_batchnorm_class_shards_compute_what_one_process_computes(splits):
    # Each worker holds only its classes' real images, yet the statistics need 16 images of every class.
    whole, _, _ = make(splits, "dsa", model=BN_MODEL, outer_loop=2, inner_loop=1)
    exchange = ThreadedExchange(2)
    shards = [make_worker(splits, "dsa", classes, exchange.hook(rank), model=BN_MODEL, outer_loop=2, inner_loop=1)
              for rank, classes in enumerate([[0, 2], [1]])]
    combined = step_shards_in_threads(whole, shards, exchange, 2)
    assert torch.allclose(combined, whole.images.detach(), atol=1e-5)


def test_networks_without_batchnorm_skip_the_freeze(splits):
    dist, _, _ = make(splits, "dc")
    net = dist.build_network(0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    dist.batchnorm_batch = None  # would fail if called
    dist.freeze_batchnorm(net, 0, 0)
    assert not batchnorm_layers(net) and net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_dm_real_pass_in_chunks_gives_the_unchunked_loss_and_update(splits):
    whole, _, _ = make(splits, "dm", real_chunk=None)
    chunked, _, _ = make(splits, "dm", real_chunk=5)  # 3 classes x 8 real images: chunks of 5, 5, 5, 5, 4
    a, b = whole.step(0), chunked.step(0)
    assert torch.allclose(a["loss"], b["loss"], rtol=1e-5)
    assert torch.allclose(whole.images.detach(), chunked.images.detach(), atol=1e-6)
