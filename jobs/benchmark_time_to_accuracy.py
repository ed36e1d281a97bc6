"""Accuracy against wall time: raydd's DM family beside the reference DM loop, on one machine.

Each variant distils one (dataset, IPC, seed) through the path users run (``raydd distill``, Ray Train),
keeping snapshots of the synthetic set at log-spaced iterations (``distill.snapshots``); the reference
DM loop (jobs/speed_reference.py's per-class loop at batch_real 256) runs in this process for a wall
budget, keeping snapshots at log-spaced seconds. Every snapshot is scored on the **validation** split
by one cheap fixed protocol (``--val-models`` ConvNet-3 x ``--val-epochs``); the final set of each
variant on **test** under ``quick`` and, with ``--paper-eval``, the paper evaluation (5 x 1000 epochs).

Outputs: ``--records`` (JSON list, one record per final test figure), ``OUT/curve.jsonl`` (every
validation point), ``--plot`` (PNG of the curves). Resumable: a finished distillation, snapshot score
or test figure is never recomputed; a killed distillation continues with ``--resume``.

    ray job submit --working-dir . -- python jobs/benchmark_time_to_accuracy.py \\
        --datasets fashion-mnist --ipc 10 --variants ref,dm,fast --budget-minutes 60 --paper-eval
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from raydd.artifacts import CONFIG, SNAPSHOTS, SYNTHETIC  # noqa: E402  (light: names only)

# What each variant sets on top of the quick preset (docs/method.md "Fast DM"). ``dm`` is classic DM as
# the quick preset ran it before the fast family (batch_real 64); ``ref`` is the reference loop.
VARIANTS: dict[str, list[str]] = {
    "dm": ["dm.bank=false", "dm.pool=random", "dm.formation=1", "dm.optimizer=sgd", "dm.schedule=constant",
           "distill.batch_real=64"],
    "bank": ["dm.bank=true", "dm.pool=random", "dm.formation=1"],
    "bank+pool": ["dm.bank=true", "dm.pool=trained", "dm.formation=1"],
    "bank+mf": ["dm.bank=true", "dm.pool=random", "dm.formation=2"],
    "fast": ["dm.bank=true", "dm.pool=trained", "dm.formation=2"],
    # DSA with the reference's loops (outer/inner 1/1 at IPC 1, 10/50 at IPC 10) and batch_real: what
    # gradient matching costs to converge, beside the DM family.
    "dsa": ["distill.method=dsa", "distill.batch_real=256", "gradmatch.inner_loop=null"],
}
ITERATIONS = {"dm": 2000, "bank": 4000, "bank+pool": 4000, "bank+mf": 4000, "fast": 4000, "dsa": 1000}


def method_name(variant: str) -> str:
    """The ``method`` of a variant's records: ``dm-ref`` (the reference loop), ``dsa``, or ``dm-<variant>``."""
    return {"ref": "dm-ref", "dsa": "dsa"}.get(variant, f"dm-{variant}")


def run_name(dataset: str) -> str:
    """A dataset name or path as one folder name under --out (a path's slashes would leave --out)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", dataset).strip("_") or "dataset"


def log_spaced(limit: float, start: float = 1.0, per_decade: int = 3) -> list[float]:
    """1, 2, 5, 10, 20, 50, ... up to ``limit`` (always ending at ``limit``)."""
    steps = [1.0, 2.0, 5.0][: per_decade]
    out, decade = [], start
    while decade <= limit:
        out += [decade * s for s in steps if decade * s <= limit]
        decade *= 10
    if not out or out[-1] != limit:
        out.append(limit)
    return out


def read_json(path: Path, default):
    return json.loads(path.read_text()) if path.exists() else default


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def distill_variant(variant: str, dataset: str, ipc: int, seed: int, run: Path, args) -> None:
    """``raydd distill`` (Ray Train, one worker; in this process's Python without Ray under ``--no-ray``) with
    snapshots; resumed when a previous try was killed."""
    if (run / SYNTHETIC).exists():
        return
    iterations = args.iterations.get(variant, ITERATIONS[variant])
    snapshots = [int(i) for i in log_spaced(iterations)]
    command = [sys.executable, "-m", "raydd", "distill", "--dataset", dataset, "--ipc", str(ipc),
               "--seed", str(seed), "--iterations", str(iterations), "--device", args.device, "--out", str(run),
               "--set", f"distill.snapshots=[{','.join(map(str, snapshots))}]",
               "--set", f"distill.log_every={max(1, iterations // 100)}",
               "--set", f"distill.checkpoint_every={max(1, iterations // 20)}"]
    for item in VARIANTS[variant] + args.sets:
        command += ["--set", item]
    if (run / CONFIG).exists():
        command.append("--resume")
    if args.no_ray:
        command.append("--no-ray")
    elif args.workers > 1:
        command += ["--workers", str(args.workers)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "RAYDD_NUM_CPUS": str(args.threads)}
    subprocess.run(command, check=True, env=env)


def reference_variant(dataset: str, ipc: int, seed: int, run: Path, args) -> None:
    """The reference per-class DM loop for ``--budget-minutes``, snapshots at log-spaced seconds.

    Resumable at snapshot granularity: the state (images, momentum, numpy RNG) of the last snapshot is
    kept in ``run/reference-state.pt`` and the clock continues from its seconds.
    """
    import numpy as np
    import torch

    from raydd.config import build_config
    from raydd.distill import initial_state, load_inputs
    from raydd.rundir import RunDir
    from speed_reference import RefDiffAugment, RefDM, RefReal

    if (run / SYNTHETIC).exists():
        return
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    device = torch.device(args.device)
    cfg = build_config("quick", overrides={"data": {"name": dataset}, "seed": seed, "device": args.device,
                                           "distill": {"method": "dm", "ipc": ipc, "batch_real": 256}})
    splits, captions = load_inputs(cfg)
    state = initial_state(cfg, splits, device, captions)
    spec = dict(channels=state.syn.channels, num_classes=state.syn.num_classes, image_size=state.syn.image_size)
    aug = RefDiffAugment(cfg.distill.dsa_strategy, state.syn.image_size, device, splits.flip_ok)
    np.random.seed(seed)
    ref = RefDM(cfg.distill.model, spec, state.syn.images, ipc, state.syn.num_classes, RefReal(state.pool, 256), aug,
                seed, device)
    budget = args.budget_minutes * 60.0
    marks = log_spaced(budget, start=10.0)
    saved = run / "reference-state.pt"
    iteration, offset = 0, 0.0
    syn = state.syn
    syn.meta.update({"method": "dm-ref", "preset": "quick"})
    if saved.exists():
        blob = torch.load(saved, weights_only=False)  # written by this job itself, a few lines below
        iteration, offset = blob["iteration"], blob["seconds"]
        with torch.no_grad():
            ref.image_syn.copy_(blob["images"])
        ref.optimizer_img.state[ref.image_syn]["momentum_buffer"] = blob["momentum"].to(device)
        np.random.set_state(blob["numpy"])
        syn.images = blob["images"].clone()  # the set as of that snapshot, final if no mark is left
        syn.meta.update({"iterations": iteration, "distill_seconds": round(offset, 3)})
    else:
        run.mkdir(parents=True, exist_ok=True)
        RunDir(str(run)).write_config(cfg)
    clock = lambda: offset + time.perf_counter() - started  # noqa: E731
    pending = [m for m in marks if m > offset]
    while pending:
        ref.step(iteration)
        iteration += 1
        if clock() >= pending[0] or iteration % 50 == 0 and clock() >= budget:
            seconds = clock()
            while pending and pending[0] <= seconds:
                pending.pop(0)
            syn.images = ref.image_syn.detach().cpu().clone()
            syn.meta.update({"iterations": iteration, "distill_seconds": round(seconds, 3)})
            syn.save(RunDir(str(run)).snapshot_dir(iteration))
            momentum = ref.optimizer_img.state[ref.image_syn]["momentum_buffer"]
            torch.save({"iteration": iteration, "seconds": seconds, "images": syn.images, "momentum": momentum.cpu(),
                        "numpy": np.random.get_state()}, saved)
            print(f"reference DM: {iteration} iterations, {seconds:.0f}s of {budget:.0f}s", flush=True)
    syn.save(str(run))


def scored_snapshots(run: Path, max_points: int) -> list[Path]:
    """At most ``max_points`` snapshots, spread evenly in log wall time (scoring costs more than distilling)."""
    from raydd.synthetic import SyntheticSet

    snaps = sorted((run / SNAPSHOTS).glob("iteration-*"))
    if max_points <= 0 or len(snaps) <= max_points:
        return snaps
    seconds = [max(1e-3, float(SyntheticSet.load(str(p)).meta["distill_seconds"])) for p in snaps]
    lo, hi = math.log(seconds[0]), math.log(seconds[-1])
    chosen = []
    for k in range(max_points):
        target = hi if max_points == 1 else lo + (hi - lo) * k / (max_points - 1)
        best = min(range(len(snaps)), key=lambda i: abs(math.log(seconds[i]) - target))
        if snaps[best] not in chosen:
            chosen.append(snaps[best])
    return sorted(chosen)


_SPLITS: dict = {}  # (dataset, seed) -> splits, loaded once per job


def splits_of(cfg, dataset: str, seed: int):
    from raydd.run_inputs import load_splits

    if (dataset, seed) not in _SPLITS:
        _SPLITS[(dataset, seed)] = load_splits(cfg)
    return _SPLITS[(dataset, seed)]


def nearest_is_init(path: Path, dataset: str, seed: int) -> float | None:
    """Fraction of a set's real-initialised images whose nearest training image (pixel L2, normalised,
    every image of the train split) is still the image it started from; cached beside the set."""
    from raydd.audit.nearest import nearest_l2
    from raydd.config import build_config
    from raydd.synthetic import SyntheticSet

    cache = path / "nearest-init.json"
    if cache.exists():
        return json.loads(cache.read_text())["nearest_is_init_fraction"]
    syn = SyntheticSet.load(str(path))
    images, _, _ = syn.training_set()  # multi-formation: every decoded image, each with its own init id
    if len(syn.init_ids) != len(images) or not all(syn.init_ids):
        return None  # noise init: no image of its own to stay near
    members = splits_of(build_config(overrides={"data": {"name": dataset}, "seed": seed}), dataset, seed)
    _, index = nearest_l2(images.cpu(), members.train.images, prepare=members.normalize)
    fraction = sum(members.train.ids[i] == own for i, own in zip(index.tolist(), syn.init_ids)) / len(images)
    write_json(cache, {"nearest_is_init_fraction": fraction, "searched": len(members.train)})
    return fraction


def score(path: Path, dataset: str, seed: int, split: str, protocol: str, args) -> dict:
    """Evaluate one synthetic set (a run or snapshot directory); cached beside it."""
    import torch

    from raydd.config import build_config
    from raydd.rundir import RunDir
    from raydd.synthetic import SyntheticSet, read_metadata
    from raydd.workflows import evaluate_set

    cache = path / f"score-{split}-{protocol}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    same = Path(RunDir(str(path)).snapshot_dir(int(read_metadata(str(path))["iterations"])))
    if (same / cache.name).exists():  # the final set is its last snapshot: scored already
        write_json(cache, json.loads((same / cache.name).read_text()))
        return json.loads(cache.read_text())
    torch.set_num_threads(args.threads)
    preset = "paper" if protocol == "paper" else "quick"
    # The evaluation network alone: the published figures this is read against are ConvNet's (the paper
    # preset's cross-architecture networks would multiply the cost by four).
    overrides: dict = {"data": {"name": dataset}, "seed": seed, "device": args.device, "eval": {"cross_arch": []}}
    if protocol == "val":
        overrides["eval"].update(models=args.val_models, epochs=args.val_epochs)
    cfg = build_config(preset, overrides=overrides)
    syn = SyntheticSet.load(str(path))
    models = path / f"score-{split}-{protocol}-models"  # a killed evaluation continues from its finished models
    runner = None
    if args.eval_workers > 1:  # the models as Ray tasks, one core each (a local Ray of that many CPUs)
        from raydd.pipeline.cluster import init_ray
        from raydd.pipeline.eval_tasks import ray_runner

        init_ray(num_cpus=args.eval_workers)
        runner = ray_runner(cpus_per_task=1, show_progress=True)
    result = evaluate_set(syn, splits_of(cfg, dataset, seed), cfg, split=split, show_progress=False,
                          runner=runner, record_dir=str(models))
    out = {"accuracy": result.accuracy.mean, "std": result.accuracy.std,
           "iterations": syn.meta.get("iterations"), "distill_seconds": syn.meta.get("distill_seconds"),
           "protocol": protocol, "split": split}
    write_json(cache, out)
    shutil.rmtree(models, ignore_errors=True)
    return out


def machine(device: str, workers: int = 1) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    # Ray Train workers split the classes (and the cores) of the distillation; one thread each.
    split = f", {workers} Ray Train workers" if workers > 1 else ""
    return f"{os.cpu_count()}-core CPU, {torch.get_num_threads()} torch thread(s){split}, torch {torch.__version__}"


def plot(curve_file: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # this job's own process; never switched in the library
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in curve_file.read_text().splitlines() if line.strip()]
    panels = sorted({(r["dataset"], r["ipc"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (dataset, ipc) in zip(axes[0], panels):
        for method in sorted({r["method"] for r in rows if (r["dataset"], r["ipc"]) == (dataset, ipc)}):
            pts = sorted((r["distill_seconds"], 100 * r["val_accuracy"]) for r in rows
                         if (r["dataset"], r["ipc"], r["method"]) == (dataset, ipc, method))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=method)
        ax.set_xscale("log")
        ax.set_xlabel("distillation wall time (s)")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_title(f"{dataset}, IPC {ipc}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def put_curve_row(curve: Path, row: dict) -> None:
    """Add or replace the validation point of (method, dataset, ipc, seed, iterations) in curve.jsonl."""
    key = ("method", "dataset", "ipc", "seed", "iterations")
    rows = [json.loads(line) for line in curve.read_text().splitlines() if line.strip()] if curve.exists() else []
    rows = [r for r in rows if tuple(r[k] for k in key) != tuple(row[k] for k in key)] + [row]
    tmp = curve.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(curve)


def write_table(records_path: Path, curve_file: Path, out: Path) -> None:
    """Markdown: the validation curve of each variant, then the final test figures (from the records)."""
    rows = [json.loads(line) for line in curve_file.read_text().splitlines() if line.strip()]
    lines = ["| dataset | IPC | method | iterations | distillation s | validation % | nearest is own init % |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["dataset"], r["ipc"], r["method"], r["distill_seconds"])):
        own = r.get("nearest_is_init")
        lines.append(f"| {r['dataset']} | {r['ipc']} | {r['method']} | {r['iterations']} | "
                     f"{r['distill_seconds']:.0f} | {100 * r['val_accuracy']:.2f} | "
                     f"{'—' if own is None else f'{100 * own:.1f}'} |")
    lines += ["", "| dataset | IPC | method | iterations | distillation s | test % (mean ± std) | evaluation | machine |",
              "|---|---|---|---|---|---|---|---|"]
    for r in sorted(read_json(records_path, []), key=lambda r: (r["dataset"], r["ipc"], r["method"], r["eval_protocol"])):
        lines.append(f"| {r['dataset']} | {r['ipc']} | {r['method']} | {r['iterations']} | {r['distill_seconds']:.0f} | "
                     f"{100 * r['test_accuracy']:.2f} ± {100 * r['test_std']:.2f} | {r['eval_protocol']} | {r['machine']} |")
    out.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    from raydd.progress import progress_bar

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="fashion-mnist")
    parser.add_argument("--ipc", default="10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="ref,dm,fast", help=f"ref and any of {', '.join(VARIANTS)}")
    parser.add_argument("--iterations", action="append", default=[], metavar="VARIANT=N",
                        help="distillation iterations of a variant (defaults: " +
                        ", ".join(f"{k} {v}" for k, v in ITERATIONS.items()) + ")")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra config for raydd variants")
    parser.add_argument("--budget-minutes", type=float, default=60.0, help="wall budget of the reference loop")
    parser.add_argument("--val-models", type=int, default=2)
    parser.add_argument("--val-epochs", type=int, default=100)
    parser.add_argument("--max-points", type=int, default=0,
                        help="score at most this many snapshots per variant on validation (0: all)")
    parser.add_argument("--paper-eval", action="store_true", help="also score final sets under the paper evaluation")
    parser.add_argument("--protocols", default="",
                        help="test protocols of the final sets, e.g. 'paper' (default: quick, plus paper with --paper-eval)")
    parser.add_argument("--eval-workers", type=int, default=1,
                        help="train this many evaluation models at once as Ray tasks, one core each")
    parser.add_argument("--threads", type=int, default=1,
                        help="cores of the run: torch threads of each process, the local Ray's CPUs")
    parser.add_argument("--workers", type=int, default=1,
                        help="Ray Train workers of the raydd variants, each a shard of the classes on "
                             "--threads / --workers cores (the reference loop is one process)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (every variant, the reference and scoring)")
    parser.add_argument("--no-ray", action="store_true",
                        help="distil the raydd variants in one process (raydd distill --no-ray), e.g. where Ray is absent")
    parser.add_argument("--out", default="runs/time-to-accuracy")
    parser.add_argument("--records", default="docs/benchmarks/time-to-accuracy.json")
    parser.add_argument("--plot", default="docs/benchmarks/time-to-accuracy.png")
    parser.add_argument("--table", default="", help="write the curve and records as a markdown table here")
    parser.add_argument("--tag", default="", help="suffix of the method name in records (e.g. a setting)")
    args = parser.parse_args(argv)
    args.iterations = {k: int(v) for k, v in (item.split("=", 1) for item in args.iterations)}
    if args.workers > 1 and args.no_ray:
        parser.error("--workers needs Ray: drop --no-ray")
    if not 1 <= args.workers <= args.threads:
        parser.error(f"--workers {args.workers} needs --threads of at least as many cores (got {args.threads})")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curve = out / "curve.jsonl"
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v != "ref" and v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: ref, {', '.join(VARIANTS)}")
    plan = [(d, int(i), v) for d in args.datasets.split(",") for i in args.ipc.split(",") for v in variants]
    records_path = Path(args.records)
    protocols = [p for p in args.protocols.split(",") if p] or (["quick", "paper"] if args.paper_eval else ["quick"])
    if set(protocols) - {"quick", "paper"}:
        parser.error(f"unknown protocols {sorted(set(protocols) - {'quick', 'paper'})}; known: quick, paper")
    for dataset, ipc, variant in progress_bar(plan, desc="time to accuracy"):
        method = method_name(variant) + args.tag
        run = out / f"{run_name(dataset)}-ipc{ipc}-{method}-seed{args.seed}"
        if variant == "ref":
            reference_variant(dataset, ipc, args.seed, run, args)
        else:
            distill_variant(variant, dataset, ipc, args.seed, run, args)
        for snap in scored_snapshots(run, args.max_points) + [run]:
            s = score(snap, dataset, args.seed, "val", "val", args)
            put_curve_row(curve, {"dataset": dataset, "ipc": ipc, "method": method, "seed": args.seed,
                                  "iterations": s["iterations"], "distill_seconds": s["distill_seconds"],
                                  "val_accuracy": s["accuracy"],
                                  "nearest_is_init": nearest_is_init(snap, dataset, args.seed)})
        for protocol in protocols:
            s = score(run, dataset, args.seed, "test", protocol, args)
            records = read_json(records_path, [])
            key = (dataset, ipc, method, protocol, args.seed)
            records = [r for r in records if (r["dataset"], r["ipc"], r["method"], r["eval_protocol"], r["seed"]) != key]
            records.append({"dataset": dataset, "ipc": ipc, "method": method, "distill_seconds": s["distill_seconds"],
                            "iterations": s["iterations"], "test_accuracy": s["accuracy"], "test_std": s["std"],
                            "eval_protocol": protocol, "seed": args.seed,
                            "machine": machine(args.device, 1 if variant == "ref" else args.workers)})
            records_path.parent.mkdir(parents=True, exist_ok=True)
            write_json(records_path, records)
            print(f"{dataset} ipc{ipc} {method}: {100 * s['accuracy']:.2f} % test ({protocol}) after "
                  f"{s['distill_seconds']:.0f} s of distillation", flush=True)
    if curve.exists() and args.plot:
        plot(curve, Path(args.plot))
    if curve.exists() and args.table:
        write_table(records_path, curve, Path(args.table))


if __name__ == "__main__":
    main()
