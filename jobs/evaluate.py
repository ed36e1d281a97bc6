"""Ray job: train fresh networks on a run's synthetic set, one Ray task per network, and test them.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/evaluate.py --run-dir s3://bucket/runs/dm-ipc10 --gpus-per-task 1

Writes eval.json into the run directory (eval_val.json with --split val). The config is the run's
own config.yaml; --set changes evaluation fields (e.g. --set eval.models=10).
"""

from __future__ import annotations

import argparse
import sys

from raydd.flags import add_run_dir_arguments
from raydd.pipeline.cluster import run_entrypoint


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_dir_arguments(parser, "synthetic.safetensors", "eval.models=10")
    parser.add_argument("--split", choices=["test", "val"], default="test",
                        help="test for final figures, val for selection")
    parser.add_argument("--cpus-per-task", type=float, default=1, help="CPUs per evaluation network")
    parser.add_argument("--gpus-per-task", type=float, default=0, help="GPUs per evaluation network (e.g. 0.5)")
    return parser.parse_args(argv)


def run_config(run_dir: str, sets: list[str]):
    """The run's own config with --set layers on top (what `raydd evaluate --set` does)."""
    from raydd.config import parse_set
    from raydd.rundir import RunDir

    return RunDir(run_dir).read_config(parse_set(sets))


def main(argv: list[str] | None = None) -> None:
    from raydd.artifacts import EVAL, EVAL_VAL
    from raydd.pipeline.cluster import check_resources, check_storage, init_ray
    from raydd.pipeline.eval_tasks import ray_runner
    from raydd.workflows import evaluate_run

    args = parse_args(argv)
    check_storage(args.run_dir, write=True)
    cfg = run_config(args.run_dir, args.sets)
    init_ray(args.address)  # joins RAY_ADDRESS under `ray job submit`
    check_resources(1, args.cpus_per_task, args.gpus_per_task)
    runner = ray_runner(cpus_per_task=args.cpus_per_task, gpus_per_task=args.gpus_per_task, show_progress=False)
    result = evaluate_run(args.run_dir, cfg, split=args.split, runner=runner, show_progress=False)
    acc = result.accuracy
    per_model = " ".join(f"{100 * a:.2f}" for a in acc.per_model)
    print(f"{result.method} ipc={result.ipc} on {result.dataset} ({args.split}): "
          f"{100 * acc.mean:.2f} ± {100 * acc.std:.2f} % over {acc.n} models [{per_model}]")
    print(f"eval: {args.run_dir}/{EVAL if args.split == 'test' else EVAL_VAL}")


if __name__ == "__main__":
    sys.exit(run_entrypoint(main))
