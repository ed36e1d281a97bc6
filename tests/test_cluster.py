"""Cluster layer: fast, clear failures (address, resources, storage), cluster.yaml, and `ray job submit`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from raydd.pipeline.cluster import (QUIET_ENV, ClusterError, check_resources, check_storage, init_ray,
                                    parse_address)
from tests.helpers import write_imagefolder

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray") if (VENV_BIN / "ray").exists() else shutil.which("ray")


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on (the sockets are held open together so the ports differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_job_runtime_env_is_read_so_the_driver_does_not_repeat_its_variables(monkeypatch):
    from raydd.pipeline.cluster import submitted_job_env_vars

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert submitted_job_env_vars() is None
    job_config = {"runtime_env": {"working_dir": "gcs://pkg.zip", "env_vars": {"OMP_NUM_THREADS": "1"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job_config))
    assert submitted_job_env_vars() == {"OMP_NUM_THREADS": "1"}


def test_address_forms():
    assert parse_address("127.0.0.1:6379") == ("127.0.0.1", 6379)
    assert parse_address("ray://head.example:10001") == ("head.example", 10001)
    assert parse_address("auto") is None
    for bad in ("http://127.0.0.1:8265", "127.0.0.1", "127.0.0.1:port"):
        with pytest.raises(ClusterError, match="expected HOST:PORT"):
            parse_address(bad)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_unreachable_address_fails_fast_with_a_clear_message(scheme):
    import ray

    assert not ray.is_initialized()
    address = f"{scheme}127.0.0.1:{free_ports(1)[0]}"  # a closed local port: nothing else is ever probed
    start = time.perf_counter()
    with pytest.raises(ClusterError) as caught:
        init_ray(address)
    assert time.perf_counter() - start < 15
    message = str(caught.value)
    assert address in message and "ray start --head" in message and "RAY_ADDRESS" in message
    assert not ray.is_initialized()


@pytest.mark.timeout(60)
def test_storage_uri_without_driver_or_credentials_is_named():
    uri = "s3://raydd-test-bucket-that-does-not-exist/runs/x"
    start = time.perf_counter()
    with pytest.raises(ClusterError) as caught:
        check_storage(uri, timeout_s=20)
    assert time.perf_counter() - start < 30
    message = str(caught.value)
    assert uri in message
    assert "s3fs" in message or "credentials" in message
    check_storage(str(Path(tempfile.gettempdir()) / "raydd-local"), write=True)  # local paths pass untouched


def test_cluster_yaml_is_a_valid_launcher_config():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    head = config["head_node_type"]
    types = config["available_node_types"]
    assert head in types
    workers = [t for name, t in types.items() if name != head]
    assert any(t["resources"].get("GPU", 0) >= 1 and t["min_workers"] == 0 and t["max_workers"] >= 1
               for t in workers)
    assert config["idle_timeout_minutes"] > 0
    assert any("pip install" in c and "-e" in c and "[multimodal]" in c for c in config["setup_commands"])
    assert any("torch==" in c for c in config["setup_commands"])
    assert "." in config["file_mounts"].values()
    assert any("--dashboard-port=8265" in c for c in config["head_start_ray_commands"])
    # the launcher's own schema check (what `ray up` runs first)
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))


# -- ray job submit against a head started here --------------------------------------------------
def _ray_env() -> dict[str, str]:
    env = {**os.environ, **QUIET_ENV, "RAYDD_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture
def ray_head():
    """`ray start --head --block` on 127.0.0.1 with its own ports and temp dir; stopped through its pid.

    `--block` keeps the head's processes owned by this one process, so terminating it stops exactly
    this head (`ray stop` would stop every Ray on the machine, other users' included).
    """
    gcs, dashboard, *others = free_ports(9)
    temp_dir = tempfile.mkdtemp(prefix="rdh-", dir="/tmp")
    log = open(Path(temp_dir) / "ray-start.log", "w")
    command = [RAY, "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2", "--include-dashboard=true",
               f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1",
               "--disable-usage-stats", f"--temp-dir={temp_dir}", "--object-store-memory=268435456",
               f"--node-manager-port={others[0]}", f"--object-manager-port={others[1]}",
               f"--ray-client-server-port={others[2]}", f"--dashboard-agent-listen-port={others[3]}",
               f"--dashboard-agent-grpc-port={others[4]}", f"--metrics-export-port={others[5]}",
               f"--runtime-env-agent-port={others[6]}"]
    # Its own session: the head's processes form one process group led by this pid.
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_ray_env(), start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"ray start exited: {(Path(temp_dir) / 'ray-start.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/version", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the job server did not come up within 120 s")
            time.sleep(1)
        yield url, Path(temp_dir) / "ray-start.log"
    finally:
        process.terminate()  # graceful: `ray start --block` stops the processes it started
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the head's own group, still led by our unreaped child
            process.wait(timeout=30)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _job_status(url: str, job_id: str) -> str:
    """The job server's own record of the job (the CLI prints it in prose)."""
    try:
        with urllib.request.urlopen(f"{url}/api/jobs/{job_id}", timeout=30) as response:
            return json.load(response)["status"]
    except OSError as exc:
        return f"job server unreachable ({exc})"


def _ray_cli(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], capture_output=True, text=True, timeout=timeout, env=_ray_env(), cwd=ROOT)


@pytest.mark.timeout(540)
def test_ray_job_submit_runs_the_whole_job(tmp_path, ray_head):
    """The documented command, unchanged: `ray job submit --working-dir . -- python jobs/run.py ...`:
    preprocess -> distill -> evaluate -> report inside a submitted job."""
    ray_head, head_log = ray_head
    dataset = write_imagefolder(tmp_path / "data")
    out = tmp_path / "run"
    job_id = f"raydd-test-{os.getpid()}-{int(time.time())}"
    runtime_env = json.dumps({"env_vars": {"OMP_NUM_THREADS": "1", "RAYDD_PROGRESS": "0"}})
    start = time.perf_counter()
    submitted = _ray_cli(
        "job", "submit", "--address", ray_head, "--submission-id", job_id, "--working-dir", ".",
        "--runtime-env-json", runtime_env, "--",
        sys.executable, "jobs/run.py", "--dataset", str(dataset), "--out", str(out), "--workers", "1",
        "--set", "device=cpu", "--set", "distill.ipc=1", "--set", "distill.iterations=2",
        "--set", "distill.batch_real=4", "--set", "eval.models=1", "--set", "eval.epochs=2",
        "--set", f"prepare.root={tmp_path / 'prepared'}",
        timeout=480,
    )
    seconds = time.perf_counter() - start
    status = _ray_cli("job", "status", "--address", ray_head, job_id, timeout=60)
    job_status = _job_status(ray_head, job_id)
    logs = _ray_cli("job", "logs", "--address", ray_head, job_id, timeout=60)
    detail = (f"submit:\n{submitted.stdout[-3000:]}\n{submitted.stderr[-3000:]}\nlogs:\n{logs.stdout[-3000:]}\n"
              f"head:\n{head_log.read_text()[-3000:]}")
    assert job_status == "SUCCEEDED", detail
    assert "succeeded" in status.stdout.lower(), status.stdout
    assert f"eval: {out}/eval.json" in logs.stdout and "accuracy:" in logs.stdout, detail
    assert list((tmp_path / "prepared").glob("*/manifest.json")), detail  # stage 1 ran inside the job
    assert (out / "synthetic.safetensors").is_file() and (out / "eval.json").is_file()
    assert (out / "report.html").is_file()
    print(f"ray job submit (tiny run: preprocess, distill, evaluate, report; 1 worker): {seconds:.1f} s")


@pytest.mark.timeout(300)
def test_a_second_ray_on_the_machine_does_not_disturb_a_local_run(tmp_path, ray_head):
    """Another Ray is running (a colleague's experiment): `raydd distill` starts its own local Ray and
    talks only to it, and its progress lines reach the console once each, without Ray's native lines."""
    dataset = write_imagefolder(tmp_path / "data", num_classes=4, n_train=10)
    out = tmp_path / "run"
    done = subprocess.run(
        [str(VENV_BIN / "raydd"), "distill", "--dataset", str(dataset), "--out", str(out), "--workers", "2",
         "--ipc", "1", "--iterations", "3", "--device", "cpu", "--set", "distill.batch_real=4",
         "--set", "distill.log_every=1", "--set", "data.val_fraction=0.2"],
        capture_output=True, text=True, timeout=280, env={**_ray_env(), "RAYDD_PROGRESS": "1"}, cwd=ROOT)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "multiple active Ray instances" not in output, output[-4000:]
    assert "core_worker.cc" not in output, output[-4000:]  # Ray's native lines went to the run's ray.log
    progress = [line for line in output.splitlines() if line.startswith("raydd: dm ipc1 iteration")]
    assert [line.split()[4] for line in progress] == ["1/3", "2/3", "3/3"], output[-4000:]
    assert (out / "synthetic.safetensors").is_file()


# Last in the module: the shared in-process Ray starts here, after the job test's head is gone.
@pytest.mark.timeout(120)
def test_requests_beyond_a_fixed_cluster_fail_instead_of_waiting(ray_local):
    check_resources(2, cpus_per_worker=1)  # exactly what the 2-CPU cluster has
    fixed = r"3 workers .* need 3 CPU, but this Ray cluster \(not autoscaling\) offers 2 CPU"
    with pytest.raises(ClusterError, match=fixed):
        check_resources(3, cpus_per_worker=1)
    with pytest.raises(ClusterError, match="need 1 GPU.*offers 0 GPU"):
        check_resources(1, cpus_per_worker=1, gpus_per_worker=1)
    check_resources(1, cpus_per_worker=1, gpus_per_worker=1, autoscaling=True)  # nodes may still arrive


@pytest.mark.timeout(120)
def test_an_autoscaling_cluster_is_judged_by_what_it_may_launch(ray_local, monkeypatch):
    import raydd.pipeline.cluster as cluster

    monkeypatch.setattr(cluster, "autoscaler_limits", lambda: {"CPU": 32.0, "GPU": 8.0})  # 8 x g5.xlarge
    check_resources(8, cpus_per_worker=1, gpus_per_worker=1)  # 0 GPUs now, but the autoscaler can add 8
    beyond = "9 workers .* need 9 GPU, but the autoscaler's largest cluster offers 8 GPU"
    with pytest.raises(ClusterError, match=beyond):
        check_resources(9, cpus_per_worker=1, gpus_per_worker=1)
    assert cluster.obtainable_resources()["GPU"] == 8.0
