"""The audit's configuration: the run's own config, with the audit section of a preset and the user's flags.

The run's data, distillation and evaluation sections never change here: the audit attacks models
trained under the run's protocol. Only the audit's sizes (population, shadows, epochs) are chosen.
"""

from __future__ import annotations

import dataclasses

from raydd.config import AuditConfig, Config, build_config, parse_set
from raydd.errors import ConfigError
from raydd.rundir import RunDir

from .attacks import VARIANCES


def audit_config(run_dir: str, *, preset: str | None = None, shadows: int | None = None, members: int | None = None,
                 sets: list[str] | tuple[str, ...] = ()) -> Config:
    """The run's config; ``preset`` replaces its audit section by that preset's; then flags, then ``--set``."""
    layers = []
    if preset is not None:  # every audit field as that preset resolves it, so nothing of the run's own stays
        layers.append({"audit": {**dataclasses.asdict(build_config(preset).audit), "preset": preset}})
    layers.append({"audit": {k: v for k, v in {"shadows": shadows, "members": members}.items() if v is not None}})
    layers.append(parse_set(list(sets)))
    cfg = RunDir(run_dir).read_config(*layers)
    check_audit(cfg.audit)
    return cfg


def check_audit(a: AuditConfig) -> None:
    checks = [
        (a.members >= 1, "audit.members must be >= 1"),
        (a.shadows >= 2, "audit.shadows must be >= 2 (LiRA compares each image with shadows that never saw it)"),
        (a.targets >= 1, "audit.targets must be >= 1"),
        (a.epochs is None or a.epochs >= 1, "audit.epochs must be >= 1 (or null: eval.epochs)"),
        (a.real_epochs is None or a.real_epochs >= 1, "audit.real_epochs must be >= 1 (or null: eval.epochs)"),
        (a.shadow_iterations is None or a.shadow_iterations >= 0, "audit.shadow_iterations must be >= 0"),
        (a.variance in VARIANCES, f"audit.variance must be one of {', '.join(VARIANCES)}, got {a.variance!r}"),
        (a.nn_pool is None or a.nn_pool >= 1, "audit.nn_pool must be >= 1 (or null: every member)"),
        (a.nn_queries >= 1, "audit.nn_queries must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
