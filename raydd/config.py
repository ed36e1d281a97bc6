"""Run configuration: typed sections, presets as YAML package data, dotted overrides.

Defaults. ``DEFAULT_PRESET`` (quick) is the preset every front end uses when none is named, and the
dataclass defaults below are its values: ``Config()`` is what ``build_config()`` resolves to (DM, IPC
10). So quick.yaml holds only what it sizes per method, and every other preset (paper.yaml) states each
field where it differs from these defaults, itself or through the evaluation protocol it names
(tests/test_config.py checks both). Editing a default here therefore changes quick, and changes another
preset only where that preset is silent.

Resolution order (later wins), each layer a nested dict applied with ``merge``:

    dataclass defaults < preset YAML < the preset's per-method block (``per_method: {dsa: ..., dsa@1: ...}``)
    < method recipe (``--method dm+mm``) < named evaluation protocol (``eval.protocol``)
    < user YAML file (``--config``) < flags (``raydd/flags.py``) < ``--set``

Sections (defined in raydd/config_sections.py). Each section belongs to the module that reads it:
``distill`` (what every method shares, raydd/distill.py and the loop), ``dm`` (raydd/methods/dm.py),
``gradmatch`` (DC/DSA, raydd/methods/gradmatch.py), ``mm`` (the enhancement switches and loss weights
the methods read), ``fusion`` (raydd/models/fusion.py), ``components`` (raydd/components: segmenter,
text encoder), ``prepare`` (raydd/pipeline/parquet_copy.py), ``eval``, ``audit``, ``data``.

A run directory's config.yaml stores every field resolved, so reading it back does not depend on these
defaults; a field added after a run was written reads back as its default, which must therefore keep
the old run's meaning (a new field's default is "as before"). A field moved to another section is
listed in ``MOVED_KEYS`` and every layer is read through that table, so old files and old ``--set``
spellings keep their meaning. Unknown keys are errors rather than silently ignored, so a typo never
runs the wrong experiment.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from raydd.config_sections import (
    DEFAULT_PRESET, EVAL_PROTOCOLS, INIT_CHOICES, AuditConfig, ComponentsConfig, Config, DataConfig, DistillConfig,
    DMConfig, EvalConfig, FusionConfig, GradMatchConfig, MultiModalConfig, PrepareConfig,
)
from raydd.errors import ConfigError


# The sections are defined in raydd/config_sections.py and re-exported here, where callers look for them.
__all__ = [
    "DEFAULT_PRESET", "EVAL_PROTOCOLS", "AuditConfig", "ComponentsConfig", "Config", "DataConfig",
    "DistillConfig", "DMConfig", "EvalConfig", "FusionConfig", "GradMatchConfig", "MultiModalConfig",
    "PrepareConfig", "MOVED_KEYS", "available_presets", "available_recipes", "build_config", "check_protocol",
    "config_from_dict", "current_key", "current_set_item", "dump_yaml", "merge", "migrate_layer",
    "named_protocol", "nest_dotted", "parse_set", "preset_dict", "protocol_layer", "recipe_dict", "stored_layer",
    "validate",
]


def available_presets() -> list[str]:
    files = resources.files("raydd.configs").iterdir()
    return sorted(p.name[: -len(".yaml")] for p in files if p.name.endswith(".yaml"))


def _read_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level")
    return data


def available_recipes() -> list[str]:
    files = resources.files("raydd.configs").joinpath("recipes").iterdir()
    return sorted(p.name[: -len(".yaml")] for p in files if p.name.endswith(".yaml"))


def recipe_dict(name: str) -> dict[str, Any]:
    """A method recipe: ``method`` (the base method) and the config sections it sets (docs/method.md)."""
    text = resources.files("raydd.configs").joinpath("recipes", f"{name}.yaml").read_text()
    data = _read_yaml(text, f"recipe {name}")
    if data.get("method") not in {"dm", "dc", "dsa"}:
        raise ConfigError(f"recipe {name}: 'method' must name a base method")
    return data


def preset_dict(name: str) -> dict[str, Any]:
    if name not in available_presets():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(available_presets())}")
    text = resources.files("raydd.configs").joinpath(f"{name}.yaml").read_text()
    return _read_yaml(text, f"preset {name}")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the field's declared type, with a message naming the key."""
    hint = annotation
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{key}: may not be null")
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], key) for v in value]
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1", "on"):
                    return True
                if value.lower() in ("false", "no", "0", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}") from None
    return value


def merge(*layers: dict[str, Any] | None) -> dict[str, Any]:
    """Nested config dicts, later layers winning field by field (``None`` layers are skipped).

    ``{"eval": {"epochs": 7}}`` changes one field and keeps the rest of its section. This is the one
    way a config layer is applied: presets, per-method blocks, recipes, protocols, files, flags,
    ``--set``, a run's stored config and a Tune trial's values all go through it, so each layer's
    moved keys (``MOVED_KEYS``) are put in their place here, before a later layer can override them.
    """
    return _merge_sections(*(migrate_layer(layer) for layer in layers))


def _merge_sections(*layers: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = _merge_sections(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


# Fields that moved to the section of the module that reads them: old dotted key -> new dotted key.
# Every config layer is read through this table (``merge``, ``config_from_dict``), so a run directory's
# config.yaml, a --config file, a recipe, a Tune space or a ``--set`` with an old key keeps its meaning.
# A key is never reused for another meaning, so the table only grows.
MOVED_KEYS: dict[str, str] = {
    "distill.real_chunk": "dm.real_chunk",
    "distill.outer_loop": "gradmatch.outer_loop",
    "distill.inner_loop": "gradmatch.inner_loop",
    "distill.lr_net": "gradmatch.lr_net",
    "distill.batch_syn_train": "gradmatch.batch_syn_train",
    "mm.cc_dim": "fusion.projection_dim",
    "mm.cc_gain": "fusion.caption_gain",
    "mm.cc_norm": "fusion.caption_norm",
    "mm.caption_dropout": "fusion.caption_dropout",
    "mm.text_encoder": "components.text_encoder",
    "mm.segmenter": "components.segmenter",
}


def current_key(key: str) -> str:
    """A dotted key's spelling today: its ``MOVED_KEYS`` entry, else itself."""
    return MOVED_KEYS.get(key.strip(), key.strip())


def current_set_item(item: str) -> str:
    """``mm.cc_dim=64`` -> ``fusion.projection_dim=64``: a ``--set`` item with its key spelled as today."""
    key, sep, value = item.partition("=")
    return f"{current_key(key)}{sep}{value}" if sep else item


def migrate_layer(layer: dict[str, Any] | None) -> dict[str, Any] | None:
    """``layer`` with each old key of ``MOVED_KEYS`` at its new place; giving both is an error naming them."""
    if not layer or not any(isinstance(layer.get(old.split(".")[0]), dict) for old in MOVED_KEYS):
        return layer
    out = {key: dict(value) if isinstance(value, dict) else value for key, value in layer.items()}
    for old, new in MOVED_KEYS.items():
        (old_section, old_field), (new_section, new_field) = old.split("."), new.split(".")
        if not isinstance(out.get(old_section), dict) or old_field not in out[old_section]:
            continue
        target = out.setdefault(new_section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{new_section}: expected a mapping")
        if new_field in target:
            raise ConfigError(f"{old} and {new} are both given; {old} is the old name of {new}: keep {new}")
        target[new_field] = out[old_section].pop(old_field)
    return {key: value for key, value in out.items() if value != {} or layer[key] == {}}  # no emptied section


def stored_layer(data: dict[str, Any]) -> dict[str, Any]:
    """A complete config as a run directory or a search stored it, with the meaning it was written with.

    Where the meaning of a stored field changed after the file was written, the file is read as it
    was meant (``MOVED_KEYS`` covers renamed fields; this covers changed meanings):

    - ``mm.lambda_cm`` weighted caption matching's distance *summed* over synthetic images before
      ``mm.cm_reduction`` existed. A stored config without ``cm_reduction`` and with caption matching on
      reads as ``cm_reduction: sum`` with its weight, so it resumes and evaluates as it ran; with
      caption matching off the weight had no effect and reads as today's default.
    - ``mm.mask_init`` under ``distill.init: noise`` was accepted and did nothing (there is no real
      image to isolate); it is now a configuration error, and such a stored config reads as what ran:
      ``mask_init: false``.
    """
    mm = data.get("mm")
    if not isinstance(mm, dict):
        return data
    mm = dict(mm)
    if "lambda_cm" in mm and "cm_reduction" not in mm:
        if mm.get("cm") is True:
            mm["cm_reduction"] = "sum"
        else:
            del mm["lambda_cm"]
    distill = data.get("distill")
    if mm.get("mask_init") is True and isinstance(distill, dict) and distill.get("init") == "noise":
        mm["mask_init"] = False
    return {**data, "mm": mm}


def nest_dotted(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"distill.ipc": 10, "seed": 1}`` -> ``{"distill": {"ipc": 10}, "seed": 1}``: a layer to ``merge``."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.strip().split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is given both as a value and as a section")
        node[leaf] = value
    return nested


def _apply(obj: Any, data: dict[str, Any], prefix: str = "") -> None:
    """Set a dataclass's fields from a nested dict, typed, naming any unknown or mistyped key."""
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {full!r}; known: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{full}: expected a mapping")
            _apply(current, value, prefix=f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def _typed(data: dict[str, Any]) -> Config:
    """The defaults with ``data`` applied, not yet validated (a probe may hold a recipe name as method)."""
    cfg = Config()
    _apply(cfg, migrate_layer(data) or {})
    return cfg


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["distill.ipc=10", "eval.cross_arch=alexnet,vgg11"]`` -> nested dict (values parsed as YAML)."""
    flat: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. distill.ipc=10")
        key, raw = item.split("=", 1)
        try:
            flat[key] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            flat[key] = raw
        _note_moved(key)
    return nest_dotted(flat)


_NOTED: set[str] = set()


def _note_moved(key: str) -> None:
    """One stderr line per process for a ``--set`` key spelled the old way: it works, and says where it went."""
    new = current_key(key)
    if new != key.strip() and key.strip() not in _NOTED:
        _NOTED.add(key.strip())
        print(f"note: --set {key.strip()} is now spelled {new} (the old spelling still works)", file=sys.stderr)


def _file_layer(file: str | Path | None) -> dict[str, Any] | None:
    if file is None:
        return None
    path = Path(file)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    return _read_yaml(path.read_text(), str(path))


def _recipe_layers(method: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A recipe's switches, and the (method, recipe) fields it resolves to; empty for a base method."""
    if method not in available_recipes():
        return {}, {}
    settings = recipe_dict(method)
    switches = {k: v for k, v in settings.items() if k != "method"}
    return switches, {"distill": {"method": settings["method"], "recipe": method}}


def build_config(
    preset: str = DEFAULT_PRESET,
    *,
    file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
) -> Config:
    """Resolve a configuration from a preset, an optional YAML file, flag overrides and ``--set`` items,
    in the order the module docstring gives."""
    base = preset_dict(preset)
    per_method = base.pop("per_method", None) or {}
    user = [_file_layer(file), overrides, parse_set(sets or [])]
    # The preset may size each method (and a method at an IPC, key "dsa@1") differently: DC's inner
    # loops cost far more than DM's iterations. The user's layers still win over these values.
    probe = _typed(merge(base, *user)).distill
    switches, named = _recipe_layers(probe.method)
    method = named["distill"]["method"] if named else probe.method
    block = merge(per_method.get(method), per_method.get(f"{method}@{probe.ipc}"))
    below_user = [base, block, switches]
    protocol = _typed(merge(*below_user, *user)).eval.protocol  # named by any layer, the preset's included
    if protocol is not None:  # below the user's layers: a field they set themselves wins
        below_user.append(protocol_layer(protocol))
    return config_from_dict(merge(*below_user, *user, named, {"preset": preset}))


def protocol_layer(name: str) -> dict[str, Any]:
    """The config fields a named evaluation protocol sets, as a layer to merge."""
    check_protocol(name)
    return {"eval": {"protocol": name, **EVAL_PROTOCOLS[name]}}


def check_protocol(name: str | None) -> None:
    if name is not None and name not in EVAL_PROTOCOLS:
        raise ConfigError(f"eval.protocol: unknown protocol {name!r}; known: {', '.join(sorted(EVAL_PROTOCOLS))} "
                          "(or null: eval.augment and eval.epochs as given)")


def named_protocol(layers: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> str | None:
    """The protocol the last layer naming one names (None if no layer names one)."""
    named = [layer["eval"]["protocol"] for layer in layers
             if isinstance(layer.get("eval"), dict) and "protocol" in layer["eval"]]
    return named[-1] if named else None


def config_from_dict(data: dict[str, Any]) -> Config:
    """A validated config from a nested dict (a run's config.yaml, merged layers); missing fields: defaults."""
    cfg = _typed(data)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    d, e = cfg.distill, cfg.eval
    check_protocol(e.protocol)
    checks = [
        (d.ipc >= 1, "distill.ipc must be >= 1"),
        (d.iterations is None or d.iterations >= 0, "distill.iterations must be >= 0"),
        (d.batch_real >= 1, "distill.batch_real must be >= 1"),
        (d.init in ("real", "noise"), f"distill.init must be real or noise, got {d.init!r}"),
        (d.init_choice in INIT_CHOICES,
         f"distill.init_choice must be one of {', '.join(INIT_CHOICES)}, got {d.init_choice!r}"),
        (d.init_choice == "random" or d.init == "real",
         f"distill.init_choice={d.init_choice} chooses which real images start the set and needs distill.init=real; "
         f"with distill.init={d.init} there is no real image to choose: unset distill.init_choice or use distill.init=real"),
        (d.checkpoint_every >= 1, "distill.checkpoint_every must be >= 1"),
        (d.log_every >= 1, "distill.log_every must be >= 1"),
        (e.models >= 1, "eval.models must be >= 1"),
        (e.epochs >= 1, "eval.epochs must be >= 1"),
        (e.augment in ("dsa", "none"), f"eval.augment must be dsa or none, got {e.augment!r}"),
        (0.0 <= cfg.data.val_fraction < 1.0, "data.val_fraction must be in [0, 1)"),
        (cfg.prepare.on_bad_row in ("fail", "skip"),
         f"prepare.on_bad_row must be fail or skip, got {cfg.prepare.on_bad_row!r}"),
        (cfg.mm.fill in ("mean", "blur", "noise"), f"mm.fill must be mean, blur or noise, got {cfg.mm.fill!r}"),
        (cfg.mm.mfa_level in ("input", "feature"), f"mm.mfa_level must be input or feature, got {cfg.mm.mfa_level!r}"),
        (0.0 <= cfg.mm.lambda_mfa <= 1.0 and 0.0 <= cfg.mm.lambda_mgm <= 1.0, "mm.lambda_mfa/lambda_mgm must be in [0, 1]"),
        (cfg.mm.lambda_cm >= 0 and cfg.mm.tau >= 0, "mm.lambda_cm and mm.tau must be >= 0"),
        (cfg.mm.cm_reduction in ("mean", "sum"), f"mm.cm_reduction must be mean or sum, got {cfg.mm.cm_reduction!r}"),
        (0.0 <= cfg.fusion.caption_dropout < 1.0, "fusion.caption_dropout must be in [0, 1)"),
        (cfg.fusion.caption_gain > 0, "fusion.caption_gain must be positive"),
        (cfg.fusion.caption_norm in ("layer", "none"), "fusion.caption_norm must be layer or none"),
        (not cfg.mm.mfa or d.method == "dm", "mm.mfa (masked feature alignment) applies to dm; use mm.mgm with dc/dsa"),
        (not cfg.mm.mgm or d.method in ("dc", "dsa"), "mm.mgm (masked gradient matching) applies to dc/dsa; use mm.mfa with dm"),
        (not cfg.mm.mask_init or d.init == "real",
         "mm.mask_init starts the synthetic images from object-isolated real images and needs distill.init=real; "
         f"with distill.init={d.init} there is no real image to isolate: unset mm.mask_init or use distill.init=real"),
        (not cfg.mm.class_templates or not cfg.mm.cc,
         "mm.class_templates may feed caption matching only: as a caption input (cc) it would hand the label to the classifier"),
    ]
    f = cfg.dm
    checks += [
        (f.real_chunk is None or f.real_chunk >= 1, "dm.real_chunk must be >= 1 (or null: all at once)"),
        (f.networks >= 1 and f.draws >= 1 and f.bank_real >= 1, "dm.networks, dm.draws and dm.bank_real must be >= 1"),
        (f.refresh_every >= 0, "dm.refresh_every must be >= 0 (0: build the bank once)"),
        (1 <= f.entries_per_step <= f.networks * f.draws,
         f"dm.entries_per_step must be in 1..dm.networks*dm.draws ({f.networks * f.draws})"),
        (f.pool in ("random", "trained"), f"dm.pool must be random or trained, got {f.pool!r}"),
        (f.pool_trainings >= 1 and f.pool_steps >= 1, "dm.pool_trainings and dm.pool_steps must be >= 1"),
        (0.0 < f.pool_lambda_max <= 1.0, "dm.pool_lambda_max must be in (0, 1]"),
        (f.pool == "random" or f.bank, "dm.pool=trained needs dm.bank=true (the pool's features live in the bank)"),
        (f.formation in (1, 2, 4), f"dm.formation must be 1, 2 or 4, got {f.formation}"),
        (f.optimizer in ("sgd", "adam"), f"dm.optimizer must be sgd or adam, got {f.optimizer!r}"),
        (f.schedule in ("constant", "cosine"), f"dm.schedule must be constant or cosine, got {f.schedule!r}"),
        (not (f.bank or f.formation > 1) or d.method == "dm",
         "dm.bank and dm.formation belong to the DM method; unset them for dc/dsa"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)
