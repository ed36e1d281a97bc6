"""Accuracy benchmark: method (random, DM, DC, DSA) x IPC under one preset, as a markdown table.

    .venv/bin/python jobs/benchmark_accuracy.py --preset quick --ipc 1 10 --seeds 0 1 2 \
        --work-dir runs/bench-accuracy --output docs/benchmarks/accuracy-quick.md

Each (method, ipc, seed) is its own run directory under --work-dir; finished runs are reused, so a
killed benchmark continues where it stopped. Accuracy is pooled over seeds x evaluation models:
mean ± std (population) of the per-model last-epoch test accuracies.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from raydd.config import build_config
from raydd.distill import run_distillation
from raydd.rundir import RunDir
from raydd.workflows import evaluate_run, run_baseline


def run_one(method: str, ipc: int, seed: int, args) -> dict:
    out = Path(args.work_dir) / f"{method}-ipc{ipc}-seed{seed}"
    run = RunDir(str(out))
    if run.has("eval.json") and run.has("timing.json"):
        return {**run.read_json("eval.json"), **run.read_json("timing.json")}
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
        resume = run.has("config.yaml")
        run_distillation(cfg, str(out), resume=resume, show_progress=False)
        distill_s = time.perf_counter() - start
        result = evaluate_run(str(out), cfg, show_progress=False)
    timing = {"distill_seconds": distill_s, "total_seconds": time.perf_counter() - start}
    run.write_json("timing.json", timing)
    return {**result, **timing}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="quick")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--methods", nargs="+", default=["random", "dm", "dc", "dsa"])
    p.add_argument("--ipc", nargs="+", type=int, default=[1, 10])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--work-dir", default="runs/bench-accuracy")
    p.add_argument("--output", default=None, help="also write the markdown table here")
    p.add_argument("--set", action="append", help="extra config field, e.g. eval.models=2 (repeatable)")
    args = p.parse_args()

    rows = []
    for ipc in args.ipc:
        for method in args.methods:
            results = []
            for seed in args.seeds:
                r = run_one(method, ipc, seed, args)
                results.append(r)
                print(f"{method:>6} ipc={ipc:<3} seed={seed}: {100 * r['accuracy']['mean']:.2f} "
                      f"({r['total_seconds']:.0f} s)", file=sys.stderr, flush=True)
            accs = np.array([a for r in results for a in r["accuracy"]["per_model"]])
            rows.append({
                "method": method, "ipc": ipc, "mean": 100 * accs.mean(), "std": 100 * accs.std(), "n": len(accs),
                "seconds": float(np.mean([r["total_seconds"] for r in results])),
                "distill_seconds": float(np.mean([r["distill_seconds"] for r in results])),
                "iterations": None if method == "random" else results[0].get("iterations"),
            })

    cfg = build_config(args.preset)
    header = (f"Preset `{args.preset}` on {args.dataset}; seeds {args.seeds}; {cfg.eval.models} evaluation "
              f"models per seed ({cfg.eval.model}, {cfg.eval.epochs} epochs); machine: {platform.machine()}, "
              f"{torch.get_num_threads()} torch threads, {platform.processor() or 'cpu'}; torch {torch.__version__}.\n")
    lines = [header, "| method | IPC | accuracy % (mean ± std) | n | distill s / run | total s / run |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['ipc']} | {r['mean']:.2f} ± {r['std']:.2f} | {r['n']} | "
                     f"{r['distill_seconds']:.0f} | {r['seconds']:.0f} |")
    # Margin over the random-real baseline, in units of the two standard deviations combined.
    for ipc in args.ipc:
        base = next((r for r in rows if r["method"] == "random" and r["ipc"] == ipc), None)
        if base is None:
            continue
        for r in rows:
            if r["ipc"] == ipc and r["method"] != "random":
                sd = float(np.hypot(r["std"], base["std"])) or float("nan")
                lines.append(f"\n- {r['method']} IPC {ipc}: {r['mean'] - base['mean']:+.2f} points over random "
                             f"({(r['mean'] - base['mean']) / sd:.1f} combined std)")
    table = "\n".join(lines)
    print(table)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(table + "\n")
        Path(args.output).with_suffix(".json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
