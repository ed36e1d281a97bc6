"""Ingest at scale: rows/s and the driver's peak memory of ``raydd preprocess`` as the source grows.

For each layout (a generated imagefolder, the same images as WebDataset shards, and fashion-mnist) and
each size, one fresh process runs the preprocessing (threshold masks, no captions) as the driver of a
local Ray and reports its own peak resident set (``VmHWM`` of /proc/self/status: the driver alone, not
Ray's workers), the wall time and the rows written. Streaming ingest keeps the driver flat: it holds the
class list, counts and the first error, while tasks decode the images.

    ray job submit --working-dir . -- python jobs/benchmark_ingest.py --sizes 10000 50000 200000 \\
        --layouts imagefolder webdataset fashion-mnist --records docs/benchmarks/ingest.json

Generated sources live under ``--data`` (kept and reused: generating 200 k PNGs takes minutes); each
preprocessing output is written to a temporary folder and removed. Resumable: a (layout, size, actors)
already in ``--records`` is not measured again.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout

CLASSES = 10
TEST_ROWS = 1000  # fixed: the train split is what grows
SHARD_ROWS = 5000


def picture(index: int, label: int, size: int):
    """A deterministic 32x32 RGB picture: a class-coloured square on a noisy background (PNG-sized like a photo)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(index)
    pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    lo, hi = sorted(rng.integers(4, size - 4, 2))
    pixels[lo:hi + 4, lo:hi + 4] = [(37 * label) % 256, (91 * label) % 256, 200]
    return Image.fromarray(pixels)


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def split_rows(rows: int) -> dict[str, int]:
    return {"train": rows, "test": TEST_ROWS}


def make_imagefolder(root: Path, rows: int, size: int) -> Path:
    """``root/{train,test}/metadata.jsonl`` + ``cN/NNNNNNN.png`` (the imagefolder layout of docs/data.md)."""
    if (root / "done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    offset = 0
    for split, count in split_rows(rows).items():
        lines = []
        for i in range(count):
            label = i % CLASSES
            name = f"c{label}/{offset + i:07d}.png"
            path = root / split / name
            path.parent.mkdir(parents=True, exist_ok=True)
            picture(offset + i, label, size).save(path)
            lines.append(json.dumps({"file_name": name, "label": f"class{label}"}))
        (root / split / "metadata.jsonl").write_text("\n".join(lines) + "\n")
        offset += count
    (root / "done").write_text("")
    return root


def make_webdataset(root: Path, rows: int, size: int) -> Path:
    """``root/{train,test}/shard-NNNNN.tar`` of ``key.png`` + ``key.json`` ({"label": name})."""
    if (root / "done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    offset = 0
    for split, count in split_rows(rows).items():
        (root / split).mkdir(parents=True)
        for start in range(0, count, SHARD_ROWS):
            with tarfile.open(root / split / f"shard-{start // SHARD_ROWS:05d}.tar", "w") as tar:
                for i in range(start, min(count, start + SHARD_ROWS)):
                    label = i % CLASSES
                    key = f"{offset + i:07d}"
                    for suffix, data in ((".png", png_bytes(picture(offset + i, label, size))),
                                         (".json", json.dumps({"label": f"class{label}"}).encode())):
                        info = tarfile.TarInfo(key + suffix)
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
        offset += count
    (root / "done").write_text("")
    return root


def peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure_one(source: str, actors: int, cpus_per_actor: float) -> dict:
    """Runs in its own process: preprocess ``source`` once, report rows, seconds and this driver's peak RSS."""
    from raydd.pipeline.preprocess import preprocess_to_parquet

    before = peak_rss_mb()
    out = tempfile.mkdtemp(prefix="raydd-ingest-")
    try:
        started = time.perf_counter()
        manifest = preprocess_to_parquet(source, f"{out}/parquet", segmenter="threshold", text_encoder=None,
                                         actors=actors, cpus_per_actor=cpus_per_actor, show_progress=False)
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(out, ignore_errors=True)
    rows = sum(int(split["total"]) for split in manifest["counts"].values())
    pipeline = manifest["pipeline"]["seconds"]  # the Ray Data part alone, without Ray's start and the checks
    return {"rows": rows, "seconds": round(seconds, 2), "pipeline_seconds": pipeline,
            "rows_per_s": round(rows / seconds, 1), "pipeline_rows_per_s": round(rows / pipeline, 1),
            "rows_per_s_per_actor": round(rows / pipeline / actors, 1),
            "driver_peak_rss_mb": round(peak_rss_mb(), 1), "driver_rss_before_mb": round(before, 1)}


def run_measurement(source: str, actors: int, cpus_per_actor: float) -> dict:
    command = [sys.executable, __file__, "--one", source, "--actors", str(actors),
               "--cpus-per-actor", str(cpus_per_actor)]
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_table(records: list[dict], path: Path) -> None:
    lines = ["| layout | train rows | rows written | actors | seconds (all) | rows/s (all) | rows/s (pipeline) | "
             "rows/s per actor | driver peak RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["layout"], r["size"], r["actors"])):
        lines.append(f"| {r['layout']} | {r['size']} | {r['rows']} | {r['actors']} | {r['seconds']:.1f} | "
                     f"{r['rows_per_s']:.0f} | {r['pipeline_rows_per_s']:.0f} | {r['rows_per_s_per_actor']:.0f} | "
                     f"{r['driver_peak_rss_mb']:.0f} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000], help="train rows")
    parser.add_argument("--layouts", nargs="+", default=["imagefolder", "webdataset", "fashion-mnist"],
                        choices=["imagefolder", "webdataset", "fashion-mnist"])
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--cpus-per-actor", type=float, default=0.5)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--data", default="runs/ingest-data", help="where generated sources are kept")
    parser.add_argument("--records", default="docs/benchmarks/ingest.json")
    parser.add_argument("--table", default="", help="also write the records as a markdown table here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure this source in this process
    args = parser.parse_args(argv)
    os.environ.setdefault("RAYDD_PROGRESS", "0")
    if args.one:
        print(json.dumps(measure_one(args.one, args.actors, args.cpus_per_actor)), flush=True)
        return

    records_path = Path(args.records)
    records = json.loads(records_path.read_text()) if records_path.exists() else []
    plan = [(layout, size) for layout in args.layouts
            for size in ([60_000] if layout == "fashion-mnist" else args.sizes)]
    for layout, size in plan:
        if any((r["layout"], r["size"], r["actors"]) == (layout, size, args.actors) for r in records):
            continue
        if layout == "fashion-mnist":
            source = "fashion-mnist"
        else:
            make = make_imagefolder if layout == "imagefolder" else make_webdataset
            started = time.perf_counter()
            source = str(make(Path(args.data) / f"{layout}-{size}", size, args.image_size))
            print(f"{layout} {size}: source ready in {time.perf_counter() - started:.0f} s", flush=True)
        result = run_measurement(source, args.actors, args.cpus_per_actor)
        record = {"layout": layout, "size": size, "actors": args.actors, "cpus_per_actor": args.cpus_per_actor,
                  **result, "machine": f"{os.cpu_count()}-core CPU"}
        records = [r for r in records if (r["layout"], r["size"], r["actors"]) != (layout, size, args.actors)]
        records.append(record)
        records_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = records_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=2) + "\n")
        tmp.replace(records_path)
        print(f"{layout} {size}: {result['rows']} rows in {result['seconds']:.0f} s ({result['rows_per_s']:.0f} rows/s), "
              f"driver peak RSS {result['driver_peak_rss_mb']:.0f} MB", flush=True)
    if args.table:
        write_table(records, Path(args.table))


if __name__ == "__main__":
    main()
