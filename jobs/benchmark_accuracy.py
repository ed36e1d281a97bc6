"""Accuracy benchmark: method (random, DM, DC, DSA) x IPC under one preset, as a markdown table.

    .venv/bin/python jobs/benchmark_accuracy.py --preset quick --methods random dm --ipc 1 10 --seeds 0 1 \
        --work-dir runs/bench-accuracy
    .venv/bin/python jobs/benchmark_accuracy.py --work-dir runs/bench-accuracy --table-only \
        --output docs/benchmarks/accuracy-quick.md

Each (method, ipc, seed) is its own run directory under --work-dir; finished runs are reused and a
killed distillation resumes from its checkpoint, so the benchmark can be stopped and continued, and
several invocations (say, more seeds for the cheap rows) can fill one directory. The table is built
from every finished run found there. Accuracy is pooled over seeds x evaluation models: mean ± std
(population) of the per-model last-epoch test accuracies.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from raydd.artifacts import CONFIG, EVAL
from raydd.config import DEFAULT_PRESET, build_config
from raydd.distill import run_distillation
from raydd.report.tables import emit_table
from raydd.results import EvalResult
from raydd.rundir import RunDir
from raydd.workflows import evaluate_run, run_baseline

TIMING = "timing.json"  # this job's own file beside eval.json: distillation and total seconds


def run_one(method: str, ipc: int, seed: int, args) -> dict:
    out = Path(args.work_dir) / f"{method}-ipc{ipc}-seed{seed}"
    run = RunDir(str(out))
    if run.has(EVAL) and run.has(TIMING):
        return {**EvalResult.from_json(run.read_json(EVAL), run.file(EVAL)).to_json(), **run.read_json(TIMING)}
    sets = list(args.set or [])
    overrides = {"distill": {"ipc": ipc}, "seed": seed, "data": {"name": args.dataset}}
    start = time.perf_counter()
    if method == "random":
        if out.exists():  # a killed baseline has nothing worth keeping
            shutil.rmtree(out)
        cfg = build_config(args.preset, overrides=overrides, sets=sets)
        result = run_baseline("random", cfg, str(out), show_progress=False)
        distill_s = 0.0
    else:
        overrides["distill"]["method"] = method
        cfg = build_config(args.preset, overrides=overrides, sets=sets)
        run_distillation(cfg, str(out), resume=run.has(CONFIG), show_progress=not args.quiet)
        distill_s = time.perf_counter() - start
        result = evaluate_run(str(out), cfg, show_progress=not args.quiet)
    timing = {"distill_seconds": distill_s, "total_seconds": time.perf_counter() - start,
              "torch_threads": torch.get_num_threads()}
    run.write_json(TIMING, timing)
    return {**result.to_json(), **timing}


def collect(work_dir: Path) -> list[dict]:
    groups: dict[tuple, list] = defaultdict(list)
    for ev_path in sorted(work_dir.glob(f"*/{EVAL}")):
        run_dir = ev_path.parent
        if not (run_dir / TIMING).exists():
            continue
        ev = EvalResult.from_json(ev_path.read_text(), str(ev_path))
        run = RunDir(str(run_dir))
        timing = run.read_json(TIMING)
        cfg = run.read_config()  # typed: a config.yaml from an older raydd reads as today's fields
        method = ev.method or cfg.distill.method
        iterations = ev.iterations
        key = (method, cfg.distill.ipc, cfg.preset, iterations)
        groups[key].append({"ev": ev, "timing": timing, "seed": cfg.seed, "cfg": cfg})
    rows = []
    for (method, ipc, preset, iterations), runs in groups.items():
        accs = np.array([a for r in runs for a in r["ev"].accuracy.per_model])
        c = runs[0]["cfg"]
        rows.append({
            "method": method, "ipc": ipc, "preset": preset, "iterations": iterations,
            "batch_real": c.distill.batch_real, "eval_epochs": c.eval.epochs,
            "seeds": sorted(r["seed"] for r in runs), "mean": 100 * accs.mean(), "std": 100 * accs.std(),
            "n": len(accs),
            "distill_seconds": float(np.mean([r["timing"]["distill_seconds"] for r in runs])),
            "seconds": float(np.mean([r["timing"]["total_seconds"] for r in runs])),
        })
    order = {"random": 0, "dm": 1, "dc": 2, "dsa": 3}
    return sorted(rows, key=lambda r: (r["ipc"], order.get(r["method"], 9), r["iterations"] or 0))


def table(rows: list[dict]) -> str:
    lines = [
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}. "
        "Accuracy = mean ± std over seeds x evaluation models (n), last epoch, real test split.\n",
        "| method | IPC | iterations | batch_real | eval epochs | seeds | accuracy % | n | distill s/run | total s/run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        its = "—" if r["method"] == "random" else r["iterations"]
        br = "—" if r["method"] == "random" else r["batch_real"]
        lines.append(f"| {r['method']} | {r['ipc']} | {its} | {br} | {r['eval_epochs']} | "
                     f"{','.join(map(str, r['seeds']))} | {r['mean']:.2f} ± {r['std']:.2f} | {r['n']} | "
                     f"{r['distill_seconds']:.0f} | {r['seconds']:.0f} |")
    notes = []
    for r in rows:
        base = next((b for b in rows if b["method"] == "random" and b["ipc"] == r["ipc"]), None)
        if base is None or r is base:
            continue
        sd = float(np.hypot(r["std"], base["std"]))
        margin = (r["mean"] - base["mean"]) / sd if sd > 0 else float("inf")
        notes.append(f"- {r['method']} IPC {r['ipc']} ({r['iterations']} iterations): "
                     f"{r['mean'] - base['mean']:+.2f} points over random = {margin:.1f} × the combined std")
    return "\n".join(lines + [""] + notes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=DEFAULT_PRESET)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--methods", nargs="+", default=["random", "dm", "dc", "dsa"])
    p.add_argument("--ipc", nargs="+", type=int, default=[1, 10])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--work-dir", default="runs/bench-accuracy")
    p.add_argument("--output", default=None, help="also write the markdown table here (and the rows as .json)")
    p.add_argument("--set", action="append", help="extra config field, e.g. distill.iterations=100 (repeatable)")
    p.add_argument("--table-only", action="store_true", help="only build the table from finished runs")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()

    if not args.table_only:
        for ipc in args.ipc:
            for method in args.methods:
                for seed in args.seeds:
                    r = run_one(method, ipc, seed, args)
                    print(f"{method:>6} ipc={ipc:<3} seed={seed}: {100 * r['accuracy']['mean']:.2f} "
                          f"({r['total_seconds']:.0f} s)", file=sys.stderr, flush=True)
    rows = collect(Path(args.work_dir))
    text = table(rows)
    emit_table(text, args.output)
    if args.output:
        Path(args.output).with_suffix(".json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
