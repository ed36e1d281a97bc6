"""Config resolution: preset < file < flags < --set, typed coercion, loud unknown keys."""

import pytest

from raydd.config import available_presets, available_recipes, build_config, parse_set, recipe_dict
from raydd.errors import ConfigError


def test_presets_ship_as_package_data():
    assert {"quick", "paper"} <= set(available_presets())


def test_paper_preset_is_the_published_protocol():
    cfg = build_config("paper")
    e = cfg.eval
    assert (e.epochs, e.lr, e.momentum, e.weight_decay, e.batch, e.models) == (1000, 0.01, 0.9, 5e-4, 256, 5)
    assert cfg.distill.batch_real == 256 and cfg.distill.iterations is None  # method's reference count
    assert set(e.cross_arch) >= {"alexnet", "vgg11", "resnet18"}


def test_layers_apply_in_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("distill: {ipc: 5, batch_real: 32}\nseed: 3\n")
    cfg = build_config("quick", file=f, overrides={"distill": {"ipc": 7}}, sets=["seed=9", "eval.cross_arch=alexnet,vgg11"])
    assert cfg.distill.ipc == 7 and cfg.distill.batch_real == 32 and cfg.seed == 9
    assert cfg.eval.cross_arch == ["alexnet", "vgg11"]


def test_per_method_preset_values_yield_to_the_user():
    assert build_config("quick", overrides={"distill": {"method": "dsa"}}).distill.iterations == 5
    assert build_config("quick", overrides={"distill": {"method": "dsa", "ipc": 1}}).distill.iterations == 100
    assert build_config("quick", overrides={"distill": {"method": "dm"}}).distill.iterations == 200
    cfg = build_config("quick", sets=["distill.method=dsa", "distill.iterations=3"])
    assert cfg.distill.iterations == 3


@pytest.mark.parametrize("item", ["distill.ipcs=3", "nope=1", "eval.epochs=ten", "distill.init=zeros"])
def test_bad_values_are_config_errors(item):
    with pytest.raises(ConfigError):
        build_config("quick", sets=[item])


@pytest.mark.parametrize("item, named", [("mm.lambda_cm=-0.1", "lambda_cm"), ("mm.tau=-1", "tau"),
                                         ("mm.lambda_mfa=1.5", "lambda_mfa"), ("mm.caption_dropout=1", "caption_dropout")])
def test_out_of_range_loss_settings_name_the_field(item, named):
    with pytest.raises(ConfigError, match=named):
        build_config("quick", sets=[item])


def test_unknown_preset_lists_known():
    with pytest.raises(ConfigError, match="quick"):
        build_config("fast")


def test_parse_set_nests_and_parses_yaml_scalars():
    assert parse_set(["a.b=1", "a.c=x", "d=true"]) == {"a": {"b": 1, "c": "x"}, "d": True}


@pytest.mark.parametrize("recipe,base", [("dm+mm", "dm"), ("dsa+mm", "dsa")])
def test_a_method_recipe_is_its_base_method_with_its_switches(recipe, base):
    assert recipe in available_recipes()
    cfg = build_config("quick", overrides={"distill": {"method": recipe}})
    assert (cfg.distill.method, cfg.distill.recipe) == (base, recipe)
    switches = recipe_dict(recipe)["mm"]
    assert switches and all(getattr(cfg.mm, key) == value for key, value in switches.items())
    # The preset's per-method sizing follows the base method; the user's layers still win.
    assert cfg.distill.iterations == build_config("quick", overrides={"distill": {"method": base}}).distill.iterations
    key = next(k for k, v in switches.items() if isinstance(v, bool))
    flipped = build_config("quick", overrides={"distill": {"method": recipe}}, sets=[f"mm.{key}={not switches[key]}"])
    assert getattr(flipped.mm, key) == (not switches[key]) and flipped.distill.recipe == recipe


def test_an_unknown_method_names_the_recipes_too():
    from raydd.methods import method_class

    with pytest.raises(ConfigError, match=r"dm\+mm"):
        method_class("dm+cc")
