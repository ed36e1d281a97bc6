"""Ray job: search distillation settings with Ray Tune (validation accuracy; ASHA stops weak trials).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/tune.py --space space.yaml --out s3://bucket/searches/dm-lr --dataset fashion-mnist \
        --method dm --ipc 10 --num-samples 32 --max-concurrent 8 --gpus-per-trial 1

space.yaml maps dotted config keys to a list (a choice) or a range:

    distill.lr_img: {loguniform: [0.1, 100]}
    distill.batch_real: [64, 128, 256]

`--searcher optuna` draws the trials with Optuna's TPE (ranges and lists only; pip install
'raydd[tune]'); `--space mm-weights` names the space of the multi-modal loss weights shipped with raydd.

Writes OUT/best.yaml (use with `raydd run --config`), OUT/trials.csv, OUT/trials.json and Ray's
experiment directory OUT/tune; `--resume` continues a killed search in OUT.
"""

from __future__ import annotations

import argparse
import sys

from raydd.flags import add_config_arguments, config_from_arguments
from raydd.pipeline.cluster import run_entrypoint


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", help="YAML search space, or a shipped space by name (not needed with --resume)")
    parser.add_argument("--out", required=True, help="search directory (local path or s3:// / gs:// URI)")
    parser.add_argument("--num-samples", type=int, default=8, help="trials to sample")
    parser.add_argument("--max-concurrent", type=int, default=2, help="trials running at once")
    parser.add_argument("--scheduler", choices=["asha", "fifo"], default="asha")
    parser.add_argument("--searcher", choices=["random", "optuna"], default="random",
                        help="random (independent draws, grids exhaustive) or optuna (TPE; ranges and lists)")
    parser.add_argument("--grace-iterations", type=int, default=None,
                        help="iterations before ASHA may stop a trial (default: a quarter of the run)")
    parser.add_argument("--report-every", type=int, default=None,
                        help="iterations between validation reports (default: the grace)")
    parser.add_argument("--cpus-per-trial", type=float, default=1)
    parser.add_argument("--gpus-per-trial", type=float, default=0)
    parser.add_argument("--resume", action="store_true", help="continue the search in --out")
    add_config_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from raydd.errors import ConfigError
    from raydd.artifacts import BEST, TRIALS_CSV
    from raydd.pipeline.tune import load_space, tune_search

    args = parse_args(argv)
    if not args.space and not args.resume:
        raise ConfigError("--space is required (a YAML file of dotted config keys)")
    cfg = config_from_arguments(args)
    space = load_space(args.space) if args.space and not args.resume else {}
    result = tune_search(cfg, args.out, space=space, num_samples=args.num_samples,
                         max_concurrent=args.max_concurrent, scheduler=args.scheduler, searcher=args.searcher,
                         resume=args.resume, address=args.address, grace_iterations=args.grace_iterations,
                         report_every=args.report_every, cpus_per_trial=args.cpus_per_trial,
                         gpus_per_trial=args.gpus_per_trial, show_progress=False)
    values = ", ".join(f"{k}={v}" for k, v in result.best_params.items())
    print(f"best trial {result.best_trial_id}: val_accuracy {result.best_val_accuracy:.4f} "
          f"after {result.best_iterations} iterations ({values})")
    print(f"best config: {result.out}/{BEST}\ntrials: {result.out}/{TRIALS_CSV}")


if __name__ == "__main__":
    sys.exit(run_entrypoint(main))
