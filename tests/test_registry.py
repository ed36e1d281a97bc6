"""The one registry type behind dataset sources, models, segmenters, text encoders and methods."""

import pytest

from raydd.data.registry import SOURCES
from raydd.errors import ConfigError
from raydd.methods import method_class, register_method
from raydd.methods.base import METHODS
from raydd.models.registry import MODELS
from raydd.components.masks import SEGMENTERS, make_mask_backend
from raydd.components.text import TEXT_ENCODERS
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
    assert {"dm", "dc", "dsa"} <= set(METHODS.names())


def test_a_spec_resolves_to_its_factory_and_argument():
    table = Registry("widget")
    table.register("sam")(len)
    assert table.resolve("sam:vit_b:/w.pt") == (len, "vit_b:/w.pt") and table.resolve("sam") == (len, None)
    with pytest.raises(ConfigError, match=r"unknown widget 'bert:x'; known: sam \(sam takes sam:<variant>\)"):
        table.resolve("bert:x", "sam takes sam:<variant>")
    with pytest.raises(ConfigError, match=r"unknown segmenter 'magic'; known: .*threshold.*\(sam takes sam:"):
        make_mask_backend("magic")


def test_a_method_name_taken_by_another_class_is_an_error():
    dm = method_class("dm")
    register_method("dm")(dm)  # the same class again (a module imported twice) is fine
    with pytest.raises(ValueError, match="method 'dm' is already registered"):
        register_method("dm")(type("Other", (dm,), {}))
    assert method_class("dm") is dm and dm.name == "dm"
