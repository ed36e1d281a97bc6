"""What every registered method must do, run over the registry (a new method gets these tests for free)."""

import dataclasses

import pytest
import torch

from raydd.methods import available_methods, method_class
from raydd.realpool import RealPool
from raydd.synthetic import SyntheticSet
from tests.helpers import method_configs, tiny_splits

DEVICE = torch.device("cpu")
METHODS = available_methods()


@pytest.fixture(scope="module")
def splits():
    return tiny_splits()


SHORT_LOOPS = {"outer_loop": 2, "inner_loop": 1}  # DC/DSA's loops cut short, for a method whose section has them


def make(splits, method, classes=None):
    section_type = method_class(method).section_type
    own = {f.name for f in dataclasses.fields(section_type)} if section_type else set()
    short = {k: v for k, v in SHORT_LOOPS.items() if k in own}
    cfg, section = method_configs(method, ipc=2, iterations=3, batch_real=8, **short)
    pool = RealPool.from_data(splits, splits.train, DEVICE)
    syn = SyntheticSet.initialise(pool, ipc=2, init="real", seed=0, class_names=splits.class_names,
                                  mean=splits.mean, std=splits.std)
    return method_class(method)(cfg, pool, syn, classes=classes, seed=0, device=DEVICE, section=section)


def test_the_registry_holds_the_reference_methods():
    assert {"dm", "dc", "dsa"} <= set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_a_step_reports_a_finite_loss_and_moves_only_owned_images(splits, method):
    dist = make(splits, method, classes=[0, 2])
    before = dist.images.detach().clone()
    metrics = dist.step(0)
    assert "loss" in metrics and all(torch.isfinite(v).all() for v in metrics.values())
    moved = (dist.images.detach() != before).flatten(1).any(1)
    assert moved[dist.own_rows].all() and not moved[~torch.isin(torch.arange(len(before)), dist.own_rows)].any()


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_gives_the_same_images(splits, method):
    a, b = make(splits, method), make(splits, method)
    for it in range(2):
        a.step(it)
        b.step(it)
    assert torch.equal(a.images.detach(), b.images.detach())


@pytest.mark.parametrize("method", METHODS)
def test_a_restored_state_continues_bit_for_bit(splits, method):
    a = make(splits, method)
    a.step(0)
    b = make(splits, method)
    b.load_state_dict(a.state_dict())
    a.step(1)
    b.step(1)
    assert torch.equal(a.images.detach(), b.images.detach())


@pytest.mark.parametrize("method", METHODS)
def test_state_is_row_leading_so_shards_can_be_assembled(splits, method):
    dist = make(splits, method)
    dist.step(0)
    rows = dist.images.shape[0]
    assert all(t.shape[0] == rows for t in dist.state_dict().values())
