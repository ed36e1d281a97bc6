"""A quiet console: Ray's native log lines leave it for a file, Ray Data's advice that does not apply stays in
Ray's log, and everything else reaches the console unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from raydd.artifacts import RAY_LOG
from raydd.pipeline.native_log import is_native_line, summary

ROOT = Path(__file__).resolve().parents[1]
# What Ray 2.5x printed on this machine for a Ray Data actor pool (driver) and the same line forwarded
# from an actor, with and without the colour codes Ray puts around the prefix on a terminal.
DRIVER_LINE = ("[2026-12-05 07:32:20,783 E 15150 15150] core_worker.cc:2465: Actor with class name: "
               "'MapWorker(MapBatches(A))' and ID: 'd7fe3c51' has constructor arguments in the object store "
               "and max_restarts > 0.")
FORWARDED = "(TrainController pid=4242) [2026-12-05 07:32:20,783 E 4242 4250] core_worker.cc:2465: Actor with class"
COLOURED = "\x1b[36m(TrainController pid=4242)\x1b[0m [2026-12-05 07:32:20,783 W 4242 4250] gcs_client.cc:12: slow"


@pytest.mark.parametrize("line", [DRIVER_LINE, FORWARDED, COLOURED])
def test_rays_native_lines_are_recognised(line):
    assert is_native_line(line)


@pytest.mark.parametrize("line", [
    "2026-12-05 07:32:20,731\tINFO streaming_executor.py:216 -- Execution plan of Dataset",  # Python logging
    "raydd: error: /data/train/0001.png: corrupt image",
    "\rdistill:  10%|#         | 20/200 [00:05<00:45, loss=1.2]",
    "[rank0]: RuntimeError: boom",
    "[2026-12-05 07:32:20,783 C 15150 15150] core_worker.cc:10: Check failed",  # fatal: stays visible
    "(TrainWorker pid=7) Traceback (most recent call last):",
])
def test_other_lines_are_not(line):
    assert not is_native_line(line)


def test_summary_names_where_the_lines_went():
    assert summary({}) is None
    assert summary({"/r/ray.log": 1}) == "raydd: 1 line of Ray's own log went to /r/ray.log (--verbose shows them)"
    assert "3 lines" in summary({"/s/a.log": 1, "/r/ray.log": 2})


SCRIPT = textwrap.dedent("""
    import os, sys
    from raydd.pipeline import native_log
    started = native_log.start(sys.argv[1] + "/early.log")
    os.write(2, (sys.argv[2] + "\\n").encode())          # the early line: before a run directory is known
    native_log.divert_to(sys.argv[1] + "/missing/ray.log")  # a directory not made: the early file takes it
    os.write(2, (sys.argv[2] + "\\n").encode())
    os.makedirs(sys.argv[1] + "/run")
    native_log.divert_to(sys.argv[1] + "/run/ray.log")
    os.write(2, b"plain text from C\\n" + (sys.argv[2] + "\\n").encode() + b"more text\\n")
    print("python stderr, a terminal:", sys.stderr.isatty(), file=sys.stderr)
    os.write(2, b"\\rbar 10%")                           # a progress bar's update: no newline
    print("started", started, "summary", native_log.finish())
    print("after finish", file=sys.stderr)
""")


def run_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """The script's output as written (bytes decoded without newline translation: the \\r stays)."""
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), DRIVER_LINE], capture_output=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


def test_native_lines_go_to_the_file_and_the_rest_to_the_console_in_order(tmp_path):
    result = run_script(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "core_worker" not in result.stderr
    # everything else arrives, in order, the partial bar included; isatty is the console's (a pipe here)
    assert result.stderr == ("plain text from C\nmore text\npython stderr, a terminal: False\n\rbar 10%"
                             "after finish\n")
    assert (tmp_path / "early.log").read_text() == DRIVER_LINE + "\n" + DRIVER_LINE + "\n"
    assert (tmp_path / "run" / "ray.log").read_text() == DRIVER_LINE + "\n"
    assert result.stdout.startswith("started True summary raydd: 3 lines of Ray's own log went to ")
    assert f"{tmp_path}/early.log (2), {tmp_path}/run/ray.log (1)" in result.stdout


def test_verbose_keeps_everything_on_the_console(tmp_path):
    result = run_script(tmp_path, RAYDD_VERBOSE="1")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(DRIVER_LINE) == 3
    assert "started False summary None" in result.stdout
    assert not (tmp_path / "early.log").exists()


RAY_SCRIPT = textwrap.dedent("""
    import sys
    from raydd.pipeline.cluster import init_ray, ray_log_in
    ray = init_ray(num_cpus=2)
    ray_log_in(sys.argv[1])
    import ray.data

    class Identity:
        def __call__(self, batch):
            return batch

    print("rows", ray.data.range(8).map_batches(Identity, compute=ray.data.ActorPoolStrategy(size=1),
                                                batch_size=4).count())
    from raydd.pipeline import native_log
    print(native_log.finish())
""")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_ray_data_actor_pool_leaves_the_console_quiet(tmp_path):
    """Ray's `core_worker.cc … constructor arguments in the object store` line, printed for every actor
    pool, lands in the run directory's ray.log instead of the console."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = subprocess.run([sys.executable, "-c", RAY_SCRIPT, str(run_dir)], capture_output=True, text=True,
                            timeout=200, env={**os.environ, "PYTHONPATH": str(ROOT), "RAYDD_VERBOSE": ""})
    assert result.returncode == 0, result.stderr
    assert "rows 8" in result.stdout
    assert "core_worker.cc" not in result.stdout + result.stderr
    log = (run_dir / RAY_LOG).read_text()
    assert "constructor arguments in the object store" in log
    assert all(is_native_line(line) for line in log.splitlines())
    assert f"went to {run_dir}/{RAY_LOG}" in result.stdout


def test_a_script_that_never_finishes_still_gets_its_traceback_out(tmp_path):
    """An uncaught exception after start: its traceback reaches the console, then where the lines went."""
    script = ("import os, sys\nfrom raydd.pipeline import native_log\nnative_log.start(sys.argv[1])\n"
              "os.write(2, (sys.argv[2] + '\\n').encode())\nraise SystemExit('the last words')\n")
    log = tmp_path / "ray.log"
    result = subprocess.run([sys.executable, "-c", script, str(log), DRIVER_LINE], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1
    assert result.stderr == f"the last words\nraydd: 1 line of Ray's own log went to {log} (--verbose shows them)\n"
    assert log.read_text() == DRIVER_LINE + "\n"


def test_verbose_flag_keeps_rays_lines_on_the_console(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from raydd.cli import app
    from raydd.pipeline.native_log import VERBOSE_ENV, verbose

    monkeypatch.setenv(VERBOSE_ENV, "")  # restored after the test
    assert not verbose()
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "no-such-run"), "--verbose", "--no-ray"])
    assert result.exit_code == 2 and "raydd: error:" in result.output
    assert verbose()


def test_ray_datas_advice_that_does_not_apply_stays_off_the_console():
    """Inside the pipeline's Ray Data context its console handler drops the hints that do not apply
    (they stay in ray-data.log); a real warning still reaches the console; outside, nothing changes."""
    import logging

    import ray.data  # noqa: F401 - sets up Ray Data's handlers

    from raydd.pipeline.preprocess.execute import RayDataAdviceFilter, data_context

    logger = logging.getLogger("ray.data")
    console = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
               and not isinstance(h, logging.FileHandler)]
    assert console

    def shown(message: str) -> bool:
        record = logger.makeRecord("ray.data", logging.WARNING, __file__, 1, message, (), None)
        return all(h.filter(record) for h in console)

    hang = ("Warning: The Ray cluster currently does not have any available CPUs. The Dataset job will hang "
            "unless more CPUs are freed up.")
    with data_context(show_progress=False):
        assert not shown(hang)
        assert not shown("Operator 'MapBatches(_decode)' used up to 570.9MiB of memory per worker. The "
                         "configured logical memory was 512.0MiB.")
        assert shown("Failed to write block 3: disk full")
    assert shown(hang)
    assert not any(isinstance(f, RayDataAdviceFilter) for h in console for f in h.filters)


def test_a_failing_sorter_falls_back_to_copying_so_stderr_never_blocks(tmp_path):
    """Were the line sorting to fail, the reader keeps copying: more than a pipe's worth of output
    (64 KiB) still arrives and the process does not hang on a full pipe."""
    script = ("import os, sys\nfrom raydd.pipeline import native_log\n"
              "native_log.is_native_line = lambda line: 1 / 0\n"
              "native_log.start(sys.argv[1])\n"
              "for i in range(2000): print('x' * 99, file=sys.stderr)\n"
              "print(native_log.finish())\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "ray.log")], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("x" * 99) == 2000
    assert result.stdout == "None\n"


# What `raydd run` may print when no terminal watches: its run directory, the four stages, one status
# line per progress event, the result table and where the artifacts are. Anything else is noise.
_RUN_LINES = ("run directory: ", "stage 1/4: preprocess", "stage 2/4: distill", "stage 3/4: evaluate",
              "stage 4/4: report", "preprocess: ", "raydd: dm ", "evaluation models: ", "dm ipc=", "  model ",
              "  convnet3 ", "  protocol: ", "synthetic set picture: ", "eval: ", "report: ", "raydd: ")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_runs_at_once_each_show_only_their_stages(tmp_path):
    """Two experiments started side by side on one machine: each command starts and addresses its own Ray,
    and neither console shows Ray's lines, the other's trouble, or a line twice."""
    from tests.helpers import write_imagefolder

    data = write_imagefolder(tmp_path / "data", num_classes=4, n_train=10, size=16)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAYDD_NUM_CPUS": "1", "RAY_ADDRESS": ""}
    env.pop("RAYDD_VERBOSE", None)
    runs = []
    for name in ("a", "b"):
        command = [sys.executable, "-m", "raydd", "run", "--dataset", str(data), "--out", str(tmp_path / name),
                   "--iterations", "2", "--eval-epochs", "2", "--eval-models", "2", "--ipc", "2", "--device", "cpu",
                   "--set", "distill.batch_real=4", "--set", "data.val_fraction=0.2",
                   "--set", f"prepare.root={tmp_path / ('prepared-' + name)}"]
        runs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True))
    for process, name in zip(runs, ("a", "b")):
        output = process.communicate(timeout=540)[0]
        assert process.returncode == 0, output
        lines = [line for line in output.splitlines() if line.strip()]
        stages = [line for line in lines if line.startswith("stage ")]
        assert [s.split(":")[0] for s in stages] == ["stage 1/4", "stage 2/4", "stage 3/4", "stage 4/4"], output
        noise = [line for line in lines if not line.startswith(_RUN_LINES)]
        assert noise == [], output
        assert "core_worker" not in output and "multiple active Ray" not in output and "Exception" not in output
        progress = [line for line in lines if line.startswith("raydd: dm ")]
        assert len(progress) == len(set(progress)), output  # no event printed twice
        assert (tmp_path / name / "eval.json").is_file()
