"""The distillation driver's peak memory on a preprocessed source: does it hold the training split?

Preprocesses ``--dataset`` once into ``--prepared`` (kept and reused), then for each setting runs one
``raydd distill`` of a few iterations through Ray Train in a fresh process and reports that driver's
peak resident set (``VmHWM`` of /proc/self/status: the driver alone, not Ray's workers) and its
resident set before the call (imports). ``--no-ray`` on the same source is the reference of a process
that holds the whole training split.

    ray job submit --working-dir . -- python jobs/benchmark_distill_driver.py --dataset fashion-mnist \\
        --records docs/benchmarks/distill-driver.json

Settings: ``classic`` (DM, fresh random networks) and ``trained-pool`` (the fast DM bank with a trained
model pool, whose trainings read every class: ``dm.pool_trainings`` x ``dm.pool_steps`` batches of 256).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout

from benchmark_ingest import peak_rss_mb  # noqa: E402  (this folder is the script's own path entry)

SETTINGS = {
    "classic": [],
    "trained-pool": ["dm.bank=true", "dm.pool=trained", "dm.networks=2", "dm.draws=1", "dm.bank_real=64",
                     "dm.pool_trainings=1", "dm.pool_steps=100"],
}


def measure_one(prepared: str, setting: str, no_ray: bool) -> dict:
    """Runs in its own process: one short distillation, this driver's peak resident set."""
    from raydd.config import build_config
    from raydd.distill import run_distillation
    from raydd.pipeline.train import distill_with_ray

    before = peak_rss_mb()  # imports (torch, Ray) loaded
    cfg = build_config("quick", overrides={"data": {"name": f"parquet:{prepared}"}, "device": "cpu"},
                       sets=["distill.iterations=2", "distill.checkpoint_every=2", *SETTINGS[setting]])
    out = tempfile.mkdtemp(prefix="raydd-distill-driver-")
    try:
        started = time.perf_counter()
        if no_ray:
            run_distillation(cfg, f"{out}/run", show_progress=False)
        else:
            distill_with_ray(cfg, f"{out}/run", workers=1, show_progress=False)
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"seconds": round(seconds, 1), "driver_peak_rss_mb": round(peak_rss_mb(), 1),
            "driver_rss_before_mb": round(before, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--prepared", default="runs/distill-driver/prepared")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--records", default="docs/benchmarks/distill-driver.json")
    parser.add_argument("--label", default="", help="names the code measured (e.g. a commit) in the records")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: PREPARED SETTING in this process
    parser.add_argument("--no-ray", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("RAYDD_PROGRESS", "0")
    if args.one:
        print(json.dumps(measure_one(*args.one, no_ray=args.no_ray)), flush=True)
        return
    prepared = Path(args.prepared).resolve()  # Ray workers run in their own working directory
    if not (prepared / "manifest.json").exists():
        from raydd.pipeline.preprocess import preprocess_to_parquet

        preprocess_to_parquet(args.dataset, str(prepared), segmenter="threshold", text_encoder=None,
                              overwrite=True, show_progress=False)
    records_path = Path(args.records)
    records = json.loads(records_path.read_text()) if records_path.exists() else []
    for setting in args.settings:
        for path in ("ray", "no-ray"):
            key = (args.dataset, setting, path, args.label)
            if any((r["dataset"], r["setting"], r["path"], r.get("label", "")) == key for r in records):
                continue
            command = [sys.executable, __file__, "--one", str(prepared), setting] + (["--no-ray"] * (path == "no-ray"))
            done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            records.append({"dataset": args.dataset, "setting": setting, "path": path, "label": args.label, **result,
                            "machine": f"{os.cpu_count()}-core CPU"})
            records_path.parent.mkdir(parents=True, exist_ok=True)
            records_path.write_text(json.dumps(records, indent=2) + "\n")
            print(f"{setting} ({path}): driver peak {result['driver_peak_rss_mb']:.0f} MB "
                  f"(before the call {result['driver_rss_before_mb']:.0f} MB), {result['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
