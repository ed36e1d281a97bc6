"""Shared fixtures. ``ray_local``: one small in-process Ray per test module (starting Ray costs ~3 s);
``isolated_data_env``: a test's own data cache (``pytestmark = pytest.mark.usefixtures(...)``)."""

from __future__ import annotations

import shutil
import tempfile

import pytest

RAY_TEST_ENV = {"RAYDD_PROGRESS": "0", "RAY_CHDIR_TO_TRIAL_DIR": "0"}


@pytest.fixture(scope="module")
def ray_local():
    """A 2-CPU local Ray sized for tests: small object store, no dashboard, errors-only logs.

    Its session files go to a private temporary directory so it never meets another Ray started on
    the same machine (``address="auto"`` lookups, port files).
    """
    from raydd.pipeline.cluster import QUIET_ENV, worker_env

    with pytest.MonkeyPatch.context() as env:
        for key, value in {**QUIET_ENV, **RAY_TEST_ENV}.items():
            env.setenv(key, value)
        import ray

        if ray.is_initialized():
            ray.shutdown()
        temp_dir = tempfile.mkdtemp(prefix="rdd-", dir="/tmp")  # short: Ray's socket paths have a length limit
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024,
                 logging_config=ray.LoggingConfig(log_level="ERROR"), _node_ip_address="127.0.0.1",
                 _temp_dir=temp_dir, runtime_env={"env_vars": worker_env()})
        try:
            yield ray
        finally:
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def isolated_data_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The test sees an empty data cache and none of the machine's data settings."""
    from tests.helpers import isolate_data_env

    isolate_data_env(monkeypatch, tmp_path / "xdg-cache")


# A test that starts Ray (through these fixtures) costs seconds to minutes: it is `slow`, so
# `pytest -m "not slow"` gives a contributor the quick part of the suite. Tests that start Ray or
# train for minutes by other means carry the mark themselves.
RAY_FIXTURES = {"ray_local", "ray_head", "two_nodes"}


def pytest_collection_modifyitems(items):
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
