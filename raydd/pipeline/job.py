"""The whole job on one Ray session: preprocess -> distill -> evaluate -> report.

`raydd run` and `jobs/run.py` both call :func:`run_pipeline_job`, so a laptop run and a `ray job
submit` on a cluster go through the same stages: Ray Data writes the Parquet copy of the source (once;
later runs reuse it), Ray Train workers read their classes' partitions of it, the evaluation models
are Ray tasks, and the report is written beside the run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from raydd.config import Config
from raydd.results import EvalResult


@dataclass
class JobResult:
    cfg: Config  # as run, with data.prepared filled in
    eval: EvalResult
    report: str


def with_prepared(cfg: Config, location: str) -> Config:
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, prepared=location))


def run_pipeline_job(cfg: Config, out: str, *, workers: int = 1, resume: bool = False, address: str | None = None,
                     show_progress: bool = True, log: Callable[[str], None] = print) -> JobResult:
    from raydd.pipeline.cluster import init_ray, ray_log_in
    from raydd.pipeline.eval_tasks import eval_runner
    from raydd.pipeline.parquet_copy import prepare_data
    from raydd.pipeline.train import distill_with_ray
    from raydd.report import write_report
    from raydd.workflows import evaluate_unless_done

    init_ray(address)  # one session for every stage (a stage's own session would stop Ray after it)
    ray_log_in(out)
    if cfg.prepare.enabled:
        log("stage 1/4: preprocess (Ray Data)")
        cfg = with_prepared(cfg, prepare_data(cfg, address=address, show_progress=show_progress, log=log))
    log(f"stage 2/4: distill (Ray Train, {workers} worker{'s' if workers != 1 else ''})")
    distill_with_ray(cfg, out, workers=workers, resume=resume, address=address, show_progress=show_progress)
    log(f"stage 3/4: evaluate ({cfg.eval.models} models as Ray tasks, unless a resumed run has eval.json)")
    result = evaluate_unless_done(out, cfg, resume=resume, runner=eval_runner(cfg, show_progress),
                                  show_progress=show_progress)
    log("stage 4/4: report")
    return JobResult(cfg, result, write_report([out]))
