"""Caption-aware choice of the real images that start the synthetic set (raydd/init_choice.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_splits
from raydd.config import build_config
from raydd.distill import initial_state
from raydd.errors import ConfigError
from raydd.init_choice import choose_init_rows, cluster_representatives, most_typical
from raydd.modalities import CaptionEmbeddings
from raydd.realpool import RealPool
from raydd.seeding import generator
from raydd.synthetic import SyntheticSet


def clustered_embeddings(sizes: list[int], dim: int = 8, spread: float = 0.05, seed: int = 0) -> torch.Tensor:
    """Unit vectors in tight groups around orthogonal directions (group k around axis k)."""
    g = torch.Generator().manual_seed(seed)
    groups = [torch.eye(dim)[k] + spread * torch.randn(n, dim, generator=g) for k, n in enumerate(sizes)]
    return F.normalize(torch.cat(groups), dim=1)


def test_most_typical_takes_the_rows_nearest_the_mean_direction():
    emb = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.7, 0.7], [1.0, 0.05]]), dim=1)
    centre = F.normalize(emb.mean(0), dim=0)
    expected = sorted(range(len(emb)), key=lambda i: -float(emb[i] @ centre))[:2]
    assert most_typical(emb, 2).tolist() == expected


def test_most_typical_breaks_ties_by_row_order():
    emb = F.normalize(torch.ones(5, 3), dim=1)  # five identical captions
    assert most_typical(emb, 3).tolist() == [0, 1, 2]


def test_cluster_representatives_take_one_image_from_each_caption_group():
    sizes = [30, 5, 12]  # a large group must not take every pick
    emb = clustered_embeddings(sizes)
    group = torch.tensor([k for k, n in enumerate(sizes) for _ in range(n)])
    picked = cluster_representatives(emb, 3, generator(0, "test"))
    assert sorted(group[picked].tolist()) == [0, 1, 2]
    assert len(set(picked.tolist())) == 3
    # the typical choice, by contrast, stays inside the largest group
    assert set(group[most_typical(emb, 3)].tolist()) == {0}


def test_cluster_representatives_are_distinct_even_with_repeated_captions():
    emb = F.normalize(torch.ones(6, 4), dim=1)
    picked = cluster_representatives(emb, 4, generator(1, "test"))
    assert len(set(picked.tolist())) == 4


@pytest.mark.parametrize("choice", ["caption_typical", "caption_cover"])
def test_choice_is_seeded_per_class_and_shard_independent(choice):
    splits = tiny_splits(num_classes=3, n_per_class=12)
    emb = clustered_embeddings([len(splits.train)], dim=6, spread=0.5, seed=3)
    pool = RealPool.from_data(splits, splits.train, torch.device("cpu"), caption_emb=emb)
    whole = [choose_init_rows(pool, c, 4, 0, choice, emb) for c in range(3)]
    again = [choose_init_rows(pool, c, 4, 0, choice, emb) for c in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(whole, again))
    for c, rows in enumerate(whole):
        assert len(set(rows.tolist())) == 4
        assert (pool.labels[rows] == c).all()

    def init(classes):
        return SyntheticSet.initialise(pool, ipc=4, init="real", seed=0, class_names=splits.class_names,
                                       mean=splits.mean, std=splits.std, classes=classes, choice=choice,
                                       choice_emb=emb)

    one, shard = init(None), init([1])
    rows = one.class_rows(1)
    assert torch.equal(one.images[rows], shard.images[rows])
    assert one.init_ids[rows] == shard.init_ids[rows]


def test_the_run_picks_by_its_captions_and_records_the_choice():
    splits = tiny_splits(num_classes=3, n_per_class=12)
    n = len(splits.train)
    emb = clustered_embeddings([n], dim=6, spread=0.5, seed=5)
    captions = CaptionEmbeddings(emb, None, None, False, "minilm")
    cfg = build_config(overrides={"distill": {"ipc": 2, "init_choice": "caption_typical"}, "mm": {"cc": True}})
    state = initial_state(cfg, splits, torch.device("cpu"), captions)
    assert state.syn.meta["init_choice"] == "caption_typical"
    for c in range(3):
        rows = splits.train.indices_by_class()[c]
        expected = {splits.train.ids[int(rows[i])] for i in most_typical(emb[rows], 2).tolist()}
        assert set(state.syn.init_ids[c * 2:(c + 1) * 2]) == expected
    random = initial_state(build_config(overrides={"distill": {"ipc": 2}, "mm": {"cc": True}}), splits,
                           torch.device("cpu"), captions)
    assert random.syn.init_ids != state.syn.init_ids


def test_a_caption_choice_on_a_dataset_without_captions_names_the_dataset():
    cfg = build_config(overrides={"distill": {"init_choice": "caption_cover"}})
    with pytest.raises(ConfigError, match="init_choice=caption_cover.*'tiny' has none"):
        initial_state(cfg, tiny_splits(), torch.device("cpu"), None)


def test_config_refuses_an_unknown_choice_and_a_choice_under_noise_init():
    with pytest.raises(ConfigError, match="distill.init_choice must be one of random, caption_typical, caption_cover"):
        build_config(overrides={"distill": {"init_choice": "best"}})
    with pytest.raises(ConfigError, match="init_choice=caption_typical.*distill.init=noise"):
        build_config(overrides={"distill": {"init_choice": "caption_typical", "init": "noise"}})
    assert build_config().distill.init_choice == "random"
