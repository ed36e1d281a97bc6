"""Search spaces of ``raydd tune``: dotted config keys mapped to a list (a choice) or a range.

``("loguniform", lo, hi)`` in Python, ``{loguniform: [lo, hi]}`` in YAML; spaces shipped with raydd
(``raydd/configs/spaces``) are named instead of a file. Normalised to ``{key: {kind: [args]}}`` so a
space is JSON data that a search saves and a resume reads back; checked against the base config (and
against the Optuna searcher, which takes no grid) before Ray starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from raydd.config import Config, config_from_dict, merge, nest_dotted, stored_layer
from raydd.errors import ConfigError

OPTUNA_INSTALL = "pip install 'raydd[tune]'"
LIST_KINDS = ("choice", "grid")
RANGE_KINDS = ("uniform", "loguniform", "randint")


def _kind_and_args(key: str, spec: Any) -> tuple[str, list]:
    if isinstance(spec, list):
        return "choice", list(spec)
    if isinstance(spec, tuple) and spec and isinstance(spec[0], str):
        kind, args = spec[0], list(spec[1:])
    elif isinstance(spec, dict) and len(spec) == 1:
        kind, raw = next(iter(spec.items()))
        args = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    else:
        raise ConfigError(f"search space {key}: expected a list of values or a range such as "
                          f"('loguniform', 0.01, 10) / {{loguniform: [0.01, 10]}}, got {spec!r}")
    if kind in LIST_KINDS and len(args) == 1 and isinstance(args[0], (list, tuple)):
        args = list(args[0])  # ("choice", [a, b]) as well as ("choice", a, b)
    return kind, args


def normalize_space(space: dict[str, Any]) -> dict[str, dict[str, list]]:
    """Python or YAML space -> ``{key: {kind: [args]}}`` (JSON-safe, so it can be saved with the search).

    A list is a random choice; ``grid`` tries every value (times ``num_samples``); ``uniform``,
    ``loguniform`` and ``randint`` take ``[low, high]``.
    """
    if not isinstance(space, dict) or not space:
        raise ConfigError("search space: expected a non-empty mapping of dotted config keys to lists or ranges")
    out: dict[str, dict[str, list]] = {}
    for key, spec in space.items():
        kind, args = _kind_and_args(key, spec)
        if kind in LIST_KINDS:
            if not args:
                raise ConfigError(f"search space {key}: the list of values is empty")
        elif kind not in RANGE_KINDS:
            raise ConfigError(f"search space {key}: unknown kind {kind!r}; use a list, "
                              f"{', '.join([*LIST_KINDS, *RANGE_KINDS])}")
        elif len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            raise ConfigError(f"search space {key}: {kind} needs two numbers [low, high], got {args!r}")
        elif not args[0] < args[1] or (kind == "loguniform" and args[0] <= 0):
            raise ConfigError(f"search space {key}: {kind} needs low < high (and low > 0 for loguniform), "
                              f"got {args!r}")
        out[str(key)] = {kind: args}
    return out


def available_spaces() -> list[str]:
    """The search spaces shipped with raydd (``raydd/configs/spaces/NAME.yaml``), by name."""
    from importlib import resources

    folder = resources.files("raydd.configs").joinpath("spaces")
    return sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".yaml"))


def load_space(path: str | Path) -> dict[str, Any]:
    """A YAML space file: ``distill.lr_img: {loguniform: [0.1, 100]}``, ``distill.init: [real, noise]``;
    or the name of a space shipped with raydd (``available_spaces()``) where no such file exists."""
    from importlib import resources

    path = Path(path)
    if path.is_file():
        text = path.read_text()
    elif str(path) in available_spaces():
        text = resources.files("raydd.configs").joinpath("spaces", f"{path}.yaml").read_text()
    else:
        raise ConfigError(f"search space file {path} does not exist (spaces shipped with raydd: "
                          f"{', '.join(available_spaces())})")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of dotted config keys to lists or ranges")
    return data


def tune_domains(space: dict[str, dict[str, list]]) -> dict[str, Any]:
    """The normalised space as Ray Tune sampling domains."""
    from ray import tune

    makers = {"choice": tune.choice, "grid": tune.grid_search, "uniform": tune.uniform,
              "loguniform": tune.loguniform, "randint": tune.randint}
    domains = {}
    for key, spec in space.items():
        kind, args = next(iter(spec.items()))
        domains[key] = makers[kind](args) if kind in LIST_KINDS else makers[kind](*args)
    return domains


def _plain(value: Any) -> Any:
    """numpy scalars (from Tune's samplers) -> Python values, so YAML/JSON writers accept them."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict, str)) else value


def nest(params: dict[str, Any]) -> dict[str, Any]:
    """``{"distill.lr_img": 1.0}`` -> ``{"distill": {"lr_img": 1.0}}`` (the shape of a preset / --set)."""
    return nest_dotted({key: _plain(value) for key, value in params.items()})


def trial_config(base: dict[str, Any], params: dict[str, Any]) -> Config:
    """The base config with a trial's sampled values set (unknown keys fail like a bad --set).

    A base saved by an earlier search (search.json) keeps the meaning it was saved with (``stored_layer``)."""
    return config_from_dict(merge(stored_layer(base), nest(params)))


def check_space(base: dict[str, Any], space: dict[str, dict[str, list]]) -> None:
    """Build a config for every choice and both ends of every range: key typos fail before Ray starts."""
    for key, spec in space.items():
        kind, args = next(iter(spec.items()))
        for value in args:
            try:
                trial_config(base, {key: value})
            except ConfigError as exc:
                raise ConfigError(f"search space {key}={value!r}: {exc}") from None


def check_optuna_space(space: dict[str, dict[str, list]]) -> None:
    """What the optuna searcher can sample: ranges, and choices among plain values.

    A ``grid`` promises every value tried (times ``num_samples``); TPE picks values from what finished
    trials showed, so it cannot keep that promise: the entry is refused rather than quietly turned into
    a choice."""
    for key, spec in space.items():
        kind, args = next(iter(spec.items()))
        if kind == "grid":
            raise ConfigError(f"search space {key}: a grid (every value tried) does not fit the optuna searcher, "
                              f"which chooses values from the trials' results; write the values as a list "
                              f"(a choice: {key}: {args!r}) or search with --searcher random")
        if kind == "choice":
            for value in args:
                if not (value is None or isinstance(value, (bool, int, float, str))):
                    raise ConfigError(f"search space {key}: the optuna searcher chooses among numbers, strings, "
                                      f"booleans or null, got {value!r}")


def require_optuna():
    """The optuna module, or a ConfigError saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise ConfigError(f"--searcher optuna needs the package optuna ({OPTUNA_INSTALL})") from None
    return optuna


