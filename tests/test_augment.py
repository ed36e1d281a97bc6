"""Differentiable Siamese augmentation: per-family geometry, Siamese sharing, masks, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from raydd.augment import DSA, FAMILIES, AugDraw, DSAParams, parse_strategy
from raydd.errors import ConfigError

GEOMETRIC = ["crop", "flip", "scale", "rotate"]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def generator(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    """Seeded test images, so every run checks the same numbers."""
    return torch.randn(*shape, generator=generator(seed))


def draw_family(family: str, n_groups: int, size=(32, 32), seed: int = 0) -> AugDraw:
    """A draw of one chosen family (a single-family strategy always picks it)."""
    draw = DSA(family).draw(n_groups, size, generator(seed))
    assert draw.family == family
    return draw


def blocky_image(batch: int, channels: int = 3, side: int = 32, block: int = 4, seed: int = 0) -> torch.Tensor:
    """Piecewise-constant images: each block is 0 or a value in [0.5, 1], shared across channels."""
    g = generator(seed)
    cells = side // block
    support = torch.rand(batch, 1, cells, cells, generator=g) > 0.5
    level = 0.5 + 0.5 * torch.rand(batch, channels, cells, cells, generator=g)
    coarse = torch.where(support, level, torch.zeros(()))
    return coarse.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)


# --- strategy parsing ------------------------------------------------------------------------

def test_default_strategy_has_the_six_reference_families():
    assert DSA().families == ("color", "crop", "cutout", "flip", "scale", "rotate")


def test_unknown_family_is_a_config_error():
    with pytest.raises(ConfigError, match="blur"):
        DSA("color_blur")
    with pytest.raises(ConfigError):
        parse_strategy("crop_crop")


@pytest.mark.parametrize("strategy", ["none", "", "NONE"])
def test_identity_strategy_changes_nothing(strategy):
    dsa = DSA(strategy)
    x = randn(2, 3, 8, 8, seed=1)
    masks = torch.rand(2, 1, 8, 8)
    draw = dsa.draw(2, (8, 8), generator())
    assert draw.family == "none"
    out, out_masks = dsa.apply(x, draw, masks=masks)
    assert torch.equal(out, x) and torch.equal(out_masks, masks)
    assert torch.equal(dsa(x, generator()), x)


def test_flip_false_never_flips():
    dsa = DSA(flip=False)
    assert "flip" not in dsa.families
    g = generator(3)
    families = {dsa.draw(4, (28, 28), g).family for _ in range(300)}
    assert "flip" not in families
    assert families == set(FAMILIES) - {"flip"}
    assert DSA("flip", flip=False).families == ()


def test_single_mode_picks_every_family():
    g = generator(1)
    seen = {DSA().draw(2, (32, 32), g).family for _ in range(300)}
    assert seen == set(FAMILIES)


def test_bad_params_are_config_errors():
    with pytest.raises(ConfigError):
        DSAParams(scale_ratio=0.5)
    with pytest.raises(ConfigError):
        DSAParams(flip_probability=1.5)


# --- Siamese behaviour and determinism -------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_same_draw_on_a_copy_is_identical(family):
    dsa = DSA()
    draw = draw_family(family, 3)
    real = randn(6, 3, 32, 32, seed=2)
    groups = torch.tensor([0, 1, 2, 0, 1, 2])
    first = dsa.apply(real, draw, groups=groups)
    second = dsa.apply(real.clone(), draw, groups=groups)
    assert torch.equal(first, second)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_group_same_image_same_output(family):
    dsa = DSA()
    draw = draw_family(family, 2, seed=5)
    image = randn(1, 3, 32, 32, seed=3)
    batch = torch.cat([image, randn(1, 3, 32, 32, seed=4), image])
    out = dsa.apply(batch, draw, groups=torch.tensor([1, 0, 1]))
    assert torch.equal(out[0], out[2])


@pytest.mark.parametrize("family", FAMILIES)
def test_sample_alone_equals_sample_in_batch(family):
    dsa = DSA()
    draw = draw_family(family, 4, seed=2)
    batch = randn(5, 3, 32, 32, seed=5)
    groups = torch.tensor([3, 0, 2, 1, 3])
    together = dsa.apply(batch, draw, groups=groups)
    for index in range(5):
        alone = dsa.apply(batch[index : index + 1], draw, groups=groups[index : index + 1])
        assert torch.equal(alone[0], together[index])


def test_groups_none_uses_group_zero():
    dsa = DSA()
    draw = draw_family("rotate", 3)
    x = randn(4, 3, 16, 16, seed=6)
    assert torch.equal(dsa.apply(x, draw), dsa.apply(x, draw, groups=torch.zeros(4, dtype=torch.long)))


def test_different_groups_may_differ():
    dsa = DSA()
    image = randn(1, 3, 32, 32, seed=7).expand(8, 3, 32, 32)
    g = generator(9)
    differing = 0
    for _ in range(10):
        out = dsa.apply(image, dsa.draw(8, (32, 32), g), groups=torch.arange(8))
        differing += int(not all(torch.equal(out[0], out[i]) for i in range(1, 8)))
    assert differing > 0


def test_siamese_real_and_synthetic_share_each_class_transform():
    dsa = DSA("crop")
    draw = dsa.draw(2, (16, 16), generator(4))
    real = randn(4, 3, 16, 16, seed=8)
    syn = real[[2, 0]].clone()  # synthetic class-1 then class-0 images, equal to real ones
    real_aug = dsa.apply(real, draw, groups=torch.tensor([0, 0, 1, 1]))
    syn_aug = dsa.apply(syn, draw, groups=torch.tensor([1, 0]))
    assert torch.equal(syn_aug[0], real_aug[2]) and torch.equal(syn_aug[1], real_aug[0])


def test_same_seed_gives_same_draw_and_output():
    dsa = DSA()
    x = randn(4, 3, 32, 32, seed=9)
    for seed in range(6):
        a, b = dsa.draw(3, (32, 32), generator(seed)), dsa.draw(3, (32, 32), generator(seed))
        assert a.family == b.family
        assert a.values.keys() == b.values.keys()
        assert all(torch.equal(a.values[k], b.values[k]) for k in a.values)
        assert torch.equal(dsa(x, generator(seed)), dsa(x, generator(seed)))


def test_global_rng_untouched():
    state = torch.get_rng_state()
    dsa = DSA()
    g = generator(0)
    for _ in range(10):
        dsa(torch.randn(2, 3, 8, 8, generator=g), g)
    assert torch.equal(torch.get_rng_state(), state)


def test_draw_tensors_live_on_the_generator_device():
    g = generator(0)
    for family in FAMILIES:
        draw = DSA(family).draw(5, (32, 32), g)
        assert all(v.device == torch.device("cpu") and v.shape[0] == 5 for v in draw.values.values())


# --- each family on hand-made inputs ---------------------------------------------------------

def test_flip_mirrors_left_right():
    dsa = DSA()
    x = randn(2, 3, 5, 7, seed=11)
    draw = AugDraw("flip", {"flip": torch.tensor([True, False])})
    out = dsa.apply(x, draw, groups=torch.tensor([0, 1]))
    assert torch.equal(out[0], x[0].flip(-1))
    assert torch.equal(out[1], x[1])


def shift_with_zero_fill(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    rolled = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    if dy > 0:
        rolled[..., :dy, :] = 0
    elif dy < 0:
        rolled[..., dy:, :] = 0
    if dx > 0:
        rolled[..., :, :dx] = 0
    elif dx < 0:
        rolled[..., :, dx:] = 0
    return rolled


def test_crop_is_an_integer_shift_with_zero_fill():
    x = torch.arange(1.0, 26.0).view(1, 1, 5, 5)
    draw = AugDraw("crop", {"shift_y": torch.tensor([1]), "shift_x": torch.tensor([-2])})
    expected = torch.tensor(
        [
            [0.0, 0, 0, 0, 0],
            [3, 4, 5, 0, 0],
            [8, 9, 10, 0, 0],
            [13, 14, 15, 0, 0],
            [18, 19, 20, 0, 0],
        ]
    ).view(1, 1, 5, 5)
    out = DSA().apply(x, draw)
    assert torch.equal(out, expected)
    assert torch.equal(out, shift_with_zero_fill(x, 1, -2))


def test_drawn_crops_match_roll_with_zeroing():
    dsa = DSA()
    draw = draw_family("crop", 6, size=(28, 28), seed=3)
    x = randn(6, 2, 28, 28, seed=12)
    out = dsa.apply(x, draw, groups=torch.arange(6))
    for i in range(6):
        dy, dx = int(draw.values["shift_y"][i]), int(draw.values["shift_x"][i])
        assert abs(dy) <= 4 and abs(dx) <= 4
        assert torch.equal(out[i], shift_with_zero_fill(x[i], dy, dx))


def test_cutout_zeroes_a_square_of_half_the_side():
    dsa = DSA()
    x = torch.ones(3, 2, 32, 32)
    draw = AugDraw("cutout", {"center_y": torch.tensor([16, 0, 31]), "center_x": torch.tensor([16, 0, 5])})
    out = dsa.apply(x, draw, groups=torch.arange(3))
    hole = out[0, 0] == 0
    assert hole.sum() == 16 * 16
    assert hole[8:24, 8:24].all()
    assert (out[0, 0] == 0).equal(out[0, 1] == 0)
    assert (out[1, 0] == 0).sum() == 8 * 8  # clipped by the top-left corner
    corner = out[2, 0] == 0  # rows 23..38 and cols -3..12, clipped to rows 23..31, cols 0..12
    assert corner.sum() == 9 * 13 and corner[23:, :13].all()


def test_drawn_cutout_side_for_28px():
    draw = draw_family("cutout", 50, size=(28, 28), seed=1)
    out = DSA().apply(torch.ones(50, 1, 28, 28), draw, groups=torch.arange(50))
    rows_hit = (out == 0).any(dim=3).sum(dim=(1, 2))
    cols_hit = (out == 0).any(dim=2).sum(dim=(1, 2))
    assert rows_hit.max() == 14 and cols_hit.max() == 14  # int(0.5 * 28 + 0.5)
    assert (rows_hit >= 7).all() and (cols_hit >= 7).all()  # at least half the side stays inside


def test_unit_scale_and_zero_rotation_are_identity():
    dsa = DSA()
    x = torch.rand(2, 3, 28, 28, generator=generator(0))  # image range: the grid's float32 rounding stays < 1e-5
    unit_scale = AugDraw("scale", {"scale_x": torch.ones(1), "scale_y": torch.ones(1)})
    no_turn = AugDraw("rotate", {"angle": torch.zeros(1)})
    torch.testing.assert_close(dsa.apply(x, unit_scale), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(dsa.apply(x, no_turn), x, atol=1e-5, rtol=0)


def test_quarter_turn_is_a_rot90():
    x = randn(1, 2, 9, 9, seed=13)
    out = DSA().apply(x, AugDraw("rotate", {"angle": torch.tensor([math.pi / 2])}))
    torch.testing.assert_close(out, torch.rot90(x, -1, dims=(2, 3)), atol=1e-5, rtol=0)


def test_drawn_ranges_follow_the_params():
    g = generator(0)
    color = DSA("color").draw(2000, (32, 32), g).values
    assert color["brightness"].min() >= -0.5 and color["brightness"].max() <= 0.5
    assert color["saturation"].min() >= 0.0 and color["saturation"].max() <= 2.0
    assert color["contrast"].min() >= 0.5 and color["contrast"].max() <= 1.5
    scale = DSA("scale").draw(2000, (32, 32), g).values
    for key in ("scale_x", "scale_y"):
        assert scale[key].min() >= 1 / 1.2 - 1e-6 and scale[key].max() <= 1.2 + 1e-6
    assert not torch.equal(scale["scale_x"], scale["scale_y"])
    angle = DSA("rotate").draw(2000, (32, 32), g).values["angle"]
    assert angle.abs().max() <= math.radians(15) + 1e-6 and angle.abs().max() > math.radians(14)
    crop = DSA("crop").draw(2000, (32, 32), g).values
    assert crop["shift_y"].dtype == torch.int64
    assert set(crop["shift_y"].tolist()) == set(range(-4, 5))
    flip = DSA("flip").draw(2000, (32, 32), g).values["flip"]
    assert 0.4 < flip.float().mean() < 0.6


def color_draw(brightness: float, saturation: float, contrast: float) -> AugDraw:
    return AugDraw(
        "color",
        {
            "brightness": torch.tensor([brightness]),
            "saturation": torch.tensor([saturation]),
            "contrast": torch.tensor([contrast]),
        },
    )


HAND_IMAGE = torch.tensor(
    [[[0.0, 1.0], [2.0, 3.0]], [[4.0, 5.0], [6.0, 7.0]], [[-1.0, 0.5], [2.5, 8.0]]]
).unsqueeze(0)


def test_brightness_adds_an_offset():
    out = DSA().apply(HAND_IMAGE, color_draw(0.3, 1.0, 1.0))
    torch.testing.assert_close(out, HAND_IMAGE + 0.3)


def test_saturation_scales_around_the_channel_mean():
    out = DSA().apply(HAND_IMAGE, color_draw(0.0, 0.4, 1.0))
    channel_mean = torch.tensor([[1.0, 6.5 / 3], [10.5 / 3, 6.0]])
    expected = (HAND_IMAGE - channel_mean) * 0.4 + channel_mean
    torch.testing.assert_close(out, expected)


def test_contrast_scales_around_the_image_mean():
    out = DSA().apply(HAND_IMAGE, color_draw(0.0, 1.0, 1.25))
    image_mean = HAND_IMAGE.sum() / 12
    torch.testing.assert_close(out, (HAND_IMAGE - image_mean) * 1.25 + image_mean)


def test_color_applies_brightness_then_saturation_then_contrast():
    b, s, c = -0.2, 1.7, 0.6
    out = DSA().apply(HAND_IMAGE, color_draw(b, s, c))
    step = HAND_IMAGE + b
    step = (step - step.mean(1, keepdim=True)) * s + step.mean(1, keepdim=True)
    expected = (step - step.mean()) * c + step.mean()
    torch.testing.assert_close(out, expected)


# --- gradients, masks, shapes ----------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_the_input(family):
    dsa = DSA()
    draw = draw_family(family, 2, seed=7)
    x = randn(4, 3, 16, 16, seed=14).requires_grad_()
    weights = randn(4, 3, 16, 16, seed=15)
    (dsa.apply(x, draw, groups=torch.tensor([0, 1, 0, 1])) * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("family,exact", [("crop", True), ("flip", True), ("scale", False), ("rotate", False)])
def test_masks_follow_the_geometry(family, exact):
    """Integer moves (crop, flip) carry a mask exactly; resampling (scale, rotate) does up to block borders."""
    dsa = DSA()
    images = blocky_image(6)
    masks = (images[:, :1] > 0).float()
    for seed in range(3):
        draw = draw_family(family, 6, seed=seed)
        out, out_masks = dsa.apply(images, draw, groups=torch.arange(6), masks=masks)
        if exact:
            assert torch.equal(out_masks, (out[:, :1] > 0).float())
            continue
        assert out_masks.min() >= 0 and out_masks.max() <= 1 + 1e-6
        full, empty = out_masks > 1 - 1e-5, out_masks < 1e-5
        foreground = out[:, :1] > 1e-5
        assert (foreground[full]).all()
        assert not (foreground[empty]).any()
        assert (full | empty).float().mean() > 0.5  # most pixels are away from block borders


@pytest.mark.parametrize("family", ["color", "cutout"])
def test_masks_unchanged_by_color_and_cutout(family):
    dsa = DSA()
    images = blocky_image(4)
    masks = (images[:, :1] > 0).float()
    out, out_masks = dsa.apply(images, draw_family(family, 4), groups=torch.arange(4), masks=masks)
    assert torch.equal(out_masks, masks)
    assert not torch.equal(out, images)


@pytest.mark.parametrize("shape", [(3, 3, 28, 28), (2, 1, 32, 32), (2, 3, 20, 24)])
def test_call_preserves_shapes_for_every_family(shape):
    x = randn(*shape, seed=16)
    masks = torch.rand(shape[0], 1, *shape[2:])
    g = generator(0)
    for family in FAMILIES:
        out, out_masks = DSA(family)(x, g, masks=masks)
        assert out.shape == x.shape and out_masks.shape == masks.shape
        assert DSA(family)(x, g).shape == x.shape


def test_channels_last_input_gives_the_same_result():
    dsa = DSA()
    x = randn(4, 3, 16, 16, seed=17)
    for family in FAMILIES:
        draw = draw_family(family, 4, size=(16, 16))
        groups = torch.arange(4)
        torch.testing.assert_close(
            dsa.apply(x.to(memory_format=torch.channels_last), draw, groups=groups),
            dsa.apply(x, draw, groups=groups),
        )


@CUDA
def test_cuda_generator_and_images():
    dsa = DSA()
    x = randn(4, 3, 32, 32, seed=18).cuda().requires_grad_()
    g = generator(0, "cuda")
    for family in FAMILIES:
        draw = DSA(family).draw(2, (32, 32), g)
        assert all(v.device.type == "cuda" for v in draw.values.values())
        out = dsa.apply(x, draw, groups=torch.tensor([0, 1, 0, 1], device="cuda"))
        assert torch.equal(out, dsa.apply(x, draw, groups=torch.tensor([0, 1, 0, 1], device="cuda")))
        out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
