"""Ray job: privacy audit of a run directory (membership inference + nearest-neighbour memorisation).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/audit.py --run-dir s3://bucket/runs/dm-ipc10 --preset paper --gpus-per-task 0.25

Every target and shadow pipeline is one Ray task. Writes audit.json, nn_pairs.png, nn_pairs.json and
audit/ (shadow runs, per-image scores) into the run directory and prints the table. The run's own
config.yaml fixes the data, distillation and evaluation protocol; --preset picks the audit's sizes.
"""

from __future__ import annotations

import argparse
import sys

from raydd.flags import add_run_dir_arguments
from raydd.pipeline.cluster import run_entrypoint


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_dir_arguments(parser, "synthetic.safetensors and members.json", "audit.epochs=100")
    parser.add_argument("--preset", default=None, help="audit sizes: quick or paper (default: the run's own)")
    parser.add_argument("--shadows", type=int, default=None, help="LiRA shadow pipelines per target kind")
    parser.add_argument("--members", type=int, default=None, help="audited members (as many non-members)")
    parser.add_argument("--cpus-per-task", type=float, default=1, help="CPUs per audit model")
    parser.add_argument("--gpus-per-task", type=float, default=0, help="GPUs per audit model (e.g. 0.25)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from raydd.artifacts import AUDIT, NN_PAIRS_PNG
    from raydd.audit import audit_config, audit_run, format_audit_table, ray_audit_runner
    from raydd.pipeline.cluster import check_resources, check_storage, init_ray

    args = parse_args(argv)
    check_storage(args.run_dir, write=True)
    cfg = audit_config(args.run_dir, preset=args.preset, shadows=args.shadows, members=args.members, sets=args.sets)
    init_ray(args.address)  # joins RAY_ADDRESS under `ray job submit`
    check_resources(1, args.cpus_per_task, args.gpus_per_task)
    runner = ray_audit_runner(cpus_per_task=args.cpus_per_task, gpus_per_task=args.gpus_per_task, show_progress=False)
    result = audit_run(args.run_dir, cfg, runner=runner, show_progress=False)
    print(format_audit_table(result))
    print(f"audit: {args.run_dir}/{AUDIT}\nnearest pairs: {args.run_dir}/{NN_PAIRS_PNG}")


if __name__ == "__main__":
    sys.exit(run_entrypoint(main))
