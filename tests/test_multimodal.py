"""The four enhancements: reductions to the base losses, the fused network, and a run with every switch on."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from raydd.config import FusionConfig, build_config
from raydd.distill import run_distillation
from raydd.evaluate import EvalJob, run_job
from raydd.masking import isolate, mask_on_feature_map
from raydd.methods.losses import (
    caption_matching_distance, caption_matching_loss, caption_matching_targets, class_means, masked_average,
    mean_feature_distance, object_class_means,
)
from raydd.models.fusion import CaptionFusion
from raydd.models.init import build_seeded
from tests.helpers import write_imagefolder


def test_caption_matching_targets_the_class_mean_when_all_captions_are_equal():
    torch.manual_seed(0)
    real = torch.randn(12, 5)
    real_groups = torch.tensor([0] * 7 + [1] * 5)
    syn = torch.randn(2, 5)
    syn_groups = torch.tensor([0, 1])
    same = torch.ones(12, 4)
    loss = caption_matching_loss(syn, torch.ones(2, 4), syn_groups, real, same, real_groups, tau=10.0)
    # One synthetic image per class: exactly the DM loss.
    dm = mean_feature_distance(class_means(real, real_groups, 2), class_means(syn, syn_groups, 2))
    assert loss.item() == pytest.approx(dm.item(), rel=1e-5)


def test_caption_matching_follows_the_most_similar_caption():
    real = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    captions = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    syn = torch.zeros(1, 2, requires_grad=True)
    loss = caption_matching_loss(syn, torch.tensor([[1.0, 0.0]]), torch.tensor([0]), real, captions,
                                 torch.tensor([0, 0]), tau=100.0)
    # tau large: the target is (almost exactly) the feature whose caption equals the synthetic one.
    assert loss.item() == pytest.approx(1.0, abs=1e-3)


def test_caption_matching_does_not_grow_with_the_images_per_class():
    """The same per-image distances give the same loss at every IPC (the mean over a class's images);
    the sum that runs before mm.cm_reduction used grows with IPC."""
    torch.manual_seed(0)
    real = torch.randn(10, 6)
    real_groups = torch.tensor([0] * 5 + [1] * 5)
    real_captions = torch.randn(10, 4)
    one_syn, one_captions = torch.randn(2, 6), torch.randn(2, 4)
    losses = {}
    for ipc in (1, 3, 10):
        syn, captions = one_syn.repeat_interleave(ipc, 0), one_captions.repeat_interleave(ipc, 0)
        groups = torch.tensor([0, 1]).repeat_interleave(ipc)
        losses[ipc] = [caption_matching_loss(syn, captions, groups, real, real_captions, real_groups, 10.0, reduction)
                       for reduction in ("mean", "sum")]
    for ipc in (3, 10):
        assert losses[ipc][0].item() == pytest.approx(losses[1][0].item(), rel=1e-6)
        assert losses[ipc][1].item() == pytest.approx(ipc * losses[1][1].item(), rel=1e-6)
    # At IPC 1 the two reductions agree: one image per class.
    assert losses[1][0].item() == pytest.approx(losses[1][1].item(), rel=1e-6)


def test_caption_matching_is_a_per_class_mean_whichever_way_the_classes_are_batched():
    """DM passes every class at once, DC/DSA one class at a time, the bank precomputed targets: one value."""
    torch.manual_seed(1)
    real, real_captions = torch.randn(9, 5), torch.randn(9, 3)
    real_groups = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2])
    syn, syn_captions = torch.randn(7, 5), torch.randn(7, 3)
    syn_groups = torch.tensor([0, 0, 1, 1, 1, 2, 2])  # unequal counts: the mean is per class, not over all
    together = caption_matching_loss(syn, syn_captions, syn_groups, real, real_captions, real_groups, 5.0)
    zeros = lambda chosen: torch.zeros(int(chosen.sum()), dtype=torch.int64)  # noqa: E731  (one class: group 0)
    one_by_one = sum(
        caption_matching_loss(syn[syn_groups == c], syn_captions[syn_groups == c], zeros(syn_groups == c),
                              real[real_groups == c], real_captions[real_groups == c], zeros(real_groups == c), 5.0)
        for c in range(3))
    targets = caption_matching_targets(syn_captions, syn_groups, real, real_captions, real_groups, 5.0)
    from_targets = caption_matching_distance(syn, targets, syn_groups)
    by_hand = sum(((syn[syn_groups == c] - targets[syn_groups == c]) ** 2).sum(1).mean() for c in range(3))
    for value in (one_by_one, from_targets):
        assert value.item() == pytest.approx(together.item(), rel=1e-6)
    assert together.item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_caption_matching_weighs_the_same_in_dm_and_dsa_at_every_ipc(tmp_path):
    """The caption term of a DM iteration and of a DSA matching step, with the same network, the same
    images and the whole class as the real batch, is one number, at IPC 1 and at IPC 3 (three copies);
    a DM bank step's (another network) does not change with IPC either."""
    from raydd.distill import build_distiller, initial_state, load_inputs

    data = _captioned_data(tmp_path)
    base = _cfg(data, "dm", cm=True)
    splits, captions = load_inputs(base)
    first = initial_state(base, splits, torch.device("cpu"), captions).syn
    terms = {}
    for method in ("dm", "dsa", "dm-bank"):
        for ipc in (1, 3):
            weights = []
            for weight in (1.0, 0.0):
                cfg = _cfg(data, method.removesuffix("-bank"), cm=True, lambda_cm=weight)
                if method == "dm-bank":
                    cfg.dm.bank, cfg.dm.networks, cfg.dm.draws, cfg.dm.bank_real = True, 1, 1, 64
                cfg.distill.ipc, cfg.distill.batch_real, cfg.distill.dsa_strategy = ipc, 64, "none"
                state = initial_state(cfg, splits, torch.device("cpu"), captions)
                state.syn.images = first.images.repeat_interleave(ipc, 0).clone()
                state.syn.caption_emb = first.caption_emb.repeat_interleave(ipc, 0).clone()
                distiller = build_distiller(cfg, state, torch.device("cpu"))
                if method.startswith("dm"):
                    weights.append(distiller.step(0)["loss"].item())
                else:
                    net = distiller.build_network(0)
                    weights.append(distiller.matching_loss(net, 0, 0).item())
            terms[method, ipc] = weights[0] - weights[1]
    assert terms["dm", 1] > 0
    assert terms["dm", 3] == pytest.approx(terms["dm", 1], rel=1e-4)
    assert terms["dsa", 3] == pytest.approx(terms["dsa", 1], rel=1e-4)
    assert terms["dsa", 1] == pytest.approx(terms["dm", 1], rel=1e-3)
    assert terms["dm-bank", 1] > 0 and terms["dm-bank", 3] == pytest.approx(terms["dm-bank", 1], rel=1e-4)


def test_isolation_with_full_masks_is_the_identity_and_fills_the_background():
    x = torch.randn(3, 2, 8, 8)
    for fill in ("mean", "blur", "noise"):
        assert torch.equal(isolate(x, torch.ones(3, 1, 8, 8), fill, torch.Generator().manual_seed(0)), x)
    empty = isolate(x, torch.zeros(3, 1, 8, 8), "mean")
    assert torch.equal(empty, torch.zeros_like(x))


def test_fused_network_with_zero_captions_is_the_image_network():
    net = build_seeded("convnet3", 0, "cpu", channels=1, num_classes=4, image_size=(28, 28))
    fused = CaptionFusion(net, caption_dim=6, projection_dim=3, num_classes=4)
    assert all(p.grad is None for p in fused.parameters())
    assert "image_net.classifier.weight" not in dict(fused.named_parameters())
    x = torch.randn(5, 1, 28, 28)
    image_only = torch.nn.functional.linear(net.embed(x), fused.classifier.weight[:, : net.feature_dim],
                                            fused.classifier.bias)
    assert torch.allclose(fused(x, torch.zeros(5, 6)), image_only, atol=1e-5)
    assert torch.allclose(fused(x), image_only, atol=1e-5)
    assert not torch.allclose(fused(x, torch.randn(5, 6)), image_only, atol=1e-3)


def test_the_fused_caption_half_sits_on_the_scale_its_gain_sets():
    net = build_seeded("convnet3", 0, "cpu", channels=1, num_classes=4, image_size=(28, 28))
    fused = CaptionFusion(net, caption_dim=384, projection_dim=128, num_classes=4, caption_gain=4.0)
    captions = torch.nn.functional.normalize(torch.randn(6, 384), dim=1)
    captions[0] = 0  # a dropped caption
    half = fused.caption_features(captions)
    assert torch.equal(half[0], torch.zeros(128))
    # LayerNorm leaves every entry with unit variance: norm sqrt(projection_dim), times the gain.
    assert torch.allclose(half[1:].norm(dim=1), torch.full((5,), 4.0 * 128 ** 0.5), rtol=2e-2)
    # fusion.caption_norm=none with gain 1 is the plain [phi ; P t] of the formulation.
    plain = CaptionFusion(build_seeded("convnet3", 0, "cpu", channels=1, num_classes=4, image_size=(28, 28)),
                          caption_dim=384, projection_dim=128, num_classes=4, caption_norm="none")
    assert torch.equal(plain.caption_features(captions), plain.project(captions))


def test_a_fused_network_learns_labels_its_images_do_not_carry():
    """Noise images, label-bearing captions: the protocol's few SGD steps must reach the captions."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(10)
    directions = torch.nn.functional.normalize(torch.randn(4, 384, generator=g), dim=1)
    captions = torch.nn.functional.normalize(directions[labels] + 0.05 * torch.randn(40, 384, generator=g), dim=1)
    images = torch.randn(40, 1, 28, 28, generator=g)
    test_images = torch.randn(40, 1, 28, 28, generator=g)
    cfg = build_config("quick").eval
    job = EvalJob(images, labels, test_images, labels, "convnet3", 4, cfg, 0, 0, epochs=30,
                  train_captions=captions, test_captions=captions, fusion=FusionConfig(caption_dropout=0.5))
    result = run_job(job)
    assert result["accuracy"] >= 0.9


def _captioned_data(tmp_path):
    data = write_imagefolder(tmp_path / "data", num_classes=3, n_train=8, size=16)
    return data


def _cfg(data, method, **mm):
    return build_config("quick", overrides={
        "device": "cpu", "data": {"name": str(data), "val_fraction": 0.25},
        "distill": {"method": method, "ipc": 2, "iterations": 3, "batch_real": 4, "checkpoint_every": 2,
                    "log_every": 1},
        "gradmatch": {"outer_loop": 2, "inner_loop": 1}, "eval": {"models": 1, "epochs": 2},
        "components": {"segmenter": "threshold"}, "mm": mm})


@pytest.mark.parametrize("method,switches", [
    ("dm", {"cc": True, "cm": True, "mfa": True, "mask_init": True, "learn_caption_emb": True}),
    ("dsa", {"cc": True, "cm": True, "mgm": True, "mask_init": True}),
])
def test_every_switch_on_runs_end_to_end(tmp_path, method, switches):
    from raydd.workflows import evaluate_run

    data = _captioned_data(tmp_path)
    cfg = _cfg(data, method, **switches)
    out = tmp_path / "run"
    syn = run_distillation(cfg, str(out), show_progress=False)
    assert syn.caption_emb is not None and syn.caption_emb.shape == (6, 384)
    bank = json.loads((out / "captions.json").read_text())
    assert len(bank["captions"]) == 6 and all(c.startswith("a picture of kind") for c in bank["captions"])
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["enhancements"] == {k: v for k, v in switches.items() if k != "learn_caption_emb"}
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    terms = {"dm": {"loss_dm", "loss_mfa", "loss_cc", "loss_cm"}, "dsa": {"loss_gm", "loss_mgm", "loss_cm"}}
    assert terms[method] <= set(rows[-1])
    result = evaluate_run(str(out), cfg, show_progress=False)
    assert 0.0 <= result.accuracy_image_caption.mean <= 1.0
    assert 0.0 <= result.caption_only["accuracy"] <= 1.0
    if method == "dm":
        # The fusion comparison job reads the same run: one validation line per variant.
        done = subprocess.run([sys.executable, "jobs/caption_fusion.py", str(out), "--variant", "plain:fusion.caption_norm=none",
                               "--variant", "layer"], capture_output=True, text=True, cwd=Path(__file__).parents[1])
        assert done.returncode == 0, done.stderr[-2000:]
        table = done.stdout.splitlines()[-4:]
        assert table[0].startswith("| variant |") and table[2].startswith("| plain | fusion.caption_norm=none | ")
        assert table[3].startswith("| layer | defaults | ")


def test_the_whole_training_set_baseline_reports_an_image_caption_ceiling(tmp_path):
    from raydd.workflows import run_baseline

    data = _captioned_data(tmp_path)
    cfg = _cfg(data, "dm")  # no caption switch: the ceiling is reported for any captioned dataset
    result = run_baseline("full", cfg, str(tmp_path / "full"), show_progress=False)
    assert result.method == "full" and result.protocol["epochs"] == cfg.eval.full_epochs
    fused = result.accuracy_image_caption
    assert len(fused.per_model) == cfg.eval.models and 0.0 <= fused.mean <= 1.0
    assert 0.0 <= result.caption_only["accuracy"] <= 1.0
    assert json.loads((tmp_path / "full" / "eval.json").read_text())["accuracy_image_caption"] == fused.to_json()


def test_a_dsa_step_reports_the_terms_its_loss_is_made_of(tmp_path):
    """Masked gradient and caption matching on: each term is logged, and the loss is their weighted sum."""
    from raydd.distill import build_distiller, initial_state, load_inputs
    from raydd.methods.losses import blend

    cfg = _cfg(_captioned_data(tmp_path), "dsa", mgm=True, cm=True, lambda_mgm=0.3, lambda_cm=0.5)
    splits, captions = load_inputs(cfg)
    state = initial_state(cfg, splits, torch.device("cpu"), captions)
    out = build_distiller(cfg, state, torch.device("cpu")).step(0)
    assert set(out) == {"loss", "loss_gm", "loss_mgm", "loss_cm"}
    expected = blend(out["loss_gm"], out["loss_mgm"], 0.3) + 0.5 * out["loss_cm"]
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert all(value.item() > 0 and not value.requires_grad for value in out.values())


def test_masked_dm_with_all_ones_masks_equals_plain_dm(tmp_path):
    from raydd.distill import build_distiller, initial_state, load_inputs

    data = _captioned_data(tmp_path)
    plain_cfg = _cfg(data, "dm")
    masked_cfg = _cfg(data, "dm", mfa=True, lambda_mfa=0.7)
    splits, _ = load_inputs(plain_cfg)
    from dataclasses import replace

    ones = torch.ones_like(splits.train.images[:, :1])
    splits = replace(splits, train=replace(splits.train, masks=ones))
    losses = []
    for cfg in (plain_cfg, masked_cfg):
        cfg.components.segmenter = "auto"
        state = initial_state(cfg, splits, torch.device("cpu"))
        losses.append(build_distiller(cfg, state, torch.device("cpu")).step(0)["loss"].item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_the_masked_average_over_object_positions_by_hand():
    fmap = torch.tensor([
        [[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]],
        [[[0.0, 0.0], [0.0, 8.0]], [[2.0, 2.0], [2.0, 2.0]]],  # its mask is empty: left out of class 0
        [[[4.0, 4.0], [0.0, 0.0]], [[1.0, 3.0], [5.0, 7.0]]],
        [[[1.0, 2.0], [3.0, 6.0]], [[0.0, 0.0], [0.0, 4.0]]],  # the only image of class 2, empty mask
    ])
    weights = torch.tensor([[[1.0, 0.0], [0.5, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]],
                            [[0.0, 0.0], [0.0, 0.0]]])[:, None]
    averages, totals = masked_average(fmap, weights)
    assert torch.allclose(totals, torch.tensor([1.5, 0.0, 3.0, 0.0]))
    # (1*1 + 3*0.5) / 1.5 and (10*1 + 30*0.5) / 1.5; (4 + 0 + 0) / 3 and (3 + 5 + 7) / 3.
    assert torch.allclose(averages[0], torch.tensor([5 / 3, 50 / 3]))
    assert torch.allclose(averages[2], torch.tensor([4 / 3, 5.0]))
    means = object_class_means(averages, totals, fmap.mean(dim=(2, 3)), torch.tensor([0, 0, 1, 2]), 3)
    # Class 0: image 1 has no object position and does not count; class 2 has none at all and takes the
    # average over every position of its image (what an all-ones mask gives).
    assert torch.allclose(means, torch.tensor([[5 / 3, 50 / 3], [4 / 3, 5.0], [3.0, 1.0]]))
    # A 4x4 mask onto a 2x2 map: the share of object pixels in each 2x2 block.
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.uint8)[None, None]
    assert torch.allclose(mask_on_feature_map(mask, (2, 2)), torch.tensor([[[[0.75, 0.0], [0.0, 1.0]]]]))


def test_an_all_ones_mask_averages_over_every_position():
    torch.manual_seed(0)
    fmap = torch.randn(5, 7, 4, 4)
    weights = mask_on_feature_map(torch.ones(5, 1, 32, 32), (4, 4))
    averages, totals = masked_average(fmap, weights)
    assert torch.allclose(averages, fmap.mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(totals, torch.full((5,), 16.0))


def test_a_28px_mask_is_padded_onto_the_feature_map_as_the_network_pads_the_image():
    """ConvNet-3 runs 28-px inputs as if padded to 32 px: the same weights give the same feature map on
    the explicitly padded image, and the mask padded the same way lands on the same positions."""
    from raydd.models.layers import frame_padding

    net28 = build_seeded("convnet3", 0, "cpu", channels=1, num_classes=3, image_size=(28, 28))
    net32 = build_seeded("convnet3", 1, "cpu", channels=1, num_classes=3, image_size=(32, 32))
    net32.load_state_dict(net28.state_dict())
    assert net28.frame_padding == frame_padding((28, 28)) == (2, 2) and net32.frame_padding == (0, 0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 28, 28, generator=g)
    masks = (torch.rand(3, 1, 28, 28, generator=g) > 0.7).float()
    padded_x, padded_masks = torch.nn.functional.pad(x, (2, 2, 2, 2)), torch.nn.functional.pad(masks, (2, 2, 2, 2))
    with torch.no_grad():
        map28, map32 = net28.feature_map(x), net32.feature_map(padded_x)
    assert map28.shape == (3, 128, 4, 4) and torch.allclose(map28, map32, atol=1e-5)
    w28 = mask_on_feature_map(masks, (4, 4), net28.frame_padding)
    w32 = mask_on_feature_map(padded_masks, (4, 4), net32.frame_padding)
    assert torch.allclose(w28, w32)
    assert torch.allclose(masked_average(map28, w28)[0], masked_average(map32, w32)[0], atol=1e-5)
    # All-ones 28-px mask: each 8x8 block of the 32-px frame holds 6x6 image pixels at a corner, 6x8 on
    # an edge, 8x8 inside; pooled without the padding every position would read 1.
    edge, corner = 48 / 64, 36 / 64
    expected = torch.tensor([[corner, edge, edge, corner], [edge, 1, 1, edge], [edge, 1, 1, edge],
                             [corner, edge, edge, corner]])
    assert torch.allclose(mask_on_feature_map(torch.ones(1, 1, 28, 28), (4, 4), (2, 2))[0, 0], expected)


def _feature_mfa_cfg(**mm):
    return build_config("quick", overrides={
        "device": "cpu", "distill": {"method": "dm", "ipc": 2, "batch_real": 64, "dsa_strategy": "none"},
        "mm": {"mfa": True, "mfa_level": "feature", "lambda_mfa": 1.0, **mm}})


def test_feature_level_alignment_in_a_dm_step_is_the_masked_average_formula():
    """loss_mfa of a DM iteration = positions * sum_c || mean_i masked average(x_i) - mean_j average(s_j) ||^2,
    with the 28-px masks padded to the 32-px frame (computed here with a fixed 8x8 pool)."""
    import torch.nn.functional as F

    from raydd.distill import build_distiller, initial_state
    from raydd.seeding import derive_seed
    from tests.helpers import tiny_splits

    cfg = _feature_mfa_cfg()
    splits = tiny_splits()
    state = initial_state(cfg, splits, torch.device("cpu"))
    distiller = build_distiller(cfg, state, torch.device("cpu"))
    syn = distiller.images.detach().clone()
    net = distiller.net_spec.build(derive_seed(cfg.seed, "net", 0), torch.device("cpu"))
    pool = distiller.pool
    expected = 0.0
    with torch.no_grad():
        for c in range(3):
            index = pool.class_indices[c]  # batch_real 64 > 12 images: the batch is the whole class
            fmap = net.feature_map(pool.images[index])
            weights = F.avg_pool2d(F.pad(pool.masks[index], (2, 2, 2, 2)), 8)
            total = weights.sum(dim=(2, 3))
            assert bool((total > 0).all())
            real = ((fmap * weights).sum(dim=(2, 3)) / total).mean(0)
            synthetic = net.feature_map(syn[state.syn.class_rows(c)]).mean(dim=(2, 3)).mean(0)
            expected += 16 * ((real - synthetic) ** 2).sum().item()
    out = distiller.step(0)
    assert out["loss_mfa"].item() == pytest.approx(expected, rel=1e-4)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-4)  # lambda_mfa 1: the masked term alone


def test_feature_level_alignment_refuses_a_class_without_any_object_pixel(tmp_path):
    from dataclasses import replace

    from raydd.distill import build_distiller, initial_state, preflight
    from raydd.errors import DataError
    from tests.helpers import tiny_splits

    splits = tiny_splits()
    masks = splits.train.masks.clone()
    masks[splits.train.labels == 1] = 0
    splits = replace(splits, train=replace(splits.train, masks=masks))
    cfg = _feature_mfa_cfg()
    with pytest.raises(DataError, match="'class1' \\(12 images\\).*mm.mfa_level=input"):
        preflight(cfg, splits, None)
    state = initial_state(cfg, splits, torch.device("cpu"))
    with pytest.raises(DataError, match="class1"):
        build_distiller(cfg, state, torch.device("cpu"))
    cfg.mm.mfa_level = "input"  # the input level isolates to the fill: defined, and left as it is
    build_distiller(cfg, state, torch.device("cpu")).step(0)


def test_missing_caption_is_a_clear_error_before_anything_is_written(tmp_path):
    from raydd.errors import DataError

    data = _captioned_data(tmp_path)
    lines = (data / "train" / "metadata.jsonl").read_text().splitlines()
    row = json.loads(lines[3])
    row["caption"] = "  "
    lines[3] = json.dumps(row)
    (data / "train" / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=row["file_name"]):
        run_distillation(_cfg(data, "dm", cc=True), str(tmp_path / "run"), show_progress=False)
    assert not (tmp_path / "run").exists()


def test_caption_switches_on_a_dataset_without_captions_are_refused(tmp_path):
    from raydd.errors import ConfigError
    from tests.helpers import tiny_splits

    with pytest.raises(ConfigError, match="no captions"):
        run_distillation(_cfg("unused", "dm", cc=True), str(tmp_path / "run"), splits=tiny_splits(),
                         show_progress=False)
    with pytest.raises(ConfigError, match="hand the label"):
        build_config("quick", sets=["mm.cc=true", "mm.class_templates=true"])
