"""Preprocessing components: caption embeddings, captions and object masks.

Each component loads its model once in the constructor and then works two ways: ``__call__`` on a
Ray-Data-style numpy batch (columns documented in ``batch``), so it can be passed straight to
``Dataset.map_batches``, and a plain method on tensors for direct use in Python.
Model libraries (sentence-transformers, open_clip, segment-anything, OpenCV) are imported only
when a component that needs them is built.
"""

from .captioner import Captioner
from .masks import MaskBackend, Segmenter, available_segmenters, make_mask_backend, register_segmenter
from .text import TextEmbedder, TextEncoder, available_text_encoders, make_text_encoder, register_text_encoder

__all__ = [
    "Captioner",
    "MaskBackend",
    "Segmenter",
    "TextEmbedder",
    "TextEncoder",
    "available_segmenters",
    "available_text_encoders",
    "make_mask_backend",
    "make_text_encoder",
    "register_segmenter",
    "register_text_encoder",
]
