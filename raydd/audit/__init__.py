"""Privacy audit (DESIGN §7, docs/privacy.md): membership inference (loss threshold, offline LiRA)
against models trained on the synthetic set and on two real references, plus nearest-neighbour
memorisation of the synthetic images."""

from .command import audit_command
from .shadow_tasks import AuditRunner, cluster_audit_runner, local_runner, ray_audit_runner
from .settings import audit_config
from .table import format_audit_grid, format_audit_table
from .workflow import audit_run

__all__ = ["audit_run", "audit_command", "audit_config", "format_audit_table", "format_audit_grid", "ray_audit_runner",
           "cluster_audit_runner", "local_runner", "AuditRunner"]
