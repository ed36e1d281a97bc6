"""The enhancement ablation as a job (same as `raydd ablate`):

    .venv/bin/python jobs/ablation.py --datasets cluttered-fashion-mnist fashion-mnist --methods dm dsa \
        --ipc 10 --seeds 0 1 2 --set dm:distill.iterations=100 --set eval.epochs=150 \
        --work-dir runs/ablation --records docs/benchmarks/ablation-records.jsonl \
        --output docs/benchmarks/ablation-quick.md

--row runs a subset of the rows (e.g. --row base dm+mm); --table-only tabulates what is finished;
--set METHOD:key=value applies to that method's rows only; --records keeps one JSON line per finished
run (rows recorded there under the same protocol are not run again, even without their run directory).
"""

from __future__ import annotations

import argparse

from raydd.ablation import AblationSpec, ablation_table, run_ablation
from raydd.config import DEFAULT_PRESET
from raydd.report.tables import emit_table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["cluttered-fashion-mnist", "fashion-mnist"])
    p.add_argument("--methods", nargs="+", default=["dm", "dsa"])
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--preset", default=DEFAULT_PRESET)
    p.add_argument("--work-dir", default="runs/ablation")
    p.add_argument("--set", action="append",
                   help="extra config field (repeatable); METHOD:key=value applies to that method's rows only")
    # --row, as `raydd ablate` spells it; --rows, this script's earlier spelling, still works.
    p.add_argument("--row", dest="rows", action="extend", nargs="+", default=None,
                   help="only these rows (repeatable), e.g. --row base dm+mm (default: all)")
    p.add_argument("--rows", dest="rows", action="extend", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--table-only", action="store_true", help="tabulate the finished runs; run nothing")
    p.add_argument("--records", default=None,
                   help="JSON-lines file of finished rows: read (recorded rows are not re-run) and extended")
    p.add_argument("--output", default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    spec = AblationSpec(args.datasets, args.methods, args.ipc, args.seeds, args.preset, args.set, args.rows)
    table = ablation_table(run_ablation(spec, args.work_dir, table_only=args.table_only, records=args.records))
    emit_table(table, args.output)


if __name__ == "__main__":
    main()
