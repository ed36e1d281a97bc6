"""The model zoo: benchmark parameter counts, the embed/classifier contract, seeding."""

from __future__ import annotations

import pytest
import torch

from raydd.errors import ConfigError
from raydd.models import available_models, build_seeded, get_model, register_model
from raydd.models.base import FeatureClassifier

SHAPES = [(1, (28, 28)), (3, (32, 32))]
CONVNET_FAMILY = ["convnet", "convnet3", "convnet4", "convnet_bn"]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def convnet3_expected_count(channels: int, width: int = 128, classes: int = 10) -> int:
    """Conv weights+biases, two GroupNorm affine vectors per block, and a 4x4-map classifier."""
    first = channels * width * 9 + width
    later = 2 * (width * width * 9 + width)
    norms = 3 * 2 * width
    classifier = width * 4 * 4 * classes + classes
    return first + later + norms + classifier


def test_registry_lists_every_required_name():
    required = {"convnet", "convnet3", "convnet4", "convnet_bn", "alexnet", "vgg11", "vgg11_bn", "resnet18", "resnet18_bn"}
    assert required <= set(available_models())


def test_convnet3_parameter_count_cifar():
    model = get_model("convnet3", channels=3, num_classes=10, image_size=(32, 32))
    assert count_parameters(model) == 320_010 == convnet3_expected_count(3)


def test_convnet3_parameter_count_mnist():
    # 320,010 minus the first conv's two missing input channels (2 * 128 * 9 weights).
    model = get_model("convnet3", channels=1, num_classes=10, image_size=(28, 28))
    assert count_parameters(model) == 317_706 == convnet3_expected_count(1)


@pytest.mark.parametrize("name", sorted(available_models()))
@pytest.mark.parametrize("channels,image_size", SHAPES)
def test_every_model_classifies_and_embeds(name, channels, image_size):
    model = build_seeded(name, 0, "cpu", channels=channels, num_classes=7, image_size=image_size).eval()
    x = randn(2, channels, *image_size)
    with torch.no_grad():
        logits = model(x)
        features = model.embed(x)
        fmap = model.feature_map(x)
    assert logits.shape == (2, 7)
    assert features.shape == (2, model.feature_dim)
    assert fmap.dim() == 4 and torch.equal(features, fmap.flatten(1))
    assert isinstance(model.classifier, torch.nn.Linear)
    assert model.classifier.in_features == model.feature_dim
    torch.testing.assert_close(model.classifier(features), logits)


@pytest.mark.parametrize("name", CONVNET_FAMILY)
@pytest.mark.parametrize("channels,image_size", SHAPES)
def test_convnet_feature_map_shape(name, channels, image_size):
    model = get_model(name, channels=channels, num_classes=10, image_size=image_size).eval()
    with torch.no_grad():
        fmap = model.feature_map(randn(2, channels, *image_size))
    side = 2 if name == "convnet4" else 4
    assert fmap.shape == (2, 128, side, side)
    assert model.feature_dim == 128 * side * side


def test_convnet_64px_sizes_classifier_from_depth():
    for depth, side in [(3, 8), (4, 4)]:
        model = get_model("convnet", channels=3, num_classes=10, image_size=(64, 64), depth=depth)
        assert model.feature_dim == 128 * side * side
        assert model(randn(1, 3, 64, 64)).shape == (1, 10)


def test_convnet_28px_first_conv_pads_to_32():
    model = get_model("convnet", channels=1, num_classes=10, image_size=(28, 28))
    assert model.features[0].padding == (3, 3)
    assert model.features[4].padding == (1, 1)


@pytest.mark.parametrize(
    "norm,expected",
    [
        ("instancenorm", (torch.nn.GroupNorm, 128)),
        ("layernorm", (torch.nn.GroupNorm, 1)),
        ("groupnorm", (torch.nn.GroupNorm, 4)),
        ("batchnorm", (torch.nn.BatchNorm2d, None)),
        ("none", (torch.nn.Identity, None)),
    ],
)
def test_convnet_norm_options(norm, expected):
    model = get_model("convnet", channels=3, num_classes=10, image_size=(32, 32), norm=norm)
    layer = model.features[1]
    kind, groups = expected
    assert isinstance(layer, kind)
    if groups is not None:
        assert layer.num_groups == groups and layer.affine


@pytest.mark.parametrize("activation", ["relu", "leakyrelu", "sigmoid"])
@pytest.mark.parametrize("pooling", ["avgpooling", "maxpooling", "none"])
def test_convnet_activation_and_pooling_options(activation, pooling):
    model = get_model(
        "convnet", channels=3, num_classes=4, image_size=(16, 16), width=8, activation=activation, pooling=pooling
    )
    assert model(randn(2, 3, 16, 16)).shape == (2, 4)


def test_convnet_bn_uses_batchnorm():
    model = get_model("convnet_bn", channels=3, num_classes=10, image_size=(32, 32))
    assert isinstance(model.features[1], torch.nn.BatchNorm2d)


def test_unknown_model_name_lists_available():
    with pytest.raises(ConfigError) as error:
        get_model("transformer9000", channels=3, num_classes=10, image_size=(32, 32))
    assert "convnet3" in str(error.value) and "resnet18" in str(error.value)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="depth"):
        get_model("convnet4", channels=3, num_classes=10, image_size=(32, 32), depth=3)
    with pytest.raises(ConfigError, match="norm"):
        get_model("convnet", channels=3, num_classes=10, image_size=(32, 32), norm="weird")
    with pytest.raises(ConfigError, match="too small"):
        get_model("convnet", channels=3, num_classes=10, image_size=(4, 4), depth=4)
    with pytest.raises(ConfigError, match="image_size"):
        get_model("convnet", channels=3, num_classes=10, image_size=32)


def test_register_model_rejects_duplicate_names():
    with pytest.raises(ValueError):
        register_model("convnet")(lambda **kwargs: None)


MNIST_KWARGS = dict(channels=1, num_classes=10, image_size=(28, 28))


def parameters_of(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach() for p in model.parameters()]


def test_build_seeded_is_reproducible_and_seed_dependent():
    first = build_seeded("convnet3", 11, "cpu", **MNIST_KWARGS)
    again = build_seeded("convnet3", 11, "cpu", **MNIST_KWARGS)
    other = build_seeded("convnet3", 12, "cpu", **MNIST_KWARGS)
    assert all(torch.equal(a, b) for a, b in zip(parameters_of(first), parameters_of(again)))
    assert not all(torch.equal(a, b) for a, b in zip(parameters_of(first), parameters_of(other)))


def test_build_seeded_leaves_global_rng_alone():
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    expected_next = torch.rand(3)
    torch.set_rng_state(state)
    build_seeded("convnet3", 5, "cpu", **MNIST_KWARGS)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(torch.rand(3), expected_next)


@pytest.mark.parametrize("name", sorted(available_models()))
def test_channels_last_matches_contiguous(name):
    model = build_seeded(name, 0, "cpu", channels=3, num_classes=10, image_size=(32, 32)).eval()
    x = randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        result = model_cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(result, reference, rtol=1e-4, atol=1e-4)


def test_models_share_the_feature_classifier_contract():
    for name in available_models():
        model = get_model(name, channels=1, num_classes=3, image_size=(28, 28))
        assert isinstance(model, FeatureClassifier)
        assert isinstance(model.feature_dim, int)


@CUDA
@pytest.mark.parametrize("name", sorted(available_models()))
def test_models_run_on_cuda_and_seeding_is_device_independent(name):
    cpu_model = build_seeded(name, 3, "cpu", channels=3, num_classes=10, image_size=(32, 32))
    gpu_model = build_seeded(name, 3, "cuda", channels=3, num_classes=10, image_size=(32, 32))
    for a, b in zip(parameters_of(cpu_model), parameters_of(gpu_model)):
        assert torch.equal(a, b.cpu())
    x = torch.randn(2, 3, 32, 32, device="cuda").to(memory_format=torch.channels_last)
    assert gpu_model.to(memory_format=torch.channels_last)(x).shape == (2, 10)
