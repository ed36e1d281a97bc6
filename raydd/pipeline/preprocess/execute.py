"""Running the stages on Ray: resources checked up front, Ray Data settings, errors unwrapped."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from raydd.data import parquet as schema
from raydd.errors import DataError, RayddError
from raydd.pipeline.cluster import ClusterError, check_resources, obtainable_resources

from .output import Output
from .rows import conform
from .stages import StagePlan

WRITE_CPUS = 0.5  # what each write task reserves: fractional, so it fits beside the actor pools


class RayDataAdviceFilter(logging.Filter):
    """Ray Data's warnings that do not apply to this pipeline stay in Ray's session log (ray-data.log),
    off the console: "no available CPUs … will hang" (the actor pools hold the CPUs by design; the
    capacity check refuses a request that would starve the tasks), the per-operator memory hints of its
    issue detector, and the note that progress bars are off (asked for)."""

    NOT_FOR_US = ("does not have any available CPUs", "configured logical memory was", "To disable issue detection",
                  "Progress bars disabled")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.NOT_FOR_US)


@contextmanager
def data_context(show_progress: bool) -> Iterator[None]:
    """Ray Data settings for this pipeline, restored afterwards (the context is per process)."""
    from ray.data import DataContext
    from ray.data._internal.tensor_extensions.arrow import FixedShapeTensorFormat  # no public name in 2.60

    context = DataContext.get_current()
    wanted = {
        # Arrow's own tensor type: the files stay readable by pyarrow without Ray's extension types.
        "arrow_fixed_shape_tensor_format": FixedShapeTensorFormat.ARROW_NATIVE,
        # Raise the UDF's own exception (wrapped in a RayTaskError whose cause it is), not UserCodeException.
        "raise_original_map_exception": True,
        "enable_progress_bars": show_progress and os.environ.get("RAYDD_PROGRESS", "1") not in ("0", "false", "off"),
    }
    saved = {name: getattr(context, name) for name in wanted}
    for name, value in wanted.items():
        setattr(context, name, value)
    # Ray Data's INFO lines (operator plans, progress printed as log lines off a terminal) go to Ray's
    # session logs; raydd prints its own summary of the stage.
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    data_logger.setLevel(max(level, logging.WARNING))
    consoles = [h for h in data_logger.handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    advice = RayDataAdviceFilter()
    for handler in consoles:
        handler.addFilter(advice)
    try:
        yield
    finally:
        for handler in consoles:
            handler.removeFilter(advice)
        data_logger.setLevel(level)
        for name, value in saved.items():
            setattr(context, name, value)


def error_chain(error: BaseException) -> Iterator[BaseException]:
    """Every exception a Ray failure carries (``RayTaskError.cause``, ``__cause__``, ``__context__``), once each."""
    pending: list[BaseException | None] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        cause = getattr(current, "cause", None)
        pending += [cause if isinstance(cause, BaseException) else None, current.__cause__, current.__context__]


def user_error(error: BaseException) -> RayddError | None:
    """The RayddError a Ray failure carries, if any, as raydd raised it (one line).

    Ray Data appends its retry advice to the message of an error raised while reading a file; a raydd
    error's message is its first line.
    """
    from ray.exceptions import RayError

    found = next((e for e in error_chain(error) if isinstance(e, RayddError) and not isinstance(e, RayError)), None)
    if found is not None and found.args and isinstance(found.args[0], str):
        found.args = (found.args[0].split("\n", 1)[0], *found.args[1:])
    return found


@contextmanager
def ray_errors(shown: str | None = None) -> Iterator[None]:
    """Ray wraps every task failure; let through only what the user can act on, without a traceback.

    A RayddError raised in a task comes out as itself, a DataError (a damaged file or shard) prefixed
    with ``shown`` (the source) as every other error about the source is; anything else (a bug) as Ray
    raised it.
    """
    try:
        yield
    except Exception as error:  # noqa: BLE001 - Ray wraps everything; keep only what the user can act on
        from ray.exceptions import RayError

        if isinstance(error, RayddError) and not isinstance(error, RayError):
            raise  # raised here, in the driver: already what the user should see
        found = user_error(error)
        if found is None:
            raise
        if shown is not None and isinstance(found, DataError) and not str(found).startswith(shown):
            raise DataError(f"{shown}: {found}") from None
        raise found.with_traceback(None) from None


def check_capacity(stages: Sequence[StagePlan], actors: int, cpus_per_actor: float) -> None:
    """Ray waits forever for resources it will never get; say so instead, with the numbers."""
    for stage in stages:
        check_resources(actors, cpus_per_actor, stage.gpus)
    have = obtainable_resources()
    cpus = len(stages) * actors * cpus_per_actor
    if cpus + WRITE_CPUS > have["CPU"] + 1e-9:
        raise ClusterError(
            f"{len(stages)} stage(s) x {actors} actor(s) x {cpus_per_actor:g} CPU = {cpus:g} CPU, plus {WRITE_CPUS:g} "
            f"for writing, but the cluster offers {have['CPU']:g} CPU (a pool that takes every CPU deadlocks); "
            "lower actors or cpus_per_actor"
        )
    gpus = actors * sum(stage.gpus for stage in stages)
    if gpus > have["GPU"] + 1e-9:
        raise ClusterError(f"the actor pools need {gpus:g} GPU in all, the cluster offers {have['GPU']:g}")


def run_pipeline(blocks, stages: Sequence[StagePlan], out: Output, *, actors: int,
                 cpus_per_actor: float, batch_size: int, image_shape: Sequence[int],
                 show_progress: bool = True, shown: str | None = None) -> None:
    """Stream ``blocks`` (Arrow tables, or a function returning a Ray dataset of rows) through the stages'
    actor pools into partitioned Parquet under ``out``. ``shown`` names the source in reader errors."""
    import ray
    import ray.data

    with data_context(show_progress), ray_errors(shown):
        dataset = blocks() if callable(blocks) else ray.data.from_arrow(list(blocks))
        for stage in stages:
            dataset = dataset.map_batches(
                stage.actor,
                fn_constructor_kwargs=stage.kwargs,
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=cpus_per_actor,
                num_gpus=stage.gpus,
                batch_size=batch_size,
                batch_format="numpy",
                udf_modifying_row_count=False,
            )
        dataset = dataset.map_batches(conform, fn_kwargs={"image_shape": tuple(image_shape)},
                                      batch_format="pyarrow", batch_size=None, num_cpus=WRITE_CPUS,
                                      udf_modifying_row_count=False)
        path, filesystem = out.ray_target()
        dataset.write_parquet(path, filesystem=filesystem, partition_cols=list(schema.PARTITION_COLUMNS),
                              ray_remote_args={"num_cpus": WRITE_CPUS})
