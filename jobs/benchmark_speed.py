"""Speed on one device: raydd's DM / DSA iteration and evaluation model against the field's reference loops.

    .venv/bin/python jobs/benchmark_speed.py --methods dm dsa --ipc 1 10 50 \\
        --datasets fashion-mnist cluttered-fashion-mnist --iterations 5 --output docs/benchmarks/speed.md

The *reference* implementations (jobs/speed_reference.py) are written the way the public DM / DC / DSA code computes
the same math: DM loops over classes (one forward per class, DiffAugment with a per-class seed);
DC/DSA loops over classes per outer step and trains the network between outer steps through a
``TensorDataset`` + ``DataLoader`` with per-batch augmentation and per-batch ``.item()`` logging;
the evaluation trainer is the reference ``epoch`` loop (DataLoader, per-batch augmentation, numpy
accuracy, test pass without ``no_grad``). raydd's code runs in the same process, interleaved
iteration by iteration (the order alternates), and the table reports ours / reference.

Equal results: the first (warm-up) iteration of every row runs the reference in *check mode*: it
consumes raydd's network weights, real batches, augmentation draws, inner-loop orders and inner-loop
augmentation, so the two losses and the updated images must agree to float tolerance (column
"loss match"). Later iterations use the reference's own randomness (per-class seeds, DataLoader
shuffling), which is what it is timed with.

Timings on a shared CPU are noisy: compare the ratio, measured in one run, not absolute seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout

from jobs.speed_reference import RefDiffAugment, RefDM, RefGradMatch, RefReal, ref_epoch, ref_evaluate  # noqa: E402
from raydd.methods.gradmatch import reference_loops  # noqa: E402

# ------------------------------------------------------------------------------------------------
# Measurement helpers
# ------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak memory of one call, in MB above what was in use before it.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the kernel's RSS high-water mark (VmHWM), reset
    through ``/proc/self/clear_refs`` before the call (psutil is not needed; torch allocations are
    invisible to tracemalloc).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.mb = float("nan")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass
            self.base = _proc_kb("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _proc_kb("VmHWM") * 1024
        self.mb = max(0.0, (peak - self.base) / 2**20)
        return False


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float, object]:
    _sync(device)
    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        dt = time.perf_counter() - t0
    return dt, mem.mb, out


def close(a: float, b: float, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    return abs(a - b) <= atol + rtol * abs(b)


# ------------------------------------------------------------------------------------------------
# Benchmark rows
# ------------------------------------------------------------------------------------------------


def make_config(dataset: str, method: str, ipc: int, args) -> object:
    from raydd.config import build_config

    distill = {"method": method, "ipc": ipc, "batch_real": args.batch_real, "iterations": 1}
    loops = {"outer_loop": args.outer_loop, "inner_loop": args.inner_loop}
    return build_config("quick", overrides={"data": {"name": dataset}, "distill": distill, "gradmatch": loops,
                                            "device": str(args.device)})


def build_pair(cfg, splits, device: torch.device):
    """raydd's distiller and the reference on the same initial synthetic set."""
    from raydd.distill import build_distiller, initial_state

    state = initial_state(cfg, splits, device)
    ours = build_distiller(cfg, state, device)
    d = cfg.distill
    spec = dict(channels=state.syn.channels, num_classes=state.syn.num_classes, image_size=state.syn.image_size)
    real = RefReal(state.pool, d.batch_real)
    aug = RefDiffAugment(d.dsa_strategy, state.syn.image_size, device, splits.flip_ok) if ours.dsa is not None else None
    images = ours.images.detach()
    if d.method == "dm":
        ref = RefDM(d.model, spec, images, d.ipc, state.syn.num_classes, real, aug, cfg.seed, device,
                    lr=ours.optimizer.param_groups[0]["lr"], momentum=d.momentum)
    else:
        ref = RefGradMatch(d.model, spec, images, state.syn.labels, d.ipc, state.syn.num_classes, real, aug, cfg.seed,
                           device, ours.outer_loop, ours.inner_loop, lr_img=ours.optimizer.param_groups[0]["lr"],
                           momentum=d.momentum, lr_net=cfg.gradmatch.lr_net, batch_train=cfg.gradmatch.batch_syn_train)
    return ours, ref, state


def bench_distill(cfg, splits, args) -> dict:
    device = args.device
    ours, ref, _ = build_pair(cfg, splits, device)
    t_ours, t_ref, m_ours, m_ref = [], [], [], []
    match = None
    start = ours.images.detach().clone()
    total = args.warmup + args.iterations
    for it in range(total):
        check = it == 0
        runs = [("ref", lambda: ref.step(it, check=check)), ("ours", lambda: float(ours.step(it)["loss"]))]
        if it % 2:
            runs.reverse()
        result = {}
        for name, fn in runs:
            result[name] = timed(fn, device)
        if check:
            loss_ok = close(result["ours"][2], result["ref"][2])
            # image update: relative to its norm (channels-last reassociation, see the tests)
            move_o, move_r = ours.images.detach() - start, ref.image_syn.detach() - start
            img_ok = float((move_o - move_r).norm() / move_r.norm().clamp_min(1e-12)) < 2e-3
            diff = abs(result["ours"][2] - result["ref"][2]) / max(1e-12, abs(result["ref"][2]))
            match = (loss_ok and img_ok, diff, result["ours"][2], result["ref"][2])
        if it >= args.warmup:
            t_ref.append(result["ref"][0])
            t_ours.append(result["ours"][0])
            m_ref.append(result["ref"][1])
            m_ours.append(result["ours"][1])
        print(f"  [{cfg.distill.method} {cfg.data.name} ipc {cfg.distill.ipc}] it {it}: "
              f"ref {result['ref'][0]:.2f}s ours {result['ours'][0]:.2f}s", flush=True)
    return {
        "ref": statistics.median(t_ref), "ours": statistics.median(t_ours),
        "peak_ref": max(m_ref), "peak_ours": max(m_ours), "match": match,
        "loops": (ours.outer_loop, ours.inner_loop) if hasattr(ours, "outer_loop") else None,
    }


def bench_eval(cfg, splits, args) -> dict:
    """Time per evaluation model: ``eval_epochs`` epochs on the initial IPC-N set, scaled to 1000; test pass."""
    from raydd.distill import initial_state
    from raydd.evaluate import EvalJob, accuracy, train_network

    device = args.device
    state = initial_state(cfg, splits, device)
    syn = state.syn
    ecfg = replace(cfg.eval, epochs=args.eval_epochs)
    test_x, test_y = splits.test.images, splits.test.labels
    test_x = splits.normalize(test_x)[: args.eval_test_limit]
    test_y = test_y[: args.eval_test_limit]
    rows = {"ref_train": [], "ours_train": [], "ref_test": [], "ours_test": [], "peak_ref": [], "peak_ours": []}
    match = None
    for i in range(args.eval_models + 1):  # model 0 is the warm-up and the equality check
        job = EvalJob(syn.images.detach().cpu(), syn.labels.cpu(), test_x, test_y, ecfg.model, syn.num_classes,
                      ecfg, cfg.seed, i, splits.flip_ok)
        check = i == 0
        runs = [("ref", lambda: ref_evaluate(job, device, check=check, test=False)[0]),
                ("ours", lambda: train_network(job, device))]
        if i % 2:
            runs.reverse()
        nets = {}
        for name, fn in runs:
            dt, mb, nets[name] = timed(fn, device)
            if i > 0:
                rows[f"{name}_train"].append(dt)
                rows[f"peak_{name}"].append(mb)
        # test pass: reference = an 'epoch' in eval mode without no_grad; ours = accuracy()
        loader = DataLoader(TensorDataset(job.test_images, job.test_labels), batch_size=256, shuffle=False)
        tests = [("ref", lambda: ref_epoch("test", loader, nets["ref"], None, None, device)[1]),
                 ("ours", lambda: accuracy(nets["ours"], job.test_images, job.test_labels, ecfg.batch_test, device))]
        accs = {}
        for name, fn in tests:
            dt, _, accs[name] = timed(fn, device)
            if i > 0:
                rows[f"{name}_test"].append(dt)
        if check:
            p_ref = torch.cat([p.detach().flatten() for p in nets["ref"].parameters()])
            p_ours = torch.cat([p.detach().flatten() for p in nets["ours"].parameters()])
            diff = float((p_ref - p_ours).abs().max())
            match = (torch.allclose(p_ours, p_ref, rtol=1e-3, atol=1e-4) and abs(accs["ref"] - accs["ours"]) <= 2e-3,
                     diff, accs["ours"], accs["ref"])
        print(f"  [eval {cfg.data.name} ipc {cfg.distill.ipc}] model {i}: "
              f"ref {rows['ref_train'][-1] if i else float('nan'):.2f}s ours "
              f"{rows['ours_train'][-1] if i else float('nan'):.2f}s", flush=True)
    scale = 1000.0 / args.eval_epochs
    return {
        "ref": statistics.median(rows["ref_train"]) * scale + statistics.median(rows["ref_test"]),
        "ours": statistics.median(rows["ours_train"]) * scale + statistics.median(rows["ours_test"]),
        "ref_epoch": statistics.median(rows["ref_train"]) / args.eval_epochs,
        "ours_epoch": statistics.median(rows["ours_train"]) / args.eval_epochs,
        "ref_test": statistics.median(rows["ref_test"]), "ours_test": statistics.median(rows["ours_test"]),
        "peak_ref": max(rows["peak_ref"]), "peak_ours": max(rows["peak_ours"]), "match": match,
    }


def profile_dm_step(cfg, splits, device: torch.device, rows: int = 12) -> str:
    """Where the time of one (warm) DM iteration of raydd goes: torch.profiler, by self time."""
    from torch.profiler import ProfilerActivity, profile

    ours, _, _ = build_pair(cfg, splits, device)
    ours.step(0)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        ours.step(1)
        _sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = f"{os.cpu_count()} CPU cores ({cpu}), load average {load:.1f} at start, torch {torch.__version__}, " \
           f"{torch.get_num_threads()} threads"
    return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["dm", "dsa"], choices=["dm", "dc", "dsa", "eval"])
    p.add_argument("--ipc", nargs="+", type=int, default=[1, 10, 50])
    p.add_argument("--datasets", nargs="+", default=["fashion-mnist", "cluttered-fashion-mnist"])
    p.add_argument("--iterations", type=int, default=5, help="timed iterations per row (median)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up iterations (the first is the equality check)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-real", type=int, default=256)
    p.add_argument("--outer-loop", type=int, default=None, help="DC/DSA: override the reference outer loop")
    p.add_argument("--inner-loop", type=int, default=None, help="DC/DSA: override the reference inner loop")
    p.add_argument("--eval", action="store_true", help="also time evaluation models (IPC --eval-ipc)")
    p.add_argument("--eval-ipc", type=int, default=10)
    p.add_argument("--eval-epochs", type=int, default=4)
    p.add_argument("--eval-models", type=int, default=2)
    p.add_argument("--eval-test-limit", type=int, default=None, help="test images in the timed test pass")
    p.add_argument("--profile", action="store_true", help="torch.profiler summary of one DM iteration (IPC 10)")
    p.add_argument("--output", default=None, help="markdown file to write the table to")
    args = p.parse_args(argv)
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda requested but CUDA is not available")
    os.environ.setdefault("RAYDD_CLUTTERED_LIMIT", "6000,2000")

    from raydd.run_inputs import load_splits

    methods = [m for m in args.methods if m != "eval"]
    do_eval = args.eval or "eval" in args.methods
    header = ["method", "dataset", "IPC", "ref s/it", "ours s/it", "speed-up", "peak MB ref / ours", "loss match"]
    table, notes = [], []
    profiles = []
    for dataset in args.datasets:
        splits = None
        for method in methods:
            for ipc in args.ipc:
                cfg = make_config(dataset, method, ipc, args)
                splits = splits or load_splits(cfg)
                print(f"{method} {dataset} ipc {ipc}", flush=True)
                r = bench_distill(cfg, splits, args)
                ok, diff, lo, lr_ = r["match"]
                label = method if r["loops"] is None else f"{method} (outer {r['loops'][0]}, inner {r['loops'][1]})"
                if r["loops"] is not None and r["loops"] != reference_loops(ipc):
                    label += " reduced"
                table.append([label, dataset, str(ipc), f"{r['ref']:.3f}", f"{r['ours']:.3f}",
                              f"{r['ref'] / r['ours']:.2f}x", f"{r['peak_ref']:.0f} / {r['peak_ours']:.0f}",
                              f"{'yes' if ok else 'NO'} (rel {diff:.1e})"])
        if args.profile and "dm" in methods:
            cfg = make_config(dataset, "dm", 10 if 10 in args.ipc else args.ipc[0], args)
            splits = splits or load_splits(cfg)
            profiles.append((dataset, profile_dm_step(cfg, splits, args.device)))
        if do_eval:
            cfg = make_config(dataset, "dm", args.eval_ipc, args)
            splits = splits or load_splits(cfg)
            print(f"eval {dataset} ipc {args.eval_ipc}", flush=True)
            r = bench_eval(cfg, splits, args)
            ok, diff, acc_o, acc_r = r["match"]
            table.append([f"eval model ({args.eval_epochs} ep x{1000 // args.eval_epochs} + test)", dataset,
                          str(args.eval_ipc), f"{r['ref']:.1f}", f"{r['ours']:.1f}", f"{r['ref'] / r['ours']:.2f}x",
                          f"{r['peak_ref']:.0f} / {r['peak_ours']:.0f}",
                          f"{'yes' if ok else 'NO'} (max param diff {diff:.1e})"])
            notes.append(f"eval {dataset}: per epoch ref {r['ref_epoch']:.3f}s ours {r['ours_epoch']:.3f}s "
                         f"({r['ref_epoch'] / r['ours_epoch']:.2f}x); test pass ref {r['ref_test']:.2f}s "
                         f"ours {r['ours_test']:.2f}s ({r['ref_test'] / r['ours_test']:.2f}x)")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    text = "\n".join(lines)
    meta = (f"device {args.device}; {machine()}; warm-up {args.warmup} + timed {args.iterations} iterations "
            f"(median); batch_real {args.batch_real}; ConvNet-3")
    print()
    print(meta)
    print(text)
    for note in notes:
        print(note)
    for dataset, prof in profiles:
        print(f"\nprofile: one raydd DM iteration, {dataset}\n{prof}")
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        body = [f"<!-- written by jobs/benchmark_speed.py {' '.join(argv or sys.argv[1:])} -->", meta, "", text, ""]
        body += [f"- {n}" for n in notes]
        for dataset, prof in profiles:
            body += ["", f"Profile, one raydd DM iteration ({dataset}):", "", "```", prof, "```"]
        out.write_text("\n".join(body) + "\n")


if __name__ == "__main__":
    main()
