"""The config flags every front end shares: the `raydd` commands and the jobs/ scripts.

Each flag names the one config field it sets, so ``--ipc 1`` means ``--set distill.ipc=1`` wherever it
is typed. The Typer options (raydd/cli/common.py) and the argparse arguments (``add_config_arguments``)
are both built from ``FLAGS``; ``config_from_flags`` turns the values into a config.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raydd.config import DEFAULT_PRESET, Config, build_config, nest_dotted


@dataclass(frozen=True)
class Flag:
    name: str  # the keyword it travels under (eval_models)
    field: str  # the dotted config field it sets (eval.models)
    type: type
    help: str

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


FLAGS: tuple[Flag, ...] = (
    Flag("dataset", "data.name", str, "fashion-mnist (default), mnist, cluttered-fashion-mnist, a path / fsspec "
         "URI of an imagefolder or of WebDataset shards, or a directory written by raydd preprocess."),
    Flag("method", "distill.method", str, "dm | dc | dsa, or a recipe: dm+mm, dsa+mm"),
    Flag("ipc", "distill.ipc", int, "Synthetic images per class."),
    Flag("seed", "seed", int, "Run seed: every random draw derives from it."),
    Flag("device", "device", str, "auto | cpu | cuda | cuda:N"),
    Flag("iterations", "distill.iterations", int, "Distillation iterations (default: the preset's)."),
    Flag("eval_models", "eval.models", int, "Networks trained from scratch for evaluation."),
    Flag("eval_epochs", "eval.epochs", int, "Epochs per evaluation network."),
)
BY_NAME = {flag.name: flag for flag in FLAGS}

PRESET_HELP = f"quick (sized for a 2-core CPU) or paper (the published protocol; GPU). Default: {DEFAULT_PRESET}."
CONFIG_HELP = "A YAML file with config fields (applied over the preset)."
SET_HELP = "Any config field, e.g. --set distill.batch_real=128 (repeatable)."
ADDRESS_HELP = "Ray address; default RAY_ADDRESS (set by `ray job submit`), else a local Ray"


def flag_layer(**values: Any) -> dict[str, Any]:
    """The flags given (not None) as a config layer: ``ipc=1`` -> ``{"distill": {"ipc": 1}}``."""
    unknown = sorted(set(values) - BY_NAME.keys())
    if unknown:
        raise TypeError(f"not a config flag: {', '.join(unknown)}; flags: {', '.join(BY_NAME)}")
    return nest_dotted({BY_NAME[name].field: value for name, value in values.items() if value is not None})


def config_from_flags(preset: str = DEFAULT_PRESET, file: str | Path | None = None,
                      sets: list[str] | None = None, **values: Any) -> Config:
    """The config a command's flags describe: preset < ``file`` < flags < ``sets`` (raydd/config.py)."""
    return build_config(preset, file=file, overrides=flag_layer(**values), sets=list(sets or []))


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The config flags as argparse arguments (the jobs/ scripts), plus --address to reach Ray."""
    parser.add_argument("--preset", default=DEFAULT_PRESET, help=PRESET_HELP)
    parser.add_argument("--config", default=None, help=CONFIG_HELP)
    for flag in FLAGS:
        parser.add_argument(flag.option, dest=flag.name, type=flag.type, default=None, help=flag.help)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    add_address_argument(parser)


def add_address_argument(parser: argparse.ArgumentParser) -> None:
    """--address, the Ray cluster a jobs/ script joins."""
    parser.add_argument("--address", default=None, help=ADDRESS_HELP)


def add_run_dir_arguments(parser: argparse.ArgumentParser, holding: str, example: str) -> None:
    """--run-dir, --set and --address of the jobs/ scripts that work on a finished run: its own config.yaml
    is the config, so --set layers fields over it instead of over a preset."""
    parser.add_argument("--run-dir", "--out", dest="run_dir", required=True,
                        help=f"run directory holding {holding} (local path or URI)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help=f"config fields over the run's config.yaml, e.g. --set {example}")
    add_address_argument(parser)


def config_from_arguments(args: argparse.Namespace) -> Config:
    """The config of parsed ``add_config_arguments`` flags."""
    return config_from_flags(args.preset, args.config, args.sets, **{f.name: getattr(args, f.name) for f in FLAGS})
