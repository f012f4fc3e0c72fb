"""Shared fixtures: a private ``TFK8S_HOME`` per test, and no process of any job left alive after it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from local_helpers import hooks_prelude, set_test_hooks

from tfk8s_jupyter.backends.local import job_processes, process_alive
from tfk8s_jupyter.records import JobRecord

STANDIN_RUNNER = Path(__file__).with_name("standin_runner.py")


@pytest.fixture(autouse=True)
def tfk8s_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own job records root."""
    home = tmp_path / "tfk8s-home"
    home.mkdir()
    monkeypatch.setenv("TFK8S_HOME", str(home))
    monkeypatch.delenv("TF_CONFIG", raising=False)
    return home


@pytest.fixture(autouse=True)
def no_job_process_left(tfk8s_home):
    """After each test: every process any job ever started (by the pids in its record) is gone."""
    yield
    leftovers = []
    deadline = time.monotonic() + 20
    for record in JobRecord.all(tfk8s_home):
        for what, pid, ticks in job_processes(record):
            while process_alive(pid, ticks) and time.monotonic() < deadline:
                time.sleep(0.1)
            if process_alive(pid, ticks):
                leftovers.append(f"{record.name}/{what} (pid {pid})")
                os.kill(pid, signal.SIGKILL)
    if leftovers:
        pytest.fail(f"processes left running after the test: {', '.join(leftovers)}")


@pytest.fixture
def standin(monkeypatch, tmp_path) -> Path:
    """Replicas run the TensorFlow-free stand-in runner instead of the real one: in this process, and in
    the kernels the test starts (through a startup file of the test's own IPython profile)."""
    hooks = set_test_hooks(monkeypatch, runner=str(STANDIN_RUNNER))
    startup = tmp_path / "ipython-standin" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-tfk8s-standin.py").write_text(hooks_prelude(hooks))
    monkeypatch.setenv("IPYTHONDIR", str(startup.parents[1]))
    return STANDIN_RUNNER


def pytest_collection_modifyitems(items):
    """The whole-suite least-privilege check reads what the session's Kubernetes tests recorded: run it last."""
    last = [i for i in items if i.name == "test_the_whole_kubernetes_suite_uses_nothing_the_role_lacks"]
    items[:] = [i for i in items if i not in last] + last


@pytest.fixture(autouse=True)
def no_warm_pool(monkeypatch, tfk8s_home):
    """Local jobs start no warm pool and keep no replicas (``c.TFK8s.warm_pool = 0``, ``keep_warm = 0``)
    unless a test sets its own config; a pool or kept replicas a test started end with the test."""
    from tfk8s_jupyter import config
    from tfk8s_jupyter.backends import local_keep, local_pool

    monkeypatch.setattr(config, "_current", config.TFK8s(warm_pool=0, keep_warm=0))
    yield
    for pool in local_pool.owned_pools():
        pool.stop()
    local_pool._pools.clear()
    local_keep.stop_kept(tfk8s_home)
