"""Ray job: class-sharded distillation with Ray Train (each worker owns a shard of the classes).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/distill.py --dataset fashion-mnist --method dm --ipc 10 --preset paper \
        --workers 4 --out s3://bucket/runs/dm-ipc10

Writes the run directory (DESIGN §3) at --out; `--resume` continues a killed run from its last
checkpoint. Evaluate it afterwards with jobs/evaluate.py.
"""

from __future__ import annotations

import sys

from raydd.flags import config_from_arguments
from raydd.pipeline.cluster import parse_run_arguments, run_entrypoint


def main(argv: list[str] | None = None) -> None:
    from raydd.pipeline.cluster import check_storage, init_ray
    from raydd.pipeline.train import distill_with_ray

    args = parse_run_arguments(__doc__, argv)
    cfg = config_from_arguments(args)
    check_storage(args.out, write=True)  # s3:// / gs:// problems now, not in a worker's traceback later
    check_storage(cfg.data.name)
    init_ray(args.address)  # joins RAY_ADDRESS under `ray job submit`
    syn = distill_with_ray(cfg, args.out, workers=args.workers, resume=args.resume, address=args.address,
                           show_progress=False)
    print(f"synthetic set: {args.out}/synthetic.safetensors ({syn.images.shape[0]} images, "
          f"{args.workers} workers)")


if __name__ == "__main__":
    sys.exit(run_entrypoint(main))
