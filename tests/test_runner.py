"""The runner: TF_CONFIG and environment (no TensorFlow), then real TensorFlow replicas launched by hand."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cells  # noqa: E402
from handlaunch import REPO, HandLaunch  # noqa: E402

from tfk8s_jupyter import protocol, runner  # noqa: E402
from tfk8s_jupyter.replica_output import LineTrackingStdout, Reporter  # noqa: E402

PS = "parameter_server"
MWMS = "multi_worker_mirrored"
JOB_TIMEOUT = 150


def test_protocol_line_is_whole_after_a_progress_bar(capsys):
    import io

    raw = io.StringIO()
    out = LineTrackingStdout(raw)
    reporter = Reporter(out, enabled=True)
    out.write("\r 3/20 [==>....] - loss: 0.5\x1b[K")
    reporter.emit("metric", epoch=0, step=3, values={"loss": 0.5})
    out.write("\b\b\b\r 4/20 [===>...]")
    reporter.emit("epoch", epoch=0, step=20, values={"loss": float("nan")})
    lines = raw.getvalue().split("\n")
    marked = [line for line in lines if protocol.MARKER in line]
    assert all(line.startswith(protocol.MARKER) for line in marked), marked
    events = [protocol.parse_line(line) for line in marked]
    assert [e["seq"] for e in events] == [1, 2] and events[1]["values"]["loss"] is None
    assert len({e["run"] for e in events}) == 1


def _listen() -> tuple[socket.socket, tuple[str, int]]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s, s.getsockname()


def test_watchdog_exits_zero_after_the_chief_is_gone():
    server, address = _listen()
    codes: list[int] = []
    t = threading.Thread(target=runner.watch_chief, args=(address, 30.0, codes.append, 0.1, 3), daemon=True)
    t.start()
    time.sleep(0.5)
    assert codes == [] and t.is_alive()
    server.close()
    t.join(timeout=5)
    assert codes == [0]


def test_watchdog_counts_a_peer_connected_to_its_server_as_the_chief_seen():
    """A short job's chief may start the cluster and end between two probes: a peer connected to this
    replica's own server says the chief was there, so the replica exits 0 instead of waiting out the setup
    timeout; with no peer it waits (the chief may not have come yet)."""
    own, own_address = _listen()
    gone, chief = _listen()
    gone.close()  # nobody listens at the chief's address
    codes: list[int] = []
    t = threading.Thread(
        target=runner.watch_chief,
        args=(chief, 30.0, codes.append, 0.1, 3),
        kwargs={"own_port": own_address[1]},
        daemon=True,
    )
    t.start()
    time.sleep(1.0)
    assert codes == [] and t.is_alive()  # no peer yet: the chief may still come
    peer = socket.create_connection(own_address)
    accepted, _ = own.accept()
    try:
        t.join(timeout=5)
        assert codes == [0]
    finally:
        peer.close()
        accepted.close()
        own.close()


def test_watchdog_gives_up_when_the_chief_never_comes():
    _, address = _listen()  # bound, then closed below: nobody listens there
    _.close()
    codes: list[int] = []
    started = time.monotonic()
    runner.watch_chief(address, 0.5, codes.append, 0.1, 3)
    assert codes == [runner.EXIT_SETUP_ERROR] and time.monotonic() - started < 5


def test_exception_summary_points_at_the_cell_line():
    source = "x = 1\ndef f():\n    raise KeyError('missing column')\nf()\n"
    runner._register_source(runner.CELL_FILENAME, source)
    try:
        exec(compile(source, runner.CELL_FILENAME, "exec"), {})
    except KeyError as exc:
        message, summary, line = runner.summarize_exception(exc)
    assert message.startswith("KeyError: 'missing column'") and "cell line 3" in message
    assert line == 3
    assert "cell line 4: f()" in summary and "cell line 3: raise KeyError('missing column')" in summary


def test_runner_import_does_not_import_tensorflow():
    modules = ", ".join(
        f"tfk8s_jupyter.{m}"
        for m in ("runner", "replica_runtime", "replica_callbacks", "replica_keras", "replica_artifacts")
    )
    code = f"import sys, {modules}; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_artifact_paths_stay_uris_and_folders_outside_are_kept_whole():
    from tfk8s_jupyter.replica_artifacts import backup_subdir, relative_to
    from tfk8s_jupyter.replica_env import read_env

    assert relative_to("gs://b/jobs/a", "gs://b/jobs/a/tensorboard/fit-0") == "tensorboard/fit-0"
    assert relative_to("gs://b/jobs/a", "gs://b/jobs/ab/x") == "gs://b/jobs/ab/x"
    assert relative_to("/data/a", "/data/a/checkpoints") == "checkpoints"
    assert relative_to("/data/a", "/elsewhere/logs") == "/elsewhere/logs"
    cluster = '{"worker": ["h:1", "h:2"]}'
    base = {"TFK8S_ROLE": "worker", "TFK8S_INDEX": "1", "TFK8S_CLUSTER": cluster}
    mwms = read_env({**base, "TFK8S_STRATEGY": MWMS})
    legacy = read_env({**base, "TFK8S_STRATEGY": MWMS, "TFK8S_KERAS": "legacy"})
    assert (backup_subdir(mwms), backup_subdir(legacy)) == ("worker-1", "shared")


KEPT_RUNS = """
import os, sys, types
from tfk8s_jupyter.payload import Payload
from tfk8s_jupyter.runner import prepare_workdir

for work in sys.argv[1:]:  # one process, one run after the other: a kept replica
    prepare_workdir(types.SimpleNamespace(workdir=work, job="j", name="w"), Payload(code=""))
    with open("notes.txt", "w") as f:  # a presented file
        f.write(work)
    os.makedirs(".cache/run", exist_ok=True)  # in a folder presented as one link
    os.rename("data.txt", "moved.txt")
"""


def test_a_kept_replicas_next_run_never_writes_the_notebooks_folder(tmp_path):
    notebook = tmp_path / "notebook"
    (notebook / ".cache").mkdir(parents=True)
    (notebook / "notes.txt").write_text("mine")
    (notebook / "data.txt").write_text("data")
    before = sorted(str(p.relative_to(notebook)) for p in notebook.rglob("*"))
    runs = [tmp_path / "run1", tmp_path / "run2"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFK8S_")}
    env["TFK8S_INPUT_DIR"] = str(notebook)
    out = subprocess.run(
        [sys.executable, "-c", KEPT_RUNS, *map(str, runs)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(str(p.relative_to(notebook)) for p in notebook.rglob("*")) == before
    assert (notebook / "notes.txt").read_text() == "mine"
    for run in runs:
        assert (run / "notes.txt").read_text() == str(run) and not (run / "notes.txt").is_symlink()
        assert (run / ".cache" / "run").is_dir() and not (run / ".cache").is_symlink()
        assert (run / "moved.txt").read_text() == "data" and not (run / "data.txt").exists()


# ------------------------------------------------------------------------------------------------
# Real TensorFlow replicas


def _run(tmp_path, code, strategy, workers, ps=0, **kw) -> HandLaunch:
    return HandLaunch(code, strategy, workers, tmp_path, ps=ps, **kw).start()


def _epoch_losses(events) -> list[float]:
    return [e["values"]["loss"] for e in events if e["type"] == "epoch"]


def _checksums(h: HandLaunch) -> dict[str, str]:
    found = {}
    for name in h.replicas:
        m = re.search(r"weights_sha256=([0-9a-f]+)", h.stderr(name))
        if m:
            found[name] = m.group(1)
    return found


def _wait_all(h: HandLaunch, timeout: float = JOB_TIMEOUT) -> dict[str, int]:
    return {name: h.wait(name, timeout) for name in h.replicas}


def _assert_trained(h: HandLaunch) -> list[dict]:
    events = h.events()
    types = [e["type"] for e in events]
    assert types[0] == "start" and types[-1] == "end", h.tail(h.reporting)
    assert events[-1]["status"] == "succeeded"
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [0, 1, 2]
    assert [e["step"] for e in events if e["type"] == "epoch"] == [20, 40, 60]
    losses = _epoch_losses(events)
    assert losses[0] > losses[1] > losses[2], losses
    metrics = [e for e in events if e["type"] == "metric"]
    assert metrics and all(0 < m["step"] <= 60 and "loss" in m["values"] for m in metrics)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    return events


@pytest.mark.tf
@pytest.mark.parametrize("cell", ["TF_KERAS", "KERAS"])
def test_parameter_servers_train_an_unchanged_cell(tmp_path, cell):
    h = _run(tmp_path, getattr(cells, cell), PS, workers=2, ps=1)
    try:
        assert h.wait("chief-0", JOB_TIMEOUT) == 0, h.tail("chief-0")
        chief_end = time.monotonic()
        events = _assert_trained(h)
        start, end = events[0], events[-1]
        assert start["keras"] == "tf_keras" and start["ps"] == 1 and start["workers"] == 2
        assert "/job:ps" in end["model"]["variable_device"]
        # the chief saves the first epoch, then at most every TFK8S_CHECKPOINT_INTERVAL (10 s) seconds
        saved = [e["epoch"] for e in events if e["type"] == "checkpoint" and e["action"] == "saved"]
        assert saved == [0]
        # ps and workers serve until the chief is gone, then their watchdog ends them
        for name in ("ps-0", "worker-0", "worker-1"):
            assert h.wait(name, 20) == 0, h.tail(name)
        assert time.monotonic() - chief_end < 10
        assert protocol.parse_lines(h.stdout("worker-0")) == []
    finally:
        h.teardown()


@pytest.mark.tf
@pytest.mark.parametrize("cell", ["TF_KERAS", "KERAS"])
def test_all_reduce_workers_train_an_unchanged_cell_to_identical_weights(tmp_path, cell):
    h = _run(tmp_path, getattr(cells, cell), MWMS, workers=2)
    try:
        assert _wait_all(h) == {"worker-0": 0, "worker-1": 0}, h.tail("worker-0") + h.tail("worker-1")
        events = _assert_trained(h)
        assert events[0]["keras"] == "keras3" and events[0]["replicas"] == 2
        # means, not sums over the two replicas: the values one replica reports for these batches
        assert _epoch_losses(events)[0] == pytest.approx(4.7601, rel=0.02)
        assert next(e for e in events if e["type"] == "metric")["values"]["loss"] == pytest.approx(
            6.212, rel=0.02
        )
        sums = _checksums(h)
        assert len(sums) == 2 and sums["worker-0"] == sums["worker-1"], sums
        assert events[-1]["model"]["weights_sha256"] == sums["worker-0"]
        # all-reduce workers save the first epoch, then at most every TFK8S_CHECKPOINT_INTERVAL (10 s), the
        # same epochs on every worker (tests/test_runner_backup.py: they resume together after a kill)
        saved = [e["epoch"] for e in events if e["type"] == "checkpoint" and e["action"] == "saved"]
        assert saved[:1] == [0] and saved == sorted(set(saved)), saved
        # the second worker trains but reports nothing, and shows no progress bar
        assert protocol.parse_lines(h.stdout("worker-1")) == []
        assert "\r" not in h.stdout("worker-1") and "20/20" in h.stdout("worker-1")
    finally:
        h.teardown()


@pytest.mark.tf
@pytest.mark.parametrize("strategy", [MWMS, PS])
def test_clear_session_at_the_top_still_trains_distributed(tmp_path, strategy):
    h = _run(
        tmp_path, cells.CLEAR_SESSION, strategy, workers=2 if strategy == MWMS else 1, ps=int(strategy == PS)
    )
    try:
        assert h.wait(h.reporting, JOB_TIMEOUT) == 0, h.tail(h.reporting)
        events = _assert_trained(h)
        if strategy == MWMS:
            assert h.wait("worker-1", 30) == 0
            sums = _checksums(h)
            assert sums["worker-0"] == sums["worker-1"], sums
        else:
            assert "/job:ps" in events[-1]["model"]["variable_device"]
    finally:
        h.teardown()


@pytest.mark.tf
def test_a_model_built_outside_the_strategy_is_refused(tmp_path):
    h = _run(tmp_path, cells.THREAD_MODEL, MWMS, workers=2)
    try:
        codes = _wait_all(h)
        assert codes == {"worker-0": 1, "worker-1": 1}
        error = h.events()[-1]
        assert error["type"] == "error" and error["message"].startswith("DistributionError")
        assert "MultiWorkerMirroredStrategy" in error["message"] and "one replica" in error["message"]
        assert not [e for e in h.events() if e["type"] in ("metric", "epoch")]
    finally:
        h.teardown()


@pytest.mark.tf
def test_keras3_only_api_in_parameter_servers_is_a_clear_error(tmp_path):
    h = _run(tmp_path, cells.KERAS3_ONLY, PS, workers=1, ps=1)
    try:
        assert h.wait("chief-0", JOB_TIMEOUT) == 1
        error = h.events()[-1]
        assert error["type"] == "error"
        assert (
            "keras.ops is a Keras 3 API" in error["message"] and "multi_worker_mirrored" in error["message"]
        )
        assert error["line"] == 7
    finally:
        h.teardown()


@pytest.mark.tf
def test_progress_bars_do_not_corrupt_the_protocol(tmp_path):
    h = _run(tmp_path, cells.VERBOSE1, MWMS, workers=2, metric_interval=0.0)
    try:
        assert _wait_all(h) == {"worker-0": 0, "worker-1": 0}
        out = h.stdout("worker-0")
        assert "\r" in out or "\x1b[" in out or "\b" in out, "the cell's progress bar should be there"
        marked = [line for line in out.split("\n") if protocol.MARKER in line]
        assert marked and all(protocol.parse_line(line) is not None for line in marked)
        assert all(line.startswith(protocol.MARKER) for line in marked)
        events = _assert_trained(h)
        assert len([e for e in events if e["type"] == "metric"]) >= 30  # interval 0: every step
    finally:
        h.teardown()


@pytest.mark.tf
def test_exception_in_the_cell_is_an_error_event_and_exit_1(tmp_path):
    h = _run(tmp_path, cells.RAISES, MWMS, workers=1)
    try:
        assert h.wait("worker-0", JOB_TIMEOUT) == 1
        events = h.events()
        assert [e["type"] for e in events] == ["start", "error"]
        error = events[-1]
        assert error["message"].startswith("ValueError: bad input shape 3")
        assert error["line"] == cells.RAISES_LINE
        assert "cell line 4: raise ValueError" in error["traceback"]
        assert 'File "<tfk8s-cell>", line 4' in h.stderr("worker-0")
    finally:
        h.teardown()


@pytest.mark.tf
def test_terminate_on_nan_works_with_parameter_servers(tmp_path):
    h = _run(tmp_path, cells.NAN_TERMINATES, PS, workers=1, ps=1)
    try:
        assert h.wait("chief-0", JOB_TIMEOUT) == 0, h.tail("chief-0")
        events = h.events()
        assert events[-1]["type"] == "end"
        assert len([e for e in events if e["type"] == "epoch"]) < 3  # stopped early
        assert "invalid loss, terminating training" in h.stderr("chief-0")
    finally:
        h.teardown()


@pytest.mark.tf
@pytest.mark.parametrize("strategy", [PS, MWMS])
def test_relaunched_job_resumes_from_the_checkpoint(tmp_path, strategy):
    workers, ps = (1, 1) if strategy == PS else (2, 0)
    first = _run(tmp_path, cells.CRASH_ONCE, strategy, workers=workers, ps=ps)
    try:
        assert first.wait(first.reporting, JOB_TIMEOUT) == 1
        assert "simulated crash after epoch 1" in first.events()[-1]["message"]
    finally:
        first.teardown()
    second = HandLaunch(cells.CRASH_ONCE, strategy, workers, tmp_path, ps=ps)
    for name in ("payload.json",):
        (tmp_path / name).unlink()
    for log in (tmp_path / "logs").iterdir():
        log.unlink()
    second.start()
    try:
        assert second.wait(second.reporting, JOB_TIMEOUT) == 0, second.tail(second.reporting)
        events = second.events()
        restored = [e for e in events if e["type"] == "checkpoint" and e["action"] == "restored"]
        assert restored and restored[0]["epoch"] >= 1
        epochs = [e["epoch"] for e in events if e["type"] == "epoch"]
        assert epochs and epochs[0] == restored[0]["epoch"] and epochs[-1] == 2
        assert events[-1]["type"] == "end"
    finally:
        second.teardown()


@pytest.mark.tf
def test_serving_replicas_stop_on_sigterm_and_give_up_on_a_chief_that_never_comes(tmp_path):
    h = HandLaunch("", PS, 1, tmp_path, ps=1, env={"TFK8S_SETUP_TIMEOUT": "6"}).prepare()
    h.start_replica("ps", 0)
    h.start_replica("worker", 0)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not all("serving on" in h.stderr(n) for n in ("ps-0", "worker-0")):
            time.sleep(0.1)
        assert "serving on" in h.stderr("ps-0"), h.tail("ps-0")
        started = time.monotonic()
        h.kill("ps-0", signal.SIGTERM)
        h.wait("ps-0", 10)
        assert time.monotonic() - started < 2
        assert h.wait("worker-0", 60) == runner.EXIT_SETUP_ERROR
        assert "did not come up within 6 s" in h.stderr("worker-0")
    finally:
        h.teardown()


def _shim(tmp_path, package: str, body: str) -> str:
    shim = tmp_path / "shim"
    (shim / package).mkdir(parents=True)
    (shim / package / "__init__.py").write_text(body)
    return str(shim) + os.pathsep + str(REPO)


@pytest.mark.tf
def test_an_image_without_working_tensorflow_fails_with_one_sentence(tmp_path):
    path = _shim(tmp_path, "tensorflow", "raise ImportError('libtensorflow_framework.so.2: cannot open')\n")
    h = HandLaunch(cells.TF_KERAS, "mirrored", 1, tmp_path / "job", env={"PYTHONPATH": path}).start()
    try:
        assert h.wait("worker-0", 60) == runner.EXIT_SETUP_ERROR
        (error,) = h.events()
        assert error["message"].startswith("TensorFlow is installed but does not import (ImportError")
        assert "reinstall tensorflow" in error["message"]
    finally:
        h.teardown()


@pytest.mark.tf
def test_parameter_servers_need_a_matching_tf_keras(tmp_path):
    path = _shim(tmp_path, "tf_keras", "__version__ = '2.15.0'\n")
    h = HandLaunch(cells.TF_KERAS, PS, 1, tmp_path / "job", ps=1, env={"PYTHONPATH": path}).prepare()
    h.start_replica("chief", 0)
    try:
        assert h.wait("chief-0", 90) == runner.EXIT_SETUP_ERROR
        (error,) = h.events()
        assert "tf_keras 2.15.0 with TensorFlow 2.21" in error["message"]
        assert "tf-keras==2.21.*" in error["message"]
    finally:
        h.teardown()


@pytest.mark.tf
def test_legacy_keras_all_reduce_reports_mean_losses(tmp_path):
    h = _run(tmp_path, cells.TF_KERAS, MWMS, workers=2, env={"TFK8S_KERAS": "legacy"})
    try:
        assert _wait_all(h) == {"worker-0": 0, "worker-1": 0}, h.tail("worker-0")
        events = _assert_trained(h)
        assert events[0]["keras"] == "tf_keras" and events[0]["replicas"] == 2
        # The same global batches as one replica: Keras 3 and parameter-server runs of this cell report
        # these losses; tf_keras's raw batch logs are twice as large (summed over the two replicas).
        assert _epoch_losses(events) == pytest.approx([4.7601, 1.0521, 0.1967], rel=0.02)
        first = next(e for e in events if e["type"] == "metric")
        assert first["step"] == 1 and first["values"]["loss"] == pytest.approx(6.212, rel=0.02)
        sums = _checksums(h)
        assert sums["worker-0"] == sums["worker-1"]
        assert (tmp_path / "checkpoints" / "fit-0" / "shared").is_dir()
    finally:
        h.teardown()


@pytest.mark.tf
def test_verbose_1_is_coerced_for_parameter_servers(tmp_path):
    # tf_keras refuses verbose=1 with ParameterServerStrategy; the runner turns it into per-epoch lines
    h = _run(tmp_path, cells.VERBOSE1, PS, workers=1, ps=1)
    try:
        assert h.wait("chief-0", JOB_TIMEOUT) == 0, h.tail("chief-0")
        _assert_trained(h)
        out = h.stdout("chief-0")
        assert "20/20 - " in out and "\r" not in out and "not allowed" not in h.stderr("chief-0")
    finally:
        h.teardown()


# A cell whose own functions need AutoGraph, as notebook cells often do: a tensor in a ``while`` and an ``if``
# of a ``tf.function``; with tf_keras (parameter servers) also a layer that branches on a tensor in ``call``,
# which tf_keras converts (Keras 3 builds layers symbolically without AutoGraph, in a notebook as here).
AUTOGRAPH_FUNCTION = """
import numpy as np
import tensorflow as tf

@tf.function
def collatz_steps(n):
    steps = tf.constant(0)
    while n != 1:
        if n % 2 == 0:
            n = n // 2
        else:
            n = 3 * n + 1
        steps += 1
    return steps

print("collatz(27) took", int(collatz_steps(tf.constant(27))), "steps", flush=True)
"""
AUTOGRAPH_LAYER = """
class ClipBig(tf.keras.layers.Layer):
    def call(self, x):
        if tf.reduce_max(tf.abs(x)) > 100.0:
            x = tf.clip_by_value(x, -100.0, 100.0)
        return x

model = tf.keras.Sequential([tf.keras.Input(shape=(4,)), ClipBig(), tf.keras.layers.Dense(1)])
model.compile(optimizer="sgd", loss="mse")
x = np.random.default_rng(0).normal(size=(256, 4)).astype("float32")
model.fit(x, x.sum(axis=1), epochs=1, steps_per_epoch=4, batch_size=32, verbose=2)
"""


@pytest.mark.tf
@pytest.mark.parametrize("strategy", [MWMS, PS])
def test_autograph_converts_the_cells_own_functions(tmp_path, strategy):
    ps = 1 if strategy == PS else 0
    cell = AUTOGRAPH_FUNCTION + (AUTOGRAPH_LAYER if strategy == PS else "")
    h = _run(tmp_path, cell, strategy, workers=1, ps=ps)
    try:
        assert h.wait(h.reporting, JOB_TIMEOUT) == 0, h.tail(h.reporting)
        out = h.stdout(h.reporting) + h.stderr(h.reporting)
        assert "collatz(27) took 111 steps" in out, h.tail(h.reporting)
        assert "AutoGraph could not transform" not in out, h.tail(h.reporting)
        assert h.events()[-1]["status"] == "succeeded"
    finally:
        h.teardown()
