"""The one registry type behind dataset sources, models, segmenters and text encoders."""

import pytest

from raydd.data.registry import SOURCES
from raydd.models.registry import MODELS
from raydd.preprocess.masks import SEGMENTERS
from raydd.preprocess.text import TEXT_ENCODERS
from raydd.registry import Registry


def test_names_resolve_and_a_taken_name_refuses_another_factory():
    table = Registry("widget")

    @table.register("b")
    def b():
        return "b"

    table.register("a")(len)
    assert table.names() == ["a", "b"] and table.get("b") is b and "a" in table and table.get("c") is None
    table.register("b")(b)  # the same factory again (a module imported twice) is fine
    with pytest.raises(ValueError, match="widget 'b' is already registered"):
        table.register("b")(len)


def test_lowercase_tables_ignore_case():
    table = Registry("model", lowercase=True)
    table.register("ConvNet")(len)
    assert table.get("CONVNET") is len and table.names() == ["convnet"]


def test_every_pluggable_part_uses_it():
    assert {"fashion-mnist", "imagefolder"} <= set(SOURCES.names())
    assert {"convnet3", "resnet18"} <= set(MODELS.names())
    assert {"threshold", "grabcut", "sam", "annotations"} <= set(SEGMENTERS.names())
    assert {"minilm", "openclip"} <= set(TEXT_ENCODERS.names())
