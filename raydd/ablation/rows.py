"""Which rows an ablation has, and which ``--set`` items apply to a method's rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raydd.config import available_recipes, recipe_dict
from raydd.data import load_dataset
from raydd.data.registry import get_source, source_has_captions
from raydd.errors import ConfigError

CAPTION_ROWS = {"+cc": {"cc": True}, "+cm": {"cm": True}}
MASK_ROWS = {"dm": {"+mfa": {"mfa": True}}, "dsa": {"+mgm": {"mgm": True}}, "dc": {"+mgm": {"mgm": True}}}
INIT_ROW = {"+mask_init": {"mask_init": True}}


def rows_for(method: str, has_captions: bool) -> dict[str, dict[str, Any]]:
    """Row name -> the config layer it sets (``{"mm": {"cc": True}}``). Datasets without captions get the
    mask rows only."""
    switches: dict[str, dict[str, bool]] = {"base": {}}
    if has_captions:
        switches.update(CAPTION_ROWS)
    switches.update(MASK_ROWS[method])
    switches.update(INIT_ROW)
    combined: dict[str, bool] = {}
    for on in list(switches.values())[1:]:
        combined.update(on)
    switches["+all"] = combined
    rows: dict[str, dict[str, Any]] = {row: {"mm": dict(on)} if on else {} for row, on in switches.items()}
    recipe = f"{method}+mm"
    if has_captions and recipe in available_recipes():
        # The shipped recipe's sections (its mm switches, its fusion settings), under the same protocol.
        rows[recipe] = {key: value for key, value in recipe_dict(recipe).items() if key != "method"}
    return rows


def images_without_captions(dataset: str) -> list[str] | None:
    """None when ``dataset`` carries no captions; else the ids of its images that have none (usually []).

    A registered source says whether it has captions when it registers; an imagefolder or a
    preprocessed directory is read, so the ablation gives caption rows to exactly the datasets that
    can run them.
    """
    if get_source(dataset) is not None:
        return [] if source_has_captions(dataset) else None
    splits = load_dataset(dataset)
    parts = (splits.train, splits.val, splits.test)
    if all(part.captions is None for part in parts):
        return None
    return [image_id for part in parts
            for image_id, caption in zip(part.ids, part.captions or [None] * len(part))
            if caption is None or not caption.strip()]


def caption_row_names(methods: list[str]) -> set[str]:
    """The rows a dataset without captions does not get (``+all`` exists either way)."""
    return set().union(*(set(rows_for(method, True)) - set(rows_for(method, False)) for method in methods))


def run_name(dataset: str, method: str, row: str, ipc: int, seed: int) -> str:
    return f"{Path(dataset.rstrip('/')).name}-{method}-{row.strip('+')}-ipc{ipc}-seed{seed}"


def sets_for(sets: list[str] | None, method: str, methods: list[str]) -> list[str]:
    """The ``--set`` items that apply to one method's rows: plain ``key=value`` items, and
    ``METHOD:key=value`` items of that method (so one command can give DM and DSA different budgets)."""
    chosen = []
    for item in sets or []:
        prefix, scoped, rest = item.partition(":")
        if not scoped or "=" in prefix:  # plain (a value may itself contain ':')
            chosen.append(item)
            continue
        if prefix not in methods:
            raise ConfigError(f"--set {item!r}: {prefix!r} is not one of the ablation's methods "
                              f"({', '.join(methods)})")
        if prefix == method:
            chosen.append(rest)
    return chosen
