"""The speed benchmark's reference formulations compute what raydd computes; channels-last changes nothing."""

from dataclasses import replace

import pytest
import torch

from jobs.benchmark_speed import build_pair
from jobs.speed_reference import ref_evaluate
from raydd.config import build_config
from raydd.evaluate import EvalJob, accuracy, train_network
from raydd.models.init import build_seeded, channels_last
from tests.helpers import tiny_splits

DEVICE = torch.device("cpu")


@pytest.fixture(scope="module")
def splits():
    return tiny_splits()


def config(method, loops=None, **distill):
    return build_config("quick", overrides={"distill": {"method": method, "ipc": 2, "batch_real": 8, **distill},
                                            "gradmatch": loops or {}, "device": "cpu"})


@pytest.mark.parametrize("method,loops,extra", [("dm", None, {}), ("dsa", {"outer_loop": 2, "inner_loop": 2}, {}),
                                                ("dc", {"outer_loop": 2, "inner_loop": 1}, {}),
                                                ("dc", {"outer_loop": 2, "inner_loop": 1}, {"model": "convnet_bn"})])
def test_reference_loop_gives_our_loss_and_images(splits, method, loops, extra):
    ours, ref, _ = build_pair(config(method, loops, **extra), splits, DEVICE)
    start = ours.images.detach().clone()
    for it in range(2):
        ours_loss = float(ours.step(it)["loss"])
        ref_loss = ref.step(it, check=True)
        assert ours_loss == pytest.approx(ref_loss, rel=1e-4, abs=1e-6)
        # The image update is a difference of nearly equal means (DM) or a cosine of gradients, so
        # channels-last float reassociation shows as ~1e-4..1e-3 of the update's norm: compare that way.
        ours_move, ref_move = ours.images.detach() - start, ref.image_syn.detach() - start
        assert float((ours_move - ref_move).norm() / ref_move.norm()) < 2e-3


def test_reference_evaluation_trains_the_same_network(splits):
    cfg = config("dm")
    job = EvalJob(splits.normalize(splits.train.images)[:12], splits.train.labels[:12],
                  splits.normalize(splits.test.images), splits.test.labels, "convnet3", 3,
                  replace(cfg.eval, epochs=4, batch=5), seed=0, index=0)
    ours = train_network(job, DEVICE)
    ref, ref_acc = ref_evaluate(job, DEVICE, check=True)
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert accuracy(ours, job.test_images, job.test_labels, 1024, DEVICE) == pytest.approx(ref_acc)


@pytest.mark.parametrize("model", ["convnet3", "convnet_bn", "alexnet"])
def test_channels_last_gives_the_same_outputs_and_gradients(model):
    shape = dict(channels=3, num_classes=4, image_size=(32, 32))
    # In float64: in float32 the two layouts' rounding differences can flip a ReLU whose input is near 0,
    # which changes a gradient by far more than any tolerance (this test failed now and then for that).
    plain = build_seeded(model, 7, DEVICE, **shape).double()
    fast = channels_last(build_seeded(model, 7, DEVICE, **shape).double())
    assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 32, 32, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (6,), generator=g)
    outs, grads = [], []
    for net in (plain, fast):
        xi = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(net(xi), y)
        g = torch.autograd.grad(loss, [xi, *net.parameters()])
        outs.append(net(x).detach())
        grads.append(g)
    assert torch.allclose(outs[0], outs[1], rtol=1e-4, atol=1e-5)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)
