"""Losses against values computed by hand and against the per-class reference formulation."""

import math

import pytest
import torch

from raydd.methods.losses import (
    GRADIENT_COSINE_EPS,
    class_means,
    gradient_distance,
    layer_gradient_distance,
    mean_feature_distance,
)


def test_mean_feature_distance_by_hand():
    real = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    syn = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    # (1 + 4) + (9 + 16)
    assert mean_feature_distance(real, syn).item() == pytest.approx(30.0)


def test_class_means_handles_unequal_group_sizes():
    feats = torch.tensor([[1.0, 1.0], [3.0, 5.0], [10.0, 0.0], [2.0, 2.0], [4.0, 4.0], [6.0, 6.0]])
    groups = torch.tensor([0, 0, 1, 2, 2, 2])
    means = class_means(feats, groups, 3)
    expected = torch.tensor([[2.0, 3.0], [10.0, 0.0], [4.0, 4.0]])
    assert torch.allclose(means, expected)


def test_batched_dm_loss_equals_per_class_loop():
    torch.manual_seed(0)
    feats_real = torch.randn(3 * 7, 5)
    feats_syn = torch.randn(3 * 2, 5)
    g_real = torch.arange(3).repeat_interleave(7)
    g_syn = torch.arange(3).repeat_interleave(2)
    batched = mean_feature_distance(class_means(feats_real, g_real, 3), class_means(feats_syn, g_syn, 3))
    loop = sum(((feats_real[g_real == c].mean(0) - feats_syn[g_syn == c].mean(0)) ** 2).sum() for c in range(3))
    assert batched.item() == pytest.approx(loop.item(), rel=1e-6)


def test_layer_distance_conv_rows_by_hand():
    # Conv weight gradient [out=2, in=1, 1, 2]: row 0 orthogonal (1 - 0 = 1), row 1 parallel (about 0).
    g_real = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 1.0]]]])
    g_syn = torch.tensor([[[[0.0, 1.0]]], [[[2.0, 2.0]]]])
    expected = 1.0 + (1.0 - 4.0 / (math.sqrt(2) * math.sqrt(8) + GRADIENT_COSINE_EPS))
    assert layer_gradient_distance(g_real, g_syn).item() == pytest.approx(expected, rel=1e-6)


def test_layer_distance_linear_and_opposite_rows():
    g_real = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    g_syn = torch.tensor([[-1.0, 0.0], [0.0, 5.0]])
    # row 0: cosine -1 -> 2; row 1: cosine 1 -> ~0
    assert layer_gradient_distance(g_real, g_syn).item() == pytest.approx(2.0, abs=1e-5)


def test_one_dimensional_parameters_contribute_zero():
    assert layer_gradient_distance(torch.randn(7), torch.randn(7)).item() == 0.0


def test_gradient_distance_sums_layers_and_is_differentiable():
    g_real = [torch.randn(4, 3, 3, 3), torch.randn(4), torch.randn(10, 8)]
    g_syn = [t.clone().requires_grad_(True) for t in (torch.randn(4, 3, 3, 3), torch.randn(4), torch.randn(10, 8))]
    total = gradient_distance(g_real, g_syn)
    parts = sum(layer_gradient_distance(a, b) for a, b in zip(g_real, g_syn))
    assert total.item() == pytest.approx(parts.item())
    total.backward()
    assert g_syn[0].grad is not None and g_syn[0].grad.abs().sum() > 0


def test_identical_gradients_have_zero_distance():
    g = [torch.randn(5, 2, 3, 3), torch.randn(3, 6)]
    assert gradient_distance(g, [t.clone() for t in g]).item() == pytest.approx(0.0, abs=1e-5)
