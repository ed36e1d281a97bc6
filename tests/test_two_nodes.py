"""Two Ray nodes on one machine: a WebDataset source preprocessed with actors on both, one distillation worker per node, and a
node killed in the middle of a distillation.

Each node is a ``ray start --block`` of its own (own temp dir, own ports, 2 CPUs), stopped through its
process group; nothing here touches another Ray on the machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from raydd.config import build_config
from raydd.distill import run_distillation
from raydd.pipeline.preprocess import preprocess_to_parquet
from raydd.pipeline.train import distill_with_ray
from raydd.rundir import RunDir
from tests.faults import PLACEMENT, RecordPlacement
from tests.test_ingest import _png, write_shards
from tests.test_cluster import RAY, _ray_env, free_ports

pytestmark = pytest.mark.timeout(600)

NODE_CPUS = 2


class Node:
    """One ``ray start --block`` process and the Ray processes it owns (one process group)."""

    def __init__(self, args: list[str], name: str) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix=f"rd2n-{name}-", dir="/tmp")
        ports = free_ports(7)
        self.log = Path(self.temp_dir) / "ray-start.log"
        command = [RAY, "start", "--block", f"--num-cpus={NODE_CPUS}", "--node-ip-address=127.0.0.1",
                   "--disable-usage-stats", f"--temp-dir={self.temp_dir}", "--object-store-memory=200000000",
                   f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
                   f"--dashboard-agent-listen-port={ports[2]}", f"--dashboard-agent-grpc-port={ports[3]}",
                   f"--metrics-export-port={ports[4]}", f"--runtime-env-agent-port={ports[5]}", *args]
        self.process = subprocess.Popen(command, stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                        env=_ray_env(), start_new_session=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # `ray start --block` stops the processes it started
            try:
                self.process.wait(timeout=20)
                return
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """The whole node at once, as a lost machine: SIGKILL to its process group."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)


def alive_nodes(address: str) -> int:
    import ray

    if not ray.is_initialized():
        ray.init(address=address, logging_config=ray.LoggingConfig(log_level="ERROR"))
    return sum(node["Alive"] for node in ray.nodes())


def wait_for_nodes(address: str, count: int, nodes: list[Node]) -> None:
    deadline = time.monotonic() + 120
    while alive_nodes(address) < count:
        for node in nodes:
            if node.process.poll() is not None:
                raise RuntimeError(f"ray start exited: {node.log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} nodes did not come up within 120 s")
        time.sleep(1)


@pytest.fixture
def two_nodes():
    """A head and a second node; yields (address, nodes, add_node). Every node is stopped at the end."""
    import ray

    gcs, client = free_ports(2)
    address = f"127.0.0.1:{gcs}"
    nodes = [Node(["--head", f"--port={gcs}", "--include-dashboard=false", f"--ray-client-server-port={client}"],
                  "head")]

    def add_node() -> Node:
        nodes.append(Node([f"--address={address}"], f"node{len(nodes)}"))
        return nodes[-1]

    try:
        time.sleep(3)
        add_node()
        wait_for_nodes(address, 2, nodes)
        ray.shutdown()  # each raydd call joins the cluster itself
        yield address, nodes, add_node
    finally:
        ray.shutdown()
        for node in reversed(nodes):
            node.stop()


def shard_samples(per_class: int = 10, n_test: int = 6) -> dict[str, list[dict]]:
    rng = np.random.default_rng(0)
    out, key = {"train": [], "test": []}, 0
    for split, n in (("train", 3 * per_class), ("test", n_test)):
        for i in range(n):
            label = ("cat", "dog", "bird")[i % 3]
            pixels = (rng.integers(0, 120, (16, 16, 3)) + 60 * (i % 3)).astype(np.uint8)
            out[split].append({"key": f"{key:06d}", "label": label, "caption": f"a {label}", "image": _png(pixels)})
            key += 1
    return out


def placements(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / PLACEMENT).read_text().splitlines() if line.strip()]


def tiny(data, iterations: int):
    return build_config("quick", overrides={
        "device": "cpu", "data": {"name": data, "val_fraction": 0.2},
        "distill": {"method": "dm", "ipc": 2, "iterations": iterations, "batch_real": 4, "checkpoint_every": 2,
                    "log_every": 1}})


def test_two_nodes_preprocess_and_distill_as_one_process_and_survive_a_lost_node(two_nodes, tmp_path):
    address, nodes, add_node = two_nodes
    data = write_shards(tmp_path / "shards", shard_samples())  # WebDataset: 3 classes of 16 x 16 RGB images

    # Preprocessing (Ray Data reads and decodes the shards in tasks): two mask actors of 1.5 CPU each; a node has 2, so one actor runs on each node.
    parquet = tmp_path / "pq"
    manifest = preprocess_to_parquet(str(data), str(parquet), val_fraction=0.2, segmenter="threshold",
                                     text_encoder=None, actors=2, cpus_per_actor=1.5, address=address,
                                     show_progress=False)
    assert manifest["pipeline"]["actors"] == 2

    # Two workers of 2 CPUs each (the cluster's 4 CPUs split evenly): one per node.
    cfg = tiny(f"parquet:{parquet}", iterations=4)
    sharded = distill_with_ray(cfg, str(tmp_path / "two-nodes"), workers=2, address=address, show_progress=False,
                               backend=RecordPlacement)
    starts = placements(tmp_path / "two-nodes")
    assert len(starts) == 2 and len({s["node"] for s in starts}) == 2  # one worker on each node
    single = run_distillation(cfg, str(tmp_path / "single"), show_progress=False)
    assert torch.allclose(single.images, sharded.images, atol=1e-5)

    # A node lost after a checkpoint (iteration 4 or later, of 20); a replacement joins (as an autoscaler's
    # would) and Ray Train restarts the workers from the newest checkpoint, which is at least the one seen at the kill.
    long_cfg = tiny(f"parquet:{parquet}", iterations=20)
    run = tmp_path / "lost-node"
    killed = threading.Event()
    checkpoint_at_kill: list[int] = []

    def kill_second_node_after_a_checkpoint() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            seen = RunDir(str(run)).checkpoint_iteration() if run.exists() else 0
            if seen >= 4:
                nodes[1].kill()
                checkpoint_at_kill.append(seen)
                killed.set()
                add_node()
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=kill_second_node_after_a_checkpoint, daemon=True)
    watcher.start()
    survived = distill_with_ray(long_cfg, str(run), workers=2, address=address, show_progress=False, max_failures=3,
                                backend=RecordPlacement)
    watcher.join(timeout=5)
    assert killed.is_set(), "the second node was never killed: the run ended before a checkpoint at iteration 4"
    starts = placements(run)
    assert len(starts) >= 4 and len({s["node"] for s in starts[:2]}) == 2  # started on both, then restarted
    assert [s["from_iteration"] for s in starts[:2]] == [0, 0]
    restarts = [s["from_iteration"] for s in starts[2:]]
    assert all(i >= checkpoint_at_kill[0] for i in restarts), (restarts, checkpoint_at_kill)  # from a checkpoint
    uninterrupted = run_distillation(long_cfg, str(tmp_path / "single-long"), show_progress=False)
    assert survived.meta["iterations"] == 20
    assert torch.allclose(uninterrupted.images, survived.images, atol=1e-5)
