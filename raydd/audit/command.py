"""What `raydd audit RUN_DIR` does, minus the terminal: resolve the config, pick a runner, audit.

Kept out of cli.py so the command's logic is testable without Typer and shared with jobs/audit.py's
local use; the CLI only prints the table.
"""

from __future__ import annotations

from raydd.errors import RayddError
from raydd.results import AuditResult

from .shadow_tasks import cluster_audit_runner
from .settings import audit_config
from .workflow import audit_run


def audit_command(run_dir: str, *, preset: str | None = None, shadows: int | None = None, members: int | None = None,
                  sets: list[str] | tuple[str, ...] = (), address: str | None = None, no_ray: bool = False,
                  quiet: bool = False) -> AuditResult:
    """Audit ``run_dir``: on Ray (local, or the cluster at ``address``) unless ``no_ray``."""
    if no_ray and address:
        raise RayddError("--no-ray runs in this process: drop --address")
    cfg = audit_config(run_dir, preset=preset, shadows=shadows, members=members, sets=sets)
    runner = None
    if not no_ray:
        from raydd.pipeline.cluster import init_ray, ray_log_in

        init_ray(address)
        ray_log_in(run_dir)
        runner = cluster_audit_runner(cfg.device, show_progress=not quiet)
    return audit_run(run_dir, cfg, runner=runner, show_progress=not quiet)
