"""A full disk, a read-only or vanished run directory, a cut or foreign artifact: each command ends in
one line naming the file and what to do, never a traceback; the last checkpoint survives a failed write
and ``--resume`` continues from it to the set an uninterrupted run gives.

The disk cases mount a tiny tmpfs in a private user + mount namespace (``unshare -rm``), so they need
no root; the command runs inside that namespace as a subprocess.
"""

from __future__ import annotations

import errno
import math
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import raydd
from raydd import storage
from raydd.artifacts import MODEL_POOL
from raydd.cli import app
from raydd.distill_loop import LoopBackend
from raydd.errors import RunDirError, StorageError
from raydd.rundir import CHECKPOINT, RunDir
from raydd.synthetic import SyntheticSet
from tests.helpers import installed, write_imagefolder

ROOT = Path(raydd.__file__).resolve().parents[1]
CLI = "from raydd.cli import main; main()"
DISTILL = ["--iterations", "4", "--ipc", "2", "--device", "cpu", "--quiet", "--no-ray", "--set", "distill.batch_real=4",
           "--set", "distill.checkpoint_every=1", "--set", "distill.log_every=1"]
EVAL = ["--eval-models", "1", "--eval-epochs", "1", "--device", "cpu", "--quiet", "--no-ray"]
PAGE = 4096


def _private_tmpfs_works() -> bool:
    """Whether this machine lets an unprivileged process mount a tmpfs in its own namespace."""
    if shutil.which("unshare") is None:
        return False
    target = tempfile.mkdtemp(prefix="raydd-probe-")
    try:
        probe = subprocess.run(["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=4k tmpfs "$0"', target],
                               capture_output=True, timeout=30)
        return probe.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        os.rmdir(target)


needs_tmpfs = installed(_private_tmpfs_works(), "unshare -rm with tmpfs mounts (util-linux, user namespaces)")


def raydd_on_tmpfs(mount: Path, size_k: int, args: list[str], *, setup: str = "",
                   keep: Path | None = None) -> subprocess.CompletedProcess:
    """``raydd ARGS`` where ``mount`` is a fresh tmpfs of ``size_k`` KiB, seen only by that command.

    ``setup`` (shell, after mounting; ``$0`` is the mount point) may fill it or remount it read-only.
    The tmpfs ends with its namespace, so what the command left there is copied to ``keep`` first.
    """
    mount.mkdir(parents=True, exist_ok=True)
    script = "\n".join([f'mount -t tmpfs -o size={size_k}k tmpfs "$0" || exit 99', setup or ":",
                        '"$@"', "rc=$?", f'cp -a "$0/." "{keep}"' if keep else ":", "exit $rc"])
    env = {**os.environ, "RAYDD_PROGRESS": "0", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, str(mount), sys.executable, "-c", CLI, *args],
                          env=env, capture_output=True, text=True, timeout=600)


def one_error_line(output: str, exit_code: int, *named: str) -> str:
    """The command's single ``raydd: error:`` line, checked to name each of ``named``."""
    assert exit_code == 2, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("raydd: error:")]
    assert len(lines) == 1, output
    for part in named:
        assert part in lines[0], lines[0]
    return lines[0]


def pages(path: Path) -> int:
    return math.ceil(path.stat().st_size / PAGE) if path.exists() else 0


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset, a finished uninterrupted run of it): the reference every case compares with."""
    root = tmp_path_factory.mktemp("io")
    data = write_imagefolder(root / "data")
    out = root / "reference"
    result = CliRunner().invoke(app, ["distill", "--dataset", str(data), "--out", str(out), *DISTILL])
    assert result.exit_code == 0, result.output
    return data, out


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished[1], tmp_path / "run"))


def resume(data: Path, out: Path):
    return CliRunner().invoke(app, ["distill", "--dataset", str(data), "--out", str(out), "--resume", *DISTILL])


def assert_same_set(run: Path, reference: Path) -> None:
    assert torch.equal(SyntheticSet.load(str(run)).images, SyntheticSet.load(str(reference)).images)


# -- the storage layer ----------------------------------------------------------------------------

def full_disk(written: int):
    """A stand-in for a write that fills the disk after ``written`` bytes."""
    def write(fs, path: str, data: bytes) -> None:
        with open(path, "ab") as f:
            f.write(data[:written])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return write


def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary_one(tmp_path, monkeypatch):
    target = tmp_path / "state.safetensors"
    storage.write_bytes_atomic(str(target), b"old state")
    monkeypatch.setattr(storage, "_write_synced", full_disk(3))
    with pytest.raises(StorageError, match=f"^{target}: cannot write: the disk is full; free space, then run"):
        storage.write_bytes_atomic(str(target), b"new state")
    assert target.read_bytes() == b"old state" and os.listdir(tmp_path) == [target.name]


def test_failed_append_is_cut_back_so_no_torn_line_is_left(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    storage.append_text(str(log), '{"iteration": 1}\n')
    monkeypatch.setattr("builtins.open", lambda *a, **k: _FullFile(log))
    with pytest.raises(StorageError, match="metrics.jsonl: cannot write: the disk is full"):
        storage.append_text(str(log), '{"iteration": 2}\n')
    monkeypatch.undo()
    assert log.read_text() == '{"iteration": 1}\n'


class _FullFile:
    """An append handle whose write gets a few bytes out before the disk is full."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, text: str) -> None:
        with self.path.open("a") as f:
            f.write(text[:4])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_torn_last_metrics_line_is_dropped_and_a_torn_middle_one_named(tmp_path):
    run = RunDir(str(tmp_path))
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 1}\n{"iteration": 2}\n{"itera')
    assert run.read_metrics() == [{"iteration": 1}, {"iteration": 2}]
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 1}\n{"itera\n{"iteration": 3}\n')
    with pytest.raises(RunDirError, match="metrics.jsonl: cut short .*line 2"):
        run.read_metrics()


def test_storage_error_keeps_its_fields_across_processes():
    error = StorageError("run/x", "the disk is full", "free space").continued_by("continue with raydd distill")
    back = pickle.loads(pickle.dumps(error))
    assert str(back) == str(error)
    assert str(back) == "run/x: cannot write: the disk is full; free space, then continue with raydd distill"


# -- a full disk -----------------------------------------------------------------------------------

@needs_tmpfs
def test_full_disk_mid_run_keeps_the_last_checkpoint_and_resume_finishes_the_run(finished, tmp_path):
    data, reference = finished
    # Room for what a run writes before its loop, one checkpoint and half of a second one: the second
    # checkpoint's temporary file fills the disk.
    before_loop = sum(pages(reference / name)
                      for name in ("config.yaml", "members.json", "synthetic_init.png", "metrics.jsonl"))
    checkpoint = pages(reference / CHECKPOINT)
    size_k = (before_loop + checkpoint + checkpoint // 2) * PAGE // 1024
    mount, kept = tmp_path / "disk", tmp_path / "kept"
    kept.mkdir()
    out = mount / "run"
    failed = raydd_on_tmpfs(mount, size_k, ["distill", "--dataset", str(data), "--out", str(out), *DISTILL],
                            keep=kept)
    one_error_line(failed.stdout + failed.stderr, failed.returncode, str(out), "disk is full",
                          f"raydd distill --resume --out {out}")
    # The failed write left no temporary file and the previous checkpoint whole.
    run = kept / "run"
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name]
    tensors, iteration = RunDir(str(run)).load_checkpoint()
    assert 1 <= iteration < 4 and "images" in tensors
    assert not (run / "synthetic.safetensors").exists()
    # With room again (the directory moved to a roomy disk), --resume finishes as if nothing happened.
    resumed = resume(data, run)
    assert resumed.exit_code == 0, resumed.output
    assert_same_set(run, reference)


@needs_tmpfs
@pytest.mark.slow
def test_full_disk_on_a_ray_train_worker_is_the_same_one_line(finished, tmp_path):
    """The write fails inside a Ray Train worker: Ray's worker-group error and the worker's logged
    traceback give way to the raydd error the worker raised."""
    data, reference = finished
    before_loop = sum(pages(reference / name)
                      for name in ("config.yaml", "members.json", "synthetic_init.png", "metrics.jsonl"))
    checkpoint = pages(reference / CHECKPOINT)
    size_k = (before_loop + checkpoint + checkpoint // 2) * PAGE // 1024
    out = tmp_path / "disk" / "run"
    on_ray = [arg for arg in DISTILL if arg != "--no-ray"]
    failed = raydd_on_tmpfs(tmp_path / "disk", size_k, ["distill", "--dataset", str(data), "--out", str(out), *on_ray])
    one_error_line(failed.stdout + failed.stderr, failed.returncode, str(out), "disk is full",
                   f"raydd distill --resume --out {out}")
    assert "WorkerGroupError" not in failed.stdout + failed.stderr


# -- a read-only or vanished run directory ---------------------------------------------------------

@needs_tmpfs
@pytest.mark.parametrize("command", [["evaluate", *EVAL], ["report"]])
def test_read_only_run_directory_is_one_line_naming_it(finished, tmp_path, command):
    mount = tmp_path / "ro"
    out = mount / "run"
    setup = f'cp -a "{finished[1]}" "$0/run" && mount -o remount,ro "$0"'
    result = raydd_on_tmpfs(mount, 1024, [command[0], str(out), *command[1:]], setup=setup)
    one_error_line(result.stdout + result.stderr, result.returncode, str(out), "read-only", "run the command again")


def test_run_directory_moved_away_mid_run_resumes_where_it_went(finished, tmp_path, monkeypatch):
    data, reference = finished
    out, moved = tmp_path / "run", tmp_path / "moved"

    def move_away(self, run, done):
        if done == 2:
            os.rename(out, moved)

    monkeypatch.setattr(LoopBackend, "after_step", move_away)
    failed = CliRunner().invoke(app, ["distill", "--dataset", str(data), "--out", str(out), *DISTILL])
    one_error_line(failed.output, failed.exit_code, str(out), "directory is gone", "--resume")
    assert not out.exists()  # not recreated behind the user's back
    monkeypatch.undo()
    assert RunDir(str(moved)).checkpoint_iteration() == 2
    resumed = resume(data, moved)
    assert resumed.exit_code == 0, resumed.output
    assert_same_set(moved, reference)


# -- cut or foreign artifacts ----------------------------------------------------------------------

def cut(path: Path) -> None:
    """The file as a full disk or an interrupted copy leaves it: its first part only."""
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])


def replace_with(content: bytes):
    return lambda path: path.write_bytes(content)


CASES = {
    "cut synthetic set / evaluate": ("synthetic.safetensors", cut, ["evaluate", "{run}", *EVAL]),
    "foreign synthetic set / show": ("synthetic.safetensors", replace_with(os.urandom(300)), ["show", "{run}"]),
    "cut metadata / show": ("metadata.json", cut, ["show", "{run}"]),
    "metadata of another shape / evaluate": ("metadata.json", replace_with(b"[1, 2]"), ["evaluate", "{run}", *EVAL]),
    "metadata without fields / show": ("metadata.json", replace_with(b'{"format": "raydd-synthetic/1"}'),
                                       ["show", "{run}"]),
    "cut checkpoint / resume": (CHECKPOINT, cut, ["distill", "--dataset", "{data}", "--out", "{run}", "--resume",
                                                  *DISTILL]),
    "foreign checkpoint / resume": (CHECKPOINT, replace_with(os.urandom(300)),
                                    ["distill", "--dataset", "{data}", "--out", "{run}", "--resume", *DISTILL]),
    "cut members / audit": ("members.json", cut, ["audit", "{run}", "--no-ray", "--quiet"]),
    "config of another shape / evaluate": ("config.yaml", replace_with(b"- 1\n- 2\n"), ["evaluate", "{run}", *EVAL]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cut_or_foreign_artifact_is_one_line_naming_it(finished, run_copy, case):
    name, damage, command = CASES[case]
    damage(run_copy / name)
    args = [a.format(run=run_copy, data=finished[0]) for a in command]
    result = CliRunner().invoke(app, args)
    one_error_line(result.output, result.exit_code, str(run_copy / name), "cut short or not a")


def test_cut_synthetic_set_is_written_again_by_resume(finished, run_copy):
    data, reference = finished
    cut(run_copy / "synthetic.safetensors")
    line = one_error_line(*_invoke(["show", str(run_copy)]), "synthetic.safetensors")
    assert f"raydd distill --resume --out {run_copy}" in line
    resumed = resume(data, run_copy)
    assert resumed.exit_code == 0, resumed.output
    assert_same_set(run_copy, reference)


def test_foreign_model_pool_is_named_before_any_training(finished, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / MODEL_POOL).write_bytes(b'{"not": "a model pool"}')
    args = ["distill", "--dataset", str(finished[0]), "--out", str(out), *DISTILL,
            "--set", "dm.bank=true", "--set", "dm.pool=trained"]
    line = one_error_line(*_invoke(args), str(out / MODEL_POOL), "cut short or not a")
    assert "delete it" in line


def test_report_of_a_run_with_a_cut_artifact_names_it_on_the_page(run_copy):
    cut(run_copy / "metadata.json")
    result = CliRunner().invoke(app, ["report", str(run_copy)])
    assert result.exit_code == 1, result.output  # the page is written; the status says something is left out
    assert f"{run_copy}/metadata.json: cut short" in (run_copy / "report.html").read_text()
    assert "metadata.json: cut short" in result.stderr


def _invoke(args: list[str]) -> tuple[str, int]:
    result = CliRunner().invoke(app, args)
    return result.output, result.exit_code
