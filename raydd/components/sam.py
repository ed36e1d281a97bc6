"""Building segment-anything (SAM) models and loading their checkpoints without pickle.

``vit_b``/``vit_l``/``vit_h`` are the published architectures (1024 px input). ``micro`` is
raydd's own tiny variant (256 px input, 32-wide layers) assembled from the same package classes:
with random weights it exercises the whole predictor path in milliseconds on a CPU, which is how
the tests check the segmenter without the 375 MB+ real checkpoints.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from ..errors import ConfigError

SAM_VARIANTS = ("vit_b", "vit_l", "vit_h", "micro")


def build_micro_sam() -> torch.nn.Module:
    """A randomly initialised SAM with tiny widths; same interfaces as the real ones."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    image_size, patch, width = 256, 16, 32
    grid = image_size // patch
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size,
            patch_size=patch,
            embed_dim=width,
            depth=2,
            num_heads=2,
            mlp_ratio=2.0,
            out_chans=width,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=4,
            global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=width, image_embedding_size=(grid, grid), input_image_size=(image_size, image_size), mask_in_chans=4
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=width, mlp_dim=64, num_heads=2),
            transformer_dim=width,
            iou_head_depth=2,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def build_sam_architecture(variant: str) -> torch.nn.Module:
    """The untrained network of a variant; weights are loaded separately (see ``load_sam``)."""
    if variant == "micro":
        return build_micro_sam()
    if variant not in SAM_VARIANTS:
        raise ConfigError(f"unknown SAM variant {variant!r}; known: {', '.join(SAM_VARIANTS)}")
    from segment_anything import sam_model_registry

    # checkpoint=None: the package would otherwise torch.load the file itself with its defaults.
    return sam_model_registry[variant](checkpoint=None).eval()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """safetensors, or a torch checkpoint read with ``weights_only=True`` (no code execution)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    return state


def load_sam(variant: str, checkpoint: str | Path, device: str = "cpu") -> torch.nn.Module:
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ConfigError(f"SAM checkpoint {path} does not exist (segmenter sam:{variant}:<checkpoint path>)")
    model = build_sam_architecture(variant)
    try:
        model.load_state_dict(read_state_dict(path))
    except (RuntimeError, ValueError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"SAM checkpoint {path} does not fit variant {variant}: {first_line}") from None
    return model.to(device).eval()
