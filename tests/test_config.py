"""Config resolution: preset < file < flags < --set, typed coercion, loud unknown keys; the defaults are
the default preset's; run directories written earlier keep their meaning."""

from pathlib import Path

import pytest
import yaml

import raydd.config as config_module
from raydd.config import (DEFAULT_PRESET, EVAL_PROTOCOLS, MOVED_KEYS, Config, available_presets, available_recipes,
                          build_config, config_from_dict, merge, parse_set, preset_dict, protocol_layer, recipe_dict)
from raydd.errors import ConfigError, RunDirError
from raydd.flags import FLAGS, config_from_arguments, config_from_flags, flag_layer
from raydd.rundir import RunDir


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
                                         ("mm.lambda_mfa=1.5", "lambda_mfa"),
                                         ("fusion.caption_dropout=1", "caption_dropout")])
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


def test_paper_evaluates_under_the_dsa_protocol_and_dc_names_the_dc_papers():
    paper = build_config("paper").eval
    assert (paper.protocol, paper.augment, paper.epochs) == ("dsa", "dsa", 1000)
    dc = build_config("paper", sets=["eval.protocol=dc"]).eval
    assert (dc.protocol, dc.augment, dc.epochs) == ("dc", "none", 300)
    # The trainer itself is the same under both (the reference's evaluate_synset).
    assert (dc.lr, dc.momentum, dc.weight_decay, dc.batch) == (paper.lr, paper.momentum, paper.weight_decay,
                                                              paper.batch) == (0.01, 0.9, 5e-4, 256)
    assert EVAL_PROTOCOLS == {"dsa": {"augment": "dsa", "epochs": 1000}, "dc": {"augment": "none", "epochs": 300}}


def test_quick_keeps_its_cut_unless_a_protocol_is_named():
    quick = build_config("quick").eval
    assert (quick.protocol, quick.augment, quick.epochs) == (None, "dsa", 300)
    named = build_config("quick", sets=["eval.protocol=dsa"]).eval
    assert (named.augment, named.epochs) == ("dsa", 1000)


def test_fields_set_with_a_protocol_win_over_it(tmp_path):
    cfg = build_config("paper", overrides={"eval": {"epochs": 7}}, sets=["eval.protocol=dc"])
    assert (cfg.eval.protocol, cfg.eval.augment, cfg.eval.epochs) == ("dc", "none", 7)
    f = tmp_path / "c.yaml"
    f.write_text("eval: {protocol: dc, augment: dsa}\n")
    assert build_config("quick", file=f).eval.augment == "dsa"


@pytest.mark.parametrize("where", ["sets", "stored"])
def test_an_unknown_protocol_is_a_config_error_naming_the_field(where):
    with pytest.raises(ConfigError, match=r"eval\.protocol: unknown protocol 'dd'.*dc, dsa"):
        if where == "sets":
            build_config("quick", sets=["eval.protocol=dd"])
        else:
            config_from_dict({"eval": {"protocol": "dd"}})


def test_a_config_written_before_protocols_still_loads(tmp_path):
    old = build_config("quick").to_dict()
    del old["eval"]["protocol"]
    cfg = config_from_dict(old)
    assert (cfg.eval.protocol, cfg.eval.augment, cfg.eval.epochs) == (None, "dsa", 300)
    # Evaluating an existing run under a named protocol: its fields, below the command's own.
    run = RunDir(str(tmp_path / "run"))
    run.create_or_check(cfg, resume=False)
    run.write_config(cfg)
    again = run.read_config({"eval": {"protocol": "dc"}})
    assert (again.eval.protocol, again.eval.augment, again.eval.epochs) == ("dc", "none", 300)
    assert run.read_config({"eval": {"models": 1}}, {"eval": {"protocol": "dc", "epochs": 5}}).eval.epochs == 5
    assert run.read_config().eval.protocol is None


# -- one set of defaults ------------------------------------------------------------------------------
def _flat(data: dict, prefix: str = "") -> dict:
    """Nested config dict -> {"section.field": value}."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_the_dataclass_defaults_are_the_default_presets_values():
    assert DEFAULT_PRESET == "quick"
    assert Config() == build_config() == build_config(DEFAULT_PRESET)
    # So the default preset's file has nothing to add but what it sizes per method.
    assert set(preset_dict(DEFAULT_PRESET)) <= {"per_method"}


@pytest.mark.parametrize("preset", ["quick", "paper"])
@pytest.mark.parametrize("method", ["dm", "dc", "dsa"])
@pytest.mark.parametrize("ipc", [1, 10])
def test_a_preset_differs_from_the_defaults_only_where_it_says_so(preset, method, ipc):
    stated = preset_dict(preset)
    per_method = stated.pop("per_method", {})
    cfg = build_config(preset, overrides={"distill": {"method": method, "ipc": ipc}})
    named = set(_flat(stated)) | set(_flat(per_method.get(method, {}))) | set(_flat(per_method.get(f"{method}@{ipc}", {})))
    if cfg.eval.protocol:
        named |= set(_flat(protocol_layer(cfg.eval.protocol)))
    defaults, resolved = _flat(Config().to_dict()), _flat(cfg.to_dict())
    differs = {key for key in resolved if resolved[key] != defaults[key]} - {"preset", "distill.method", "distill.ipc"}
    assert differs <= named, f"{preset} differs from the defaults in {sorted(differs - named)} without saying so"


# -- run directories written before this layout keep their meaning -------------------------------------
DATA = Path(__file__).parent / "data"
# config.yaml files written by raydd 0.1.0 (build_config + RunDir.write_config), and how they were built.
WRITTEN = {
    "rundir-config-quick-dm.yaml": ("quick", {}),
    "rundir-config-quick-dsa-ipc1.yaml": ("quick", {"distill": {"method": "dsa", "ipc": 1}}),
    "rundir-config-paper-dsa-mm.yaml": ("paper", {"distill": {"method": "dsa+mm"}}),
}


def _run_with(tmp_path, name: str, drop: str | None = None) -> RunDir:
    data = yaml.safe_load((DATA / name).read_text())
    if drop:
        del data[drop]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return RunDir(str(tmp_path / "run"))


@pytest.mark.parametrize("name", sorted(WRITTEN))
def test_a_stored_config_reads_back_and_resumes_as_it_was_built(tmp_path, name):
    preset, overrides = WRITTEN[name]
    run = _run_with(tmp_path, name)
    assert run.read_config() == build_config(preset, overrides=overrides)
    run.create_or_check(build_config(preset, overrides=overrides), resume=True)  # the same run: no error
    with pytest.raises(RunDirError, match="different configuration"):
        run.create_or_check(build_config(preset, overrides=overrides, sets=["distill.ipc=3"]), resume=True)


@pytest.mark.parametrize("section", ["audit", "dm", "prepare"])
def test_a_run_from_before_a_section_existed_reads_it_as_quick_and_resumes_under_quick(tmp_path, section):
    run = _run_with(tmp_path, "rundir-config-quick-dm.yaml", drop=section)
    assert getattr(run.read_config(), section) == getattr(build_config("quick"), section)
    run.create_or_check(build_config("quick"), resume=True)


def test_a_run_written_when_caption_matching_summed_over_images_keeps_that_meaning(tmp_path):
    """mm.lambda_cm once weighted a sum over synthetic images; such a run reads back as cm_reduction sum."""
    data = yaml.safe_load((DATA / "rundir-config-quick-dm.yaml").read_text())
    assert "cm_reduction" not in data["mm"] and data["mm"]["lambda_cm"] == 0.1
    data["mm"]["cm"] = True
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    run = RunDir(str(tmp_path / "run"))
    as_written = build_config("quick", sets=["mm.cm=true", "mm.cm_reduction=sum", "mm.lambda_cm=0.1"])
    assert run.read_config() == as_written
    run.create_or_check(as_written, resume=True)
    with pytest.raises(RunDirError, match="different configuration"):
        run.create_or_check(build_config("quick", sets=["mm.cm=true"]), resume=True)  # today's mean reduction
    # Written today, the field is stored and read back as it is.
    assert config_from_dict(build_config("quick", sets=["mm.cm=true"]).to_dict()).mm.cm_reduction == "mean"


def test_the_default_caption_weight_is_the_old_default_strength_at_ipc_10():
    """lambda_cm 1.0 on the mean over 10 images per class is lambda_cm 0.1 on their sum."""
    cfg = build_config("quick")
    assert cfg.distill.ipc == 10 and cfg.mm.cm_reduction == "mean"
    assert cfg.mm.lambda_cm == pytest.approx(0.1 * cfg.distill.ipc)
    with pytest.raises(ConfigError, match="cm_reduction"):
        build_config("quick", sets=["mm.cm_reduction=max"])


def test_mask_aware_init_under_noise_init_is_a_config_error_naming_both():
    """mm.mask_init isolates the real images real init copies; under noise init there are none."""
    for make in (lambda: build_config("quick", sets=["mm.mask_init=true", "distill.init=noise"]),
                 lambda: build_config("quick", sets=["distill.init=noise"], overrides={"distill": {"method": "dsa+mm"}}),
                 lambda: config_from_dict({"distill": {"init": "noise"}, "mm": {"mask_init": True}})):
        with pytest.raises(ConfigError, match="mm.mask_init.*distill.init=real.*distill.init=noise"):
            make()
    assert build_config("quick", sets=["mm.mask_init=true"]).mm.mask_init  # under real init: fine
    assert build_config("quick", sets=["distill.init=noise"]).distill.init == "noise"


def test_a_run_written_with_mask_init_under_noise_init_reads_back_as_what_ran(tmp_path):
    data = yaml.safe_load((DATA / "rundir-config-quick-dm.yaml").read_text())
    data["distill"]["init"], data["mm"]["mask_init"] = "noise", True
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = RunDir(str(tmp_path / "run")).read_config()
    assert cfg == build_config("quick", sets=["distill.init=noise"]) and not cfg.mm.mask_init


# -- one merge, one flag table ---------------------------------------------------------------------------
def test_merge_replaces_field_by_field_and_leaves_its_layers_alone():
    stored = {"eval": {"models": 5, "epochs": 1000}, "seed": 0, "distill": {"snapshots": [10]}}
    layer = {"eval": {"epochs": 7}, "seed": None}
    merged = merge(stored, None, layer)
    assert merged == {"eval": {"models": 5, "epochs": 7}, "seed": None, "distill": {"snapshots": [10]}}
    merged["distill"]["snapshots"].append(20)
    assert stored == {"eval": {"models": 5, "epochs": 1000}, "seed": 0, "distill": {"snapshots": [10]}}
    assert layer == {"eval": {"epochs": 7}, "seed": None}


def test_a_key_set_as_value_and_section_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="distill"):
        parse_set(["distill=1", "distill.ipc=2"])


def test_flags_name_their_config_fields():
    assert flag_layer(ipc=1, dataset=None, eval_models=3, seed=0) == {"distill": {"ipc": 1}, "eval": {"models": 3},
                                                                      "seed": 0}
    with pytest.raises(TypeError, match="ipcs"):
        flag_layer(ipcs=1)


def test_the_cli_and_the_jobs_take_the_same_config_flags():
    import typer.main

    from raydd.cli import app
    from raydd.pipeline.cluster import parse_run_arguments

    wanted = {flag.option for flag in FLAGS} | {"--preset", "--config", "--set"}
    click = typer.main.get_command(app)
    for command in ("distill", "run", "tune"):
        options = {opt for param in click.commands[command].params for opt in param.opts}
        assert wanted <= options, command
    argv = ["--ipc", "1", "--method", "dsa", "--eval-epochs", "5", "--preset", "paper", "--set", "seed=3"]
    args = parse_run_arguments("a job", ["--out", "x", *argv])
    assert config_from_arguments(args) == config_from_flags("paper", None, ["seed=3"], ipc=1, method="dsa",
                                                            eval_epochs=5)
    assert parse_run_arguments("a job", ["--out", "x"]).preset == DEFAULT_PRESET


@pytest.mark.parametrize("job", ["audit", "evaluate"])
def test_the_jobs_on_a_finished_run_take_its_directory_sets_and_address_alike(job):
    import importlib

    parse_args = importlib.import_module(f"jobs.{job}").parse_args
    args = parse_args(["--out", "runs/a", "--set", "seed=3", "--set", "eval.models=2", "--address", "auto"])
    assert (args.run_dir, args.sets, args.address) == ("runs/a", ["seed=3", "eval.models=2"], "auto")
    assert (parse_args(["--run-dir", "runs/a"]).sets, parse_args(["--run-dir", "runs/a"]).address) == ([], None)


# -- fields that moved to the section of the module that reads them ---------------------------------------
def _at(data: dict, dotted: str):
    section, name = dotted.split(".")
    return data[section][name]


def test_every_moved_key_names_a_field_that_exists_and_its_old_name_is_gone():
    fields = _flat(Config().to_dict())
    assert MOVED_KEYS and all(new in fields and old not in fields for old, new in MOVED_KEYS.items())
    assert len(set(MOVED_KEYS.values())) == len(MOVED_KEYS)  # no two old keys land on one field


@pytest.mark.parametrize("name", sorted(WRITTEN))
def test_a_stored_config_keeps_each_moved_value_at_its_new_place(tmp_path, name):
    stored = yaml.safe_load((DATA / name).read_text())
    cfg = _run_with(tmp_path, name).read_config().to_dict()
    assert {new: _at(cfg, new) for new in MOVED_KEYS.values()} == \
        {new: _at(stored, old) for old, new in MOVED_KEYS.items()}


@pytest.mark.parametrize("old, new, value", [("distill.outer_loop", "gradmatch.outer_loop", 2),
                                             ("mm.cc_dim", "fusion.projection_dim", 64),
                                             ("distill.real_chunk", "dm.real_chunk", None),
                                             ("mm.segmenter", "components.segmenter", "grabcut")])
def test_an_old_set_spelling_sets_the_moved_field_and_says_so_once(capsys, old, new, value):
    config_module._NOTED.discard(old)
    spelled = "null" if value is None else value
    assert build_config(sets=[f"{old}={spelled}"]) == build_config(sets=[f"{new}={spelled}"])
    build_config(sets=[f"{old}={spelled}"])
    assert capsys.readouterr().err.count(f"--set {old} is now spelled {new}") == 1
    assert build_config(sets=[f"{old}={spelled}"]).to_dict()[new.split(".")[0]][new.split(".")[1]] == value


def test_old_spellings_read_in_every_layer_and_the_later_layer_still_wins(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("distill: {inner_loop: 3, lr_net: 0.05}\nmm: {cc_gain: 2.0, text_encoder: 'openclip:ViT-B-32'}\n")
    cfg = build_config(file=f)
    assert (cfg.gradmatch.inner_loop, cfg.gradmatch.lr_net, cfg.fusion.caption_gain) == (3, 0.05, 2.0)
    assert cfg.components.text_encoder == "openclip:ViT-B-32"
    assert build_config(file=f, sets=["gradmatch.inner_loop=4"]).gradmatch.inner_loop == 4  # new over old
    f.write_text("gradmatch: {inner_loop: 3}\n")
    assert build_config(file=f, sets=["distill.inner_loop=5"]).gradmatch.inner_loop == 5  # old over new
    # The preset's per-method block and a recipe are layers too: quick's DC/DSA inner loop, dsa+mm's dropout.
    assert build_config(overrides={"distill": {"method": "dsa+mm"}}).fusion.caption_dropout == 0.0
    assert build_config(overrides={"distill": {"method": "dsa"}}).gradmatch.inner_loop == 10
    assert merge({"mm": {"cc_dim": 32}}, {"fusion": {"projection_dim": 16}}) == {"fusion": {"projection_dim": 16}}


def test_both_spellings_in_one_layer_is_a_config_error_naming_both():
    with pytest.raises(ConfigError, match=r"mm\.cc_dim and fusion\.projection_dim are both given"):
        build_config(sets=["mm.cc_dim=64", "fusion.projection_dim=32"])
    with pytest.raises(ConfigError, match=r"distill\.real_chunk and dm\.real_chunk"):
        config_from_dict({"distill": {"real_chunk": 8}, "dm": {"real_chunk": 16}})


def test_a_moved_field_keeps_its_checks_under_its_new_name():
    with pytest.raises(ConfigError, match=r"dm\.real_chunk must be >= 1"):
        build_config(sets=["distill.real_chunk=0"])
    with pytest.raises(ConfigError, match=r"fusion\.caption_norm must be layer or none"):
        build_config(sets=["mm.cc_norm=batch"])


def test_dc_dsa_refuse_the_dm_switches_but_not_dms_memory_bound():
    for method in ("dc", "dsa"):
        with pytest.raises(ConfigError, match="dm.bank and dm.formation belong to the DM method"):
            build_config(overrides={"distill": {"method": method}}, sets=["dm.bank=true"])
        with pytest.raises(ConfigError, match="dm.bank and dm.formation belong to the DM method"):
            build_config(overrides={"distill": {"method": method}}, sets=["dm.formation=2"])
        # real_chunk moved into dm, but it bounds memory and changes no value: every stored DC/DSA run has it.
        assert build_config(overrides={"distill": {"method": method}}, sets=["distill.real_chunk=8"]).dm.real_chunk == 8


def test_each_method_reads_its_own_section():
    from raydd.methods import method_class

    assert {m: method_class(m).config_section for m in ("dm", "dc", "dsa")} == \
        {"dm": "dm", "dc": "gradmatch", "dsa": "gradmatch"}
    for method in ("dm", "dc", "dsa"):
        cls = method_class(method)
        assert isinstance(getattr(Config(), cls.config_section), cls.section_type)
