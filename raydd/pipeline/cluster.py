"""Connecting to Ray: a quiet local cluster by default, or an existing cluster by address.

A laptop run starts Ray in-process sized to the machine (no dashboard, a modest object store, logs at
ERROR); ``ray job submit`` runs and ``--address`` connect to the cluster that is already there.

Ray's own failure mode for a wrong address, a too-small cluster or an unreadable bucket is to wait
(sometimes forever). The checks here turn each of those into one ``ClusterError`` that names the
address, the numbers or the URI, before any work is scheduled.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import socket
import sys
import tempfile
import uuid
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlsplit

from raydd import storage
from raydd.artifacts import RAY_LOG
from raydd.errors import RayddError
from raydd.pipeline import native_log

# Environment every raydd process (driver, Ray workers) should run with; set before ray is imported.
QUIET_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    # How often Ray Train's controller polls its workers: a report waits up to this long (2 s by default).
    # 0.1 s cost about 2.5 % of a core in polling and 8 % of Ray-path speed on two cores
    # (docs/benchmarks/time-to-accuracy.md); a checkpoint every tens of iterations hides 1 s.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "1.0",
    "RAY_DEDUP_LOGS": "1",
    "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0"),
}

CONNECT_TIMEOUT_S = 3.0  # a reachable head answers a TCP connect in milliseconds
STORAGE_TIMEOUT_S = 20.0  # credential lookups (instance metadata) can take a few seconds each
REMOTE_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")


class ClusterError(RayddError):
    """Ray could not be reached or cannot provide what was asked for."""


def apply_quiet_env() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def worker_env() -> dict[str, str]:
    """Runtime environment variables for Ray workers: one torch thread per CPU Ray gives them."""
    # No weight-loading bars from the Hugging Face libraries: a worker's output is forwarded line by line.
    return {"OMP_NUM_THREADS": "1", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "1.0", "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


# -- reaching a cluster ---------------------------------------------------------------------------
HOW_TO_START = ("start a head with `ray start --head --port=6379` (then pass --address HOST:6379) or set "
                "RAY_ADDRESS to a running cluster's address")


def parse_address(address: str) -> tuple[str, int] | None:
    """``host:port`` / ``ray://host:port`` -> (host, port); ``auto`` / ``local`` -> None (nothing to probe)."""
    text = address.strip()
    if text in ("auto", "local", ""):
        return None
    parts = urlsplit(text if "://" in text else f"//{text}")
    if parts.scheme not in ("", "ray"):
        raise ClusterError(f"Ray address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto "
                           f"(an http:// address is the dashboard's, for `ray job submit --address`)")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ClusterError(f"Ray address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    return parts.hostname, port


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A TCP connect to the head, so a wrong address fails in seconds instead of Ray's long retries."""
    target = parse_address(address)
    if target is None:
        return
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ClusterError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); {HOW_TO_START}") from None


def submitted_job_env_vars() -> dict[str, str] | None:
    """Inside a `ray job submit` driver: the job's runtime-env variables (None outside a job).

    Ray refuses a driver ``runtime_env`` that sets a variable the job already sets, so the driver only
    adds the ones the job left out.
    """
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    try:
        runtime_env = json.loads(raw).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return {}
    return dict(runtime_env.get("env_vars") or {})


def init_ray(address: str | None = None, *, num_cpus: int | None = None, object_store_mb: int | None = None):
    """Start or join Ray. ``address=None``: join RAY_ADDRESS if set (ray job submit), else start locally."""
    apply_quiet_env()
    import ray

    if ray.is_initialized():
        return ray
    job_env = submitted_job_env_vars()
    address = address or os.environ.get("RAY_ADDRESS")
    if address and (job_env is None or address != os.environ.get("RAY_ADDRESS")):
        check_reachable(address)  # a job's RAY_ADDRESS comes from Ray itself: nothing to check
    env_vars = {k: v for k, v in worker_env().items() if k not in (job_env or {})}
    # Ray's Python INFO/WARNING lines (Ray's session logs keep them) reach the console only with --verbose.
    level = "INFO" if native_log.verbose() else "ERROR"
    kwargs = dict(logging_config=ray.LoggingConfig(log_level=level), log_to_driver=True,
                  runtime_env={"env_vars": env_vars})
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            store = (object_store_mb or int(os.environ.get("RAYDD_OBJECT_STORE_MB", "512"))) * 1024 * 1024
            # RAYDD_NUM_CPUS: a local Ray that uses part of the machine (two experiments side by side).
            cpus = num_cpus or int(os.environ.get("RAYDD_NUM_CPUS", "0")) or os.cpu_count()
            port = free_port()
            # Ray's own helpers (Ray Train's placement-group cleaner) look the cluster up by address; with
            # another Ray on the machine that lookup fails unless the workers are told which one is theirs.
            kwargs["runtime_env"]["env_vars"]["RAY_ADDRESS"] = f"127.0.0.1:{port}"
            # Ray starts its workers at nice 15; the distillation and evaluation workers are the job here,
            # not background work, so they keep the driver's priority.
            with scoped_env(RAY_GCS_SERVER_PORT=str(port), RAY_worker_niceness="0"):
                ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=store,
                         _node_ip_address="127.0.0.1", **kwargs)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = address or "a local cluster"
        hint = f"; {HOW_TO_START}" if address else ""
        raise ClusterError(f"could not connect to Ray at {where}: {exc}{hint}") from None
    native_log.start(_native_log_destination())
    return ray


def _native_log_destination() -> str:
    """Where Ray's native lines go until a run directory is known: Ray's session logs, else a temp file."""
    try:
        from ray._private import worker

        logs = worker._global_node.get_logs_dir_path()  # private: any failure falls back below
        if logs and os.path.isdir(logs):
            return os.path.join(logs, "raydd-driver-native.log")
    except Exception:  # noqa: BLE001 - an internal API; the temp file is as good a place
        pass
    return os.path.join(tempfile.gettempdir(), f"raydd-ray-{os.getpid()}.log")


def ray_log_in(run_dir: str) -> None:
    """Ray's native lines of this command go to the run directory's ray.log (a local run directory)."""
    if not storage.is_remote(run_dir):
        native_log.divert_to(os.path.join(os.path.abspath(run_dir), RAY_LOG))


def free_port() -> int:
    """A TCP port nothing listens on right now (the local head's GCS port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def scoped_env(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of a block (the processes it starts inherit them)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def available_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 0.0))


def available_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


@contextmanager
def ray_session(address: str | None = None, **kwargs) -> Iterator[object]:
    """Init Ray for a block; shut it down afterwards only if this block started it."""
    apply_quiet_env()
    import ray

    started = not ray.is_initialized()
    handle = init_ray(address, **kwargs)
    try:
        yield handle
    finally:
        if started:
            ray.shutdown()


# -- what the cluster can give --------------------------------------------------------------------
def autoscaler_limits() -> dict[str, float] | None:
    """The most CPU/GPU the autoscaler may ever provide, or None on a fixed-size cluster.

    Ray publishes the cluster launcher's node types in the GCS; this reads them through Ray's state
    API (private, so any failure counts as "not autoscaling").
    """
    try:
        from ray._private import state

        limits = state.state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - an internal API: absence means no autoscaler information
        return None
    return {k: float(v) for k, v in limits.items()} if limits else None


def obtainable_resources() -> dict[str, float]:
    """CPU and GPU the cluster has now or can scale to: an autoscaling cluster may start with 0 GPUs."""
    import ray

    now = ray.cluster_resources()
    limits = autoscaler_limits() or {}
    return {k: max(float(now.get(k, 0.0)), limits.get(k, 0.0)) for k in ("CPU", "GPU")}


def _largest_node() -> dict[str, float]:
    import ray

    best: dict[str, float] = {"CPU": 0.0, "GPU": 0.0}
    for node in ray.nodes():
        if node.get("Alive"):
            res = node.get("Resources", {})
            for key in best:
                best[key] = max(best[key], float(res.get(key, 0.0)))
    return best


def check_resources(workers: int, cpus_per_worker: float = 1, gpus_per_worker: float = 0, *,
                    autoscaling: bool | None = None) -> None:
    """Refuse a request the cluster can never satisfy (Ray would wait for it forever).

    ``autoscaling=None`` asks Ray whether an autoscaler publishes node types; with one, the request is
    compared with the most the autoscaler may launch, otherwise with what the cluster has now.
    ``autoscaling=True`` without published limits skips the check (nodes may still arrive).
    """
    import ray

    want = {"CPU": workers * cpus_per_worker, "GPU": workers * gpus_per_worker}
    now = {k: float(ray.cluster_resources().get(k, 0.0)) for k in want}
    limits = autoscaler_limits() if autoscaling is not False else None
    if autoscaling and limits is None:
        return
    if limits is not None:
        ceiling = {k: max(now[k], limits.get(k, 0.0)) for k in want}
        where = "the autoscaler's largest cluster"
    else:
        ceiling = now
        where = "this Ray cluster (not autoscaling)"
    short = [k for k in want if want[k] > ceiling[k] + 1e-9]
    if short:
        asked = ", ".join(f"{want[k]:g} {k}" for k in short)
        offered = ", ".join(f"{ceiling[k]:g} {k}" for k in short)
        plural = "s" if workers != 1 else ""
        raise ClusterError(
            f"{workers} worker{plural} x ({cpus_per_worker:g} CPU, {gpus_per_worker:g} GPU) need {asked}, "
            f"but {where} offers {offered}; use fewer workers or fewer resources per worker, or add nodes"
        )
    if limits is None:
        per_worker = {"CPU": cpus_per_worker, "GPU": gpus_per_worker}
        node = _largest_node()
        too_big = [k for k in per_worker if per_worker[k] > node[k] + 1e-9]
        if too_big:
            need = ", ".join(f"{per_worker[k]:g} {k}" for k in too_big)
            have = ", ".join(f"{node[k]:g} {k}" for k in too_big)
            raise ClusterError(f"one worker needs {need}, but the largest node has {have}")


# -- remote storage -------------------------------------------------------------------------------
def _probe(uri: str, write: bool) -> None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    if fs.exists(path):
        fs.info(path)  # credentials and read permission, not just the bucket's existence
    if write:
        marker = f"{path.rstrip('/')}/.raydd-write-test-{uuid.uuid4().hex[:8]}"
        fs.pipe(marker, b"ok")
        fs.rm(marker)


def check_storage(uri: str, *, write: bool = False, timeout_s: float = STORAGE_TIMEOUT_S) -> None:
    """Make sure an object-store location (``s3://``, ``gs://``, ...) is usable before a run depends on it.

    A missing fsspec driver (s3fs, gcsfs) or missing credentials otherwise shows up much later, in a
    Ray worker's traceback. Local paths pass through untouched.
    """
    from raydd.storage import protocol as uri_protocol  # fsspec only when storage is checked

    protocol = uri_protocol(uri)
    if protocol not in REMOTE_PROTOCOLS:
        return
    import fsspec

    try:
        fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError) as exc:
        package = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}.get(protocol, "adlfs")
        raise ClusterError(f"{uri}: the fsspec driver for {protocol}:// is not installed "
                           f"(pip install {package}); {exc}") from None
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(_probe, uri, write)
    try:
        future.result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        raise ClusterError(f"{uri}: no answer from the object store within {timeout_s:g} s "
                           "(network, endpoint or credential lookup)") from None
    except Exception as exc:  # noqa: BLE001 - botocore/google errors have no common base
        what = "credentials (e.g. AWS_PROFILE / GOOGLE_APPLICATION_CREDENTIALS) or permissions"
        raise ClusterError(f"{uri}: cannot {'write' if write else 'read'} it, check {what}: "
                           f"{type(exc).__name__}: {exc}") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# -- job entrypoints --------------------------------------------------------------------------------
def parse_run_arguments(doc: str, argv: list[str] | None) -> argparse.Namespace:
    """The flags of the jobs that write a run directory (jobs/distill.py, jobs/run.py)."""
    from raydd.flags import add_config_arguments

    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--out", required=True, help="run directory (local path or s3:// / gs:// URI)")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (at most the number of classes)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_config_arguments(parser)
    return parser.parse_args(argv)


def run_entrypoint(main, argv: list[str] | None = None) -> int:
    """Run a jobs/ entrypoint: a user error prints one line and exits 2 (as the CLI does), bugs keep tracebacks."""
    try:
        main(argv)
    except RayddError as exc:
        print(f"raydd: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0
