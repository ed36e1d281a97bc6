"""cluttered-fashion-mnist: a controlled testbed where clutter and caption semantics exist.

Every image is 32x32 RGB: one real Fashion-MNIST object (train objects for train, test objects
for test; sample i uses object i of its split, so labels are the objects' labels), tinted with a
palette colour, scaled to 14-24 px and placed fully inside the canvas at a random position, over
a random square crop of one of the photographs scikit-image ships. Backgrounds of train images
come from the left 70% of each photograph's width, those of test images from the right 30%, so
no test background pixel was ever seen in training.

Compositing uses the object's own alpha: its intensity divided by its brightest pixel, set to 0
at or below 15%. The mask is exactly the pixels with alpha > 0, and outside the mask the image
equals the background crop.

The captions are SIMULATED, not written by a model or a person. The simulated captioner names the
true tint colour, size word (small/medium-sized/large by thirds of the size range), position
(3x3 grid cell of the object's box centre) and background, and the garment noun, which is right
with probability q (default 0.7). Otherwise, 3 times in 4 it is a confusable noun from a fixed
map (shirt <-> t-shirt/pullover/coat, sneaker <-> sandal/ankle boot, ...), else the generic word
"item" -- the way a small captioning model errs on low-resolution images. Five sentence templates.

Determinism: per split, one fixed-seed generator draws a table of uniforms for *all* objects of
the split; sample i reads row i, so it is the same whatever the limit. Options the registry's
request cannot carry come from the environment: ``RAYDD_CLUTTERED_Q`` (caption accuracy q) and
``RAYDD_CLUTTERED_LIMIT`` ("N" = at most N images per split, "N,M" = N train and M test), or
from ``load_cluttered(request, ClutteredOptions(...))`` in Python.

Cache: ``$XDG_CACHE_HOME/raydd/cluttered-fashion-mnist/v<version>-<hash of every parameter>/``
holding ``.npy`` arrays (loaded with ``allow_pickle=False``), ``captions.json`` and ``meta.json``,
built in a temporary directory and renamed into place.
"""

from __future__ import annotations

from .build import (BuiltSplit, build_cache, build_parameters, build_split, cache_dir_for, load_cluttered,
                    load_cluttered_from_env, read_split)
from .scene import (Photograph, caption_for, column, composite, draw_table, load_photographs, make_plan,
                    position_phrase, render_alpha, render_backgrounds)
from .spec import (BUILD_SEED, CANVAS, CONFUSIONS, DEFAULT_CAPTION_ACCURACY, ENV_CAPTION_ACCURACY, ENV_LIMIT,
                   GENERIC_NOUN, NOUNS, PALETTE, PHOTOGRAPHS, SOURCE_NAME, TEMPLATES, VERSION, ClutteredOptions,
                   options_from_env)

__all__ = [
    "BUILD_SEED",
    "BuiltSplit",
    "CANVAS",
    "CONFUSIONS",
    "ClutteredOptions",
    "DEFAULT_CAPTION_ACCURACY",
    "ENV_CAPTION_ACCURACY",
    "ENV_LIMIT",
    "GENERIC_NOUN",
    "NOUNS",
    "PALETTE",
    "PHOTOGRAPHS",
    "Photograph",
    "SOURCE_NAME",
    "TEMPLATES",
    "VERSION",
    "build_cache",
    "build_parameters",
    "build_split",
    "cache_dir_for",
    "caption_for",
    "column",
    "composite",
    "draw_table",
    "load_cluttered",
    "load_cluttered_from_env",
    "load_photographs",
    "make_plan",
    "options_from_env",
    "position_phrase",
    "read_split",
    "render_alpha",
    "render_backgrounds",
]
