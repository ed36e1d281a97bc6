"""The audit grid: one markdown line per audited run directory (run `raydd audit RUN_DIR` first).

    .venv/bin/python jobs/audit_grid.py runs/bench-accuracy/dm-ipc10-seed0 runs/audit-grid/* \
        --output docs/benchmarks/audit-grid-quick.md

Each line names the run's dataset, method, init and enhancements (from its config.yaml) beside what the
audit found (audit.json): LiRA against the synthetic set and both real references, and how close the
synthetic images stay to real ones.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    from raydd.artifacts import AUDIT
    from raydd.audit import format_audit_grid
    from raydd.errors import ConfigError, RunDirError
    from raydd.report.tables import emit_table
    from raydd.results import AuditResult
    from raydd.rundir import RunDir

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", help="audited run directories (local paths or URIs)")
    parser.add_argument("--output", default=None, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    rows = []
    for path in args.run_dirs:
        run = RunDir(path)
        if not run.has(AUDIT):
            raise SystemExit(f"error: {path} has no {AUDIT} (run `raydd audit {path}` first)")
        try:
            rows.append((run.read_config().to_dict(), AuditResult.from_json(run.read_json(AUDIT), run.file(AUDIT))))
        except (ConfigError, RunDirError) as exc:
            raise SystemExit(f"error: {exc}") from None
    table = format_audit_grid(rows)
    emit_table(table, args.output)


if __name__ == "__main__":
    main(sys.argv[1:])
