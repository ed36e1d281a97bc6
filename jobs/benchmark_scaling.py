"""Ray scaling figures on this machine: Ray startup, Ray Train distillation with 1..K workers, Ray Data rows/s.

    .venv/bin/python jobs/benchmark_scaling.py --workers 1 2 --iterations 20 --output docs/benchmarks/scaling.md

Distillation throughput is measured from metrics.jsonl (seconds between the first and the last logged
iteration), so Ray Train's start-up is reported separately instead of diluting iterations/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from raydd.artifacts import METRICS
from raydd.config import build_config
from raydd.distill import run_distillation
from raydd.pipeline.cluster import init_ray
from raydd.pipeline.train import distill_with_ray
from raydd.report.tables import emit_table


def iterations_per_second(run_dir: Path) -> float:
    rows = [json.loads(x) for x in (run_dir / METRICS).read_text().splitlines()]
    first, last = rows[0], rows[-1]
    return (last["iteration"] - first["iteration"]) / max(1e-9, last["seconds"] - first["seconds"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="dm")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--preprocess-rows", type=int, default=10000, help="rows of fashion-mnist test for Ray Data")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="config fields of the distillation runs, e.g. distill.batch_real=256")
    p.add_argument("--no-data", action="store_true", help="skip the Ray Data rows")
    p.add_argument("--output", default=None)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="raydd-scaling-"))
    cfg = build_config("quick", overrides={"distill": {"method": args.method, "ipc": args.ipc,
                                                       "iterations": args.iterations, "log_every": 1,
                                                       "checkpoint_every": args.iterations}, "device": "cpu"},
                       sets=args.sets)
    rows = []
    start = time.perf_counter()
    init_ray()
    rows.append(("Ray start (local, in-process)", f"{time.perf_counter() - start:.1f} s"))

    run_distillation(cfg, str(work / "plain"), show_progress=False)
    rows.append((f"{args.method} IPC {args.ipc}, one process without Ray", f"{iterations_per_second(work / 'plain'):.3f} it/s"))
    for k in args.workers:
        t0 = time.perf_counter()
        distill_with_ray(cfg, str(work / f"ray{k}"), workers=k, show_progress=False)
        total = time.perf_counter() - t0
        ips = iterations_per_second(work / f"ray{k}")
        overhead = total - args.iterations / ips
        rows.append((f"{args.method} IPC {args.ipc}, Ray Train {k} worker(s)",
                     f"{ips:.3f} it/s (fit overhead {overhead:.0f} s)"))

    if not args.no_data:
        rows += data_rows(cfg, work)
    sets = "".join(f" --set {item}" for item in args.sets)
    header = (f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; torch threads per worker = CPUs / workers. "
              f"Command: `python jobs/benchmark_scaling.py --workers {' '.join(map(str, args.workers))} "
              f"--iterations {args.iterations}{sets}{' --no-data' if args.no_data else ''}`.\n")
    table = "\n".join([header, "| measurement | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows])
    emit_table(table, args.output)
    shutil.rmtree(work, ignore_errors=True)


def data_rows(cfg, work: Path) -> list[tuple[str, str]]:
    """Ray Data's preprocessing throughput, and `raydd run`'s first stage on fashion-mnist, then its reuse."""
    rows = []
    from raydd.pipeline.preprocess import preprocess_to_parquet

    t0 = time.perf_counter()
    manifest = preprocess_to_parquet("fashion-mnist", str(work / "parquet"), splits=["test"], segmenter="threshold",
                                     text_encoder=None, actors=1, show_progress=False)
    seconds = time.perf_counter() - t0
    n = manifest["counts"]["test"]["total"]
    rows.append((f"Ray Data preprocess, threshold masks, 1 actor, {n} rows (incl. actor start)", f"{n / seconds:.0f} rows/s"))

    # The preprocessing stage of `raydd run` on the default dataset (every split), then its reuse.
    from dataclasses import replace

    from raydd.pipeline.parquet_copy import prepare_data

    staged = replace(cfg, prepare=replace(cfg.prepare, root=str(work / "prepared")))
    for what in ("first run: preprocess", "later runs: reuse"):
        t0 = time.perf_counter()
        prepare_data(staged, show_progress=False, log=lambda line: None)
        rows.append((f"`raydd run` stage 1 on fashion-mnist (70 000 rows), {what}", f"{time.perf_counter() - t0:.1f} s"))

    return rows


if __name__ == "__main__":
    main()
