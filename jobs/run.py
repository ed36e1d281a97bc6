"""Ray job: the whole pipeline — preprocess (Ray Data) -> distill (Ray Train) -> evaluate -> report.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/run.py --dataset fashion-mnist --method dm --ipc 10 --preset paper --workers 4 \
        --out s3://bucket/runs/dm-ipc10 --set prepare.root=s3://bucket/prepared --set prepare.gpus_per_actor=0.25

The same stages as `raydd run`: the source is preprocessed once into Parquet under prepare.root (on a
multi-node cluster give a URI every node can read), the workers read their classes' partitions, and
eval.json and report.html are written into --out. `--resume` continues a killed run.
"""

from __future__ import annotations

import sys

from raydd.flags import config_from_arguments
from raydd.pipeline.cluster import parse_run_arguments, run_entrypoint


def main(argv: list[str] | None = None) -> None:
    from raydd.pipeline.cluster import check_storage
    from raydd.artifacts import EVAL
    from raydd.pipeline.job import run_pipeline_job

    args = parse_run_arguments(__doc__, argv)
    cfg = config_from_arguments(args)
    check_storage(args.out, write=True)  # s3:// / gs:// problems now, not in a worker's traceback later
    if cfg.prepare.root:
        check_storage(cfg.prepare.root, write=True)
    job = run_pipeline_job(cfg, args.out, workers=args.workers, resume=args.resume, address=args.address,
                           show_progress=False)
    acc = job.eval.accuracy
    print(f"accuracy: {100 * acc.mean:.2f} ± {100 * acc.std:.2f} ({acc.n} models)\n"
          f"eval: {args.out}/{EVAL}\nreport: {job.report}")


if __name__ == "__main__":
    sys.exit(run_entrypoint(main))
