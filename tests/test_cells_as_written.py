"""Cells as people write them (TensorFlow's distributed tutorials) train unchanged, on real TensorFlow.

A cell that builds its own strategy gets the job's; contradictions are refused in one sentence and leave
nothing running; ``fit`` on numpy arrays works with parameter servers; custom loops stream metric points
through ``tf.summary.scalar`` and ``report()``, and resume from their own CheckpointManager after a kill.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cells  # noqa: E402
from handlaunch import REPO, HandLaunch  # noqa: E402
from local_helpers import kill, wait_for  # noqa: E402

import tfk8s_jupyter as tk  # noqa: E402
from tfk8s_jupyter import protocol  # noqa: E402
from tfk8s_jupyter.backends.local import process_alive  # noqa: E402
from tfk8s_jupyter.replica_metrics import CellMetrics  # noqa: E402
from tfk8s_jupyter.replica_output import LineTrackingStdout, Reporter  # noqa: E402

PS = "parameter_server"
MWMS = "multi_worker_mirrored"
JOB_TIMEOUT = 150
SHAPES = {PS: {"workers": 2, "ps": 1}, MWMS: {"workers": 2, "ps": 0}}


def _run(tmp_path, code, strategy, **kw) -> HandLaunch:
    return HandLaunch(
        code, strategy, SHAPES[strategy]["workers"], tmp_path, ps=SHAPES[strategy]["ps"], **kw
    ).start()


def _wait_reporting_then_all(h: HandLaunch) -> int:
    code = h.wait(h.reporting, JOB_TIMEOUT)
    # A reporting replica that failed may have failed before serving ones ever saw it (they then wait out
    # the setup timeout): its own log is the diagnosis, not theirs.
    assert code == 0, h.tail(h.reporting)
    for name in h.replicas:  # the others end too: all-reduce workers by themselves, serving ones by watchdog
        try:
            h.wait(name, 30)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{h.tail(h.reporting)}") from None
    return code


def _checksums(h: HandLaunch) -> dict[str, str]:
    found = {}
    for name in h.replicas:
        m = re.search(r"weights_sha256=([0-9a-f]+)", h.stderr(name))
        if m:
            found[name] = m.group(1)
    return found


# ------------------------------------------------------------------------------------------------ no TF
def _metrics(interval: float, flush_delay: float = 0.5) -> tuple[CellMetrics, io.StringIO]:
    raw = io.StringIO()
    reporter = Reporter(LineTrackingStdout(raw), enabled=True)
    return CellMetrics(reporter, interval, flush_delay), raw


def test_cell_points_gather_a_step_and_are_throttled():
    metrics, raw = _metrics(interval=3600)
    metrics.add(1, {"loss": 1.0})
    metrics.add(1, {"accuracy": 0.5})  # the same step, another call: one point
    metrics.add(2, {"loss": 0.9})  # step 1 complete: printed (first point)
    metrics.add(3, {"loss": 0.8})  # step 2 complete: throttled away
    metrics.add(4, {"loss": 0.7})
    metrics.close()  # the cell's end: the last step is printed
    events = protocol.parse_lines(raw.getvalue())
    assert [(e["step"], e["values"]) for e in events] == [
        (1, {"loss": 1.0, "accuracy": 0.5}),
        (4, {"loss": 0.7}),
    ]
    assert [e["seq"] for e in events] == [1, 2] and len({e["run"] for e in events}) == 1
    assert all(e["type"] == "metric" and e["source"] == "cell" for e in events)


def test_a_slow_loops_last_step_is_flushed_by_the_timer():
    metrics, raw = _metrics(interval=0.05, flush_delay=0.05)
    metrics.start()
    try:
        metrics.add(None, {"loss": 2.0})  # no step: one more than the last
        metrics.add(None, {"accuracy": 0.1})  # a new series, the same step
        wait_for(lambda: protocol.parse_lines(raw.getvalue()), 5, "the timer's flush")
        metrics.add(None, {"loss": 1.0})
        wait_for(lambda: len(protocol.parse_lines(raw.getvalue())) == 2, 5, "the second flush")
    finally:
        metrics.close()
    events = protocol.parse_lines(raw.getvalue())
    assert [(e["step"], e["values"]) for e in events] == [
        (1, {"loss": 2.0, "accuracy": 0.1}),
        (2, {"loss": 1.0}),
    ]


def test_report_in_a_plain_python_is_harmless_and_refuses_non_numbers():
    code = (
        "import sys, numpy as np\n"
        "from tfk8s_jupyter import report\n"
        "print(report(step=np.int64(3), loss=np.float32(0.5), accuracy=1))\n"
        "try:\n"
        "    report(step=4, loss='low')\n"
        "except TypeError as exc:\n"
        "    print('refused:', exc)\n"
        "print('tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "{'loss': 0.5, 'accuracy': 1.0}"
    assert lines[1].startswith("refused: report(loss=...) got str 'low', not a number;")
    assert "report(step=i, loss=float(value))" in lines[1]
    assert lines[2] == "False" and protocol.MARKER not in out.stdout


# ------------------------------------------------------------------------------------------------ real TF
@pytest.mark.tf
@pytest.mark.parametrize("strategy", [PS, MWMS])
def test_fit_on_numpy_arrays_with_validation_split_and_no_steps(tmp_path, strategy):
    h = _run(tmp_path, cells.NUMPY_FIT, strategy)
    try:
        assert _wait_reporting_then_all(h) == 0, h.tail(h.reporting)
        events = h.events()
        epochs = [e for e in events if e["type"] == "epoch"]
        # 2048 samples, 25 % for validation: 1536 / 64 = 24 steps an epoch, the data once per epoch
        assert [e["step"] for e in epochs] == [24, 48, 72]
        losses = [e["values"]["loss"] for e in epochs]
        assert losses[0] > losses[1] > losses[2]
        assert all("val_loss" in e["values"] for e in epochs)
        out = h.stdout(h.reporting)
        assert "predict: (5, 1)" in out and "evaluate: " in out
        if strategy == PS:
            assert "/job:ps" in events[-1]["model"]["variable_device"]
    finally:
        h.teardown()


@pytest.mark.tf
@pytest.mark.parametrize(
    ("cell", "strategy", "expect"),
    [
        ("OWN_MWMS", MWMS, "implementation: RING"),
        ("OWN_PS", PS, "sharded: ShardedVariable 2"),
        ("OWN_PS_NO_RESOLVER", PS, "sharded: "),
    ],
)
def test_a_cell_that_builds_its_own_strategy_trains_on_the_jobs(tmp_path, cell, strategy, expect):
    h = _run(tmp_path, getattr(cells, cell), strategy)
    try:
        assert _wait_reporting_then_all(h) == 0, h.tail(h.reporting)
        events = h.events()
        losses = [e["values"]["loss"] for e in events if e["type"] == "epoch"]
        assert len(losses) == 3 and losses[0] > losses[2]
        out = h.stdout(h.reporting)
        assert expect in out, out[-2000:]
        if cell == "OWN_PS_NO_RESOLVER":
            assert "ShardedVariable" not in out  # no partitioner asked: none used
        if strategy == PS:
            assert "/job:ps" in events[-1]["model"]["variable_device"]
        else:
            assert "workers: 2 replicas: 2" in out
            sums = _checksums(h)
            assert len(sums) == 2 and len(set(sums.values())) == 1, sums
    finally:
        h.teardown()


@pytest.mark.tf
def test_a_parameter_server_custom_loop_streams_summary_and_report_points(tmp_path):
    h = _run(tmp_path, cells.PS_LOOP, PS, metric_interval=0.0)
    try:
        assert _wait_reporting_then_all(h) == 0, h.tail(h.reporting)
        points = [e for e in h.events() if e["type"] == "metric"]
        assert [p["step"] for p in points] == [20, 40, 60]
        assert all(set(p["values"]) == {"loss", "last_batch_loss"} for p in points), points
        losses = [p["values"]["loss"] for p in points]
        assert losses[0] > losses[-1]
        out = h.stdout(h.reporting)
        assert "summary files: True variables on: /job:ps" in out
    finally:
        h.teardown()


@pytest.mark.tf
def test_an_all_reduce_custom_loop_streams_report_points(tmp_path):
    code = cells.MWMS_LOOP.format(ckpt=str(tmp_path / "ckpt"), sleep=0)
    h = _run(tmp_path, code, MWMS, metric_interval=0.0)
    try:
        assert _wait_reporting_then_all(h) == 0, h.tail(h.reporting)
        assert {n: r.proc.returncode for n, r in h.replicas.items()} == {"worker-0": 0, "worker-1": 0}
        points = [e for e in h.events() if e["type"] == "metric"]
        assert [p["step"] for p in points] == list(range(1, 61))
        assert points[0]["values"]["loss"] > points[-1]["values"]["loss"]
        assert "replicas: 2" in h.stdout("worker-0")
        assert protocol.parse_lines(h.stdout("worker-1")) == []  # only the reporting replica reports
        assert (tmp_path / "ckpt" / "checkpoint").exists()
    finally:
        h.teardown()


REFUSALS = [
    (
        MWMS,
        "import tensorflow as tf\nstrategy = tf.distribute.experimental.ParameterServerStrategy(\n"
        "    tf.distribute.cluster_resolver.TFConfigClusterResolver())\n",
        2,
        [
            "asks for ParameterServerStrategy",
            "an all-reduce job (2 workers",
            "--strategy parameter_server --ps 1",
        ],
    ),
    (
        PS,
        "import tensorflow as tf\nstrategy = tf.distribute.MultiWorkerMirroredStrategy()\n",
        2,
        [
            "asks for MultiWorkerMirroredStrategy",
            "a parameter-server job (1 ps",
            "--strategy multi_worker_mirrored",
        ],
    ),
    (
        MWMS,
        "import tensorflow as tf\nx = 1\nstrategy = tf.distribute.MirroredStrategy()\n",
        3,
        ["asks for MirroredStrategy", "an all-reduce job", "--strategy mirrored --ps 0 --workers 1"],
    ),
    (
        PS,
        "import tensorflow as tf\nstrategy = tf.distribute.OneDeviceStrategy('/cpu:0')\n",
        2,
        ["asks for OneDeviceStrategy", "a parameter-server job", "--strategy mirrored --ps 0 --workers 1"],
    ),
    (
        MWMS,
        "import tensorflow as tf\ntf.distribute.experimental_set_strategy(None)\n",
        2,
        ["asks for the default strategy", "an all-reduce job", "--strategy mirrored"],
    ),
    (
        MWMS,
        "import tensorflow as tf\n"
        "resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(\n"
        "    tf.train.ClusterSpec({'worker': ['10.0.0.1:2222', '10.0.0.2:2222']}), task_type='worker', task_id=0)\n"
        "strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)\n",
        4,
        ["cluster resolver describes cluster {'worker': ['10.0.0.1:2222'", "TFConfigClusterResolver()"],
    ),
    (
        PS,
        "import tensorflow as tf\n"
        "P = tf.distribute.experimental.partitioners\n"
        "resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()\n"
        "a = tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=P.FixedShardsPartitioner(2))\n"
        "b = tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=P.FixedShardsPartitioner(3))\n",
        5,
        ["second ParameterServerStrategy with a different variable_partitioner", "build the strategy once"],
    ),
]


@pytest.mark.tf
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("strategy", "code", "line", "expect"), REFUSALS, ids=[f"r{i}" for i in range(len(REFUSALS))]
)
def test_a_contradicting_strategy_is_refused_at_its_line_and_nothing_keeps_running(
    strategy, code, line, expect
):
    job = tk.submit(code, **SHAPES[strategy], name="refused", setup_timeout=180)
    assert job.wait(timeout=240) == "failed", job.status.message
    error = next(e for e in job.events() if e["type"] == "error")
    assert error["message"].startswith("StrategyMismatch: ") and error["line"] == line, error
    for text in expect:
        assert text in error["message"], error["message"]
    sentence = error["message"].removeprefix("StrategyMismatch: ").split(" (cell line")[0]
    assert sentence.count(". ") == 0 and sentence.endswith("."), sentence  # one sentence
    status = job.status
    assert all(r.restarts == 0 for r in status.replicas), status.replicas  # the cell raised: no retry
    assert not [e for e in job.events() if e["type"] in ("metric", "epoch")]
    wait_for(
        lambda: not any(process_alive(r.pid) for r in job.status.replicas if r.pid), 30, "every replica gone"
    )


@pytest.mark.tf
@pytest.mark.timeout(900)
@pytest.mark.parametrize("where", ["a directory the cell names", "the tutorial's multiprocessing temp dir"])
def test_a_killed_all_reduce_worker_mid_loop_resumes_from_the_cells_checkpoint(tmp_path, where):
    if where == "a directory the cell names":
        code = cells.MWMS_LOOP.format(ckpt=str(tmp_path / "ckpt"), sleep=0.15)
    else:
        code = cells.MWMS_LOOP_TUTORIAL_DIR.format(sleep=0.15)
    job = tk.submit(code, workers=2, name="ctl-kill", metric_interval=0.2, setup_timeout=180)
    # a point past the first epoch: its checkpoint is saved
    wait_for(lambda: any(p["step"] > 25 for p in job.metrics()), 240, "a point in the second epoch", poll=0.2)
    kill(job.status.replica("worker-1").pid)
    assert job.wait(timeout=300) == "succeeded", job.status.message
    assert job.status.replica("worker-1").restarts >= 1
    logs = job.logs("worker-0")
    restored = [int(n) for n in re.findall(r"restored epoch (\d+)", logs)]
    assert restored and restored[-1] >= 1, logs[-3000:]
    steps = [p["step"] for p in job.metrics()]
    assert max(steps) == 60


@pytest.mark.tf
@pytest.mark.timeout(900)
def test_a_relative_checkpoint_dir_that_splits_the_workers_after_a_restart_fails_in_one_sentence():
    # the tutorial's loop with CKPT_DIR = "./ckpt": each worker's own work dir, so after the restart only
    # worker-0 finds the chief's checkpoint, and TensorFlow says only "Collective instance N expected ..."
    code = cells.MWMS_LOOP.format(ckpt="./ckpt", sleep=0.15)
    job = tk.submit(code, workers=2, name="ctl-relative", metric_interval=0.2, setup_timeout=180)
    wait_for(lambda: any(p["step"] > 25 for p in job.metrics()), 240, "a point in the second epoch", poll=0.2)
    kill(job.status.replica("worker-1").pid)
    assert job.wait(timeout=300) == "failed", job.status.message
    message = job.status.message
    assert "the all-reduce workers ran different collective operations" in message, message
    assert "relative checkpoint path is each worker's own work dir" in message, message
    assert "os.path.join(os.environ['TFK8S_CHECKPOINT_DIR'], 'ckpt')" in message, message
    assert "Collective instance" not in message and "grpc" not in message, message
    wait_for(
        lambda: not any(process_alive(r.pid) for r in job.status.replicas if r.pid), 30, "every replica gone"
    )


@pytest.mark.tf
@pytest.mark.timeout(900)
def test_a_killed_parameter_server_worker_does_not_stop_a_coordinator_loop():
    job = tk.submit(
        cells.PS_LOOP_LONG, ps=1, workers=2, name="coord-kill", metric_interval=0.0, setup_timeout=180
    )
    wait_for(lambda: any(p["step"] >= 40 for p in job.metrics()), 240, "the second epoch's point", poll=0.2)
    chief_pid = job.status.replica("chief-0").pid
    kill(job.status.replica("worker-0").pid)
    assert job.wait(timeout=300) == "succeeded", job.status.message
    status = job.status
    assert status.replica("chief-0").restarts == 0 and status.replica("chief-0").pid == chief_pid
    assert status.replica("worker-0").restarts == 1
    steps = [p["step"] for p in job.metrics() if p["kind"] == "step"]
    assert steps == list(range(20, 241, 20))  # one chief run: every epoch's point, none twice


def test_with_no_interval_every_step_is_a_point_with_all_its_series():
    metrics, raw = _metrics(interval=0)
    for step in (1, 2, 3):
        metrics.add(step, {"loss": 1.0 / step})
        metrics.add(step, {"accuracy": 0.1 * step})
    metrics.close()
    events = protocol.parse_lines(raw.getvalue())
    assert [e["step"] for e in events] == [1, 2, 3]
    assert all(set(e["values"]) == {"loss", "accuracy"} for e in events)


@pytest.mark.tf
def test_parameter_server_fit_arguments_cover_the_data_once_an_epoch():
    import numpy as np
    import tensorflow as tf

    from tfk8s_jupyter.replica_inputs import InputSizeUnknown, adapt_evaluate_arguments, adapt_fit_arguments

    x = np.arange(100, dtype="float32").reshape(100, 1)
    labels = (np.arange(100) % 2).astype("int64")
    args = {
        "x": x,
        "y": labels,
        "batch_size": 8,
        "class_weight": {0: 1.0, 1: 3.0},
        "validation_data": (x[:20], labels[:20]),
    }
    adapt_fit_arguments(tf, args)
    assert args["steps_per_epoch"] == 13 and args["validation_steps"] == 3  # ceil(100/8), ceil(20/8)
    assert "y" not in args and "class_weight" not in args and "batch_size" not in args
    xb, yb, wb = next(iter(args["x"]))
    assert xb.shape == (8, 1) and set(np.unique(wb.numpy())) <= {1.0, 3.0}
    assert all(
        w == (3.0 if int(v) % 2 else 1.0) for v, w in zip(xb.numpy().ravel(), wb.numpy(), strict=True)
    )  # weight of its class

    args = {"x": x, "y": labels, "validation_split": 0.2, "shuffle": False}
    adapt_fit_arguments(tf, args)
    assert args["steps_per_epoch"] == 3 and args["validation_steps"] == 1  # 80 / 32, 20 / 32
    first_val = next(iter(args["validation_data"]))
    assert float(first_val[0][0, 0]) == 80.0  # the last fraction, as Keras takes it

    finite = tf.data.Dataset.from_tensor_slices((x, labels)).batch(10)
    args = {"x": finite, "validation_data": finite.take(4)}
    adapt_fit_arguments(tf, args)
    assert args["steps_per_epoch"] == 10 and args["validation_steps"] == 4
    assert int(args["x"].cardinality()) == int(tf.data.INFINITE_CARDINALITY)  # repeated for the workers

    with pytest.raises(InputSizeUnknown) as exc:
        adapt_fit_arguments(tf, {"x": finite.repeat()})
    assert str(exc.value).startswith("fit() got a tf.data dataset infinite without steps_per_epoch")
    assert "pass steps_per_epoch" in str(exc.value)
    with pytest.raises(InputSizeUnknown, match="of unknown size"):
        adapt_fit_arguments(tf, {"x": finite.filter(lambda a, b: True)})

    args = {"x": x, "y": labels, "batch_size": 25}
    adapt_evaluate_arguments(tf, args)
    assert args["steps"] == 4


@pytest.mark.tf
@pytest.mark.timeout(900)
def test_a_killed_ps_restarts_the_coordinator_loop_from_the_cells_checkpoint(tmp_path):
    code = cells.PS_LOOP_CKPT.replace("CKPT_DIR_HERE", str(tmp_path / "ckpt"))
    job = tk.submit(code, ps=1, workers=1, name="coord-ps-kill", metric_interval=0.0, setup_timeout=180)
    wait_for(lambda: any(p["step"] >= 60 for p in job.metrics()), 240, "the third epoch's point", poll=0.2)
    kill(job.status.replica("ps-0").pid)
    assert job.wait(timeout=300) == "succeeded", job.status.message
    assert job.status.replica("chief-0").restarts >= 1
    restored = [int(n) for n in re.findall(r"restored epoch (\d+)", job.logs("chief-0"))]
    assert restored and restored[-1] >= 1, job.logs("chief-0")[-3000:]
    assert max(p["step"] for p in job.metrics()) == 240


@pytest.mark.tf
def test_report_works_in_an_image_without_the_package(tmp_path):
    from test_runner_files import NOT_IMPORTABLE, image_job, write_runner_files

    from tfk8s_jupyter.payload import Payload
    from tfk8s_jupyter.spec import make_spec

    cell = (
        "import tensorflow as tf\n"
        "from tfk8s_jupyter import report\n"
        "for step in range(1, 4):\n"
        "    report(step=step, loss=tf.constant(1.0 / step))\n"
    )
    image = write_runner_files(tmp_path / "image")
    job = tmp_path / "job"
    job.mkdir()
    (job / "payload.json").write_text(Payload(code=cell).to_json())
    spec = make_spec(cell, workers=1, strategy="mirrored", name="report-image", metric_interval=0.0)
    command, env = image_job(spec, job)
    probe = subprocess.run(
        [*command, "-c", NOT_IMPORTABLE], cwd=image, env=env, capture_output=True, text=True
    )
    assert probe.returncode == 0, probe.stderr
    proc = subprocess.run(
        [*command, "runner.py"], cwd=image, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    points = [e for e in protocol.parse_lines(proc.stdout) if e["type"] == "metric"]
    assert [(p["step"], p["values"]["loss"]) for p in points] == [
        (1, 1.0),
        (2, 0.5),
        (3, pytest.approx(1 / 3)),
    ]


SUMMARY_ON_EVERY_WORKER = """\
import os
import tensorflow as tf

strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    w = tf.Variable(3.0)
writer = tf.summary.create_file_writer(os.path.join({logs!r}, "worker-%d" % strategy.cluster_resolver.task_id))
with writer.as_default():
    for step in range(1, 6):
        loss = strategy.reduce("MEAN", strategy.run(lambda: w * w), axis=None)
        tf.summary.scalar("loss", loss, step=step)
        w.assign_sub(0.5)
writer.flush()
"""


@pytest.mark.tf
def test_summary_scalars_are_written_on_every_worker_and_streamed_from_one(tmp_path):
    h = _run(tmp_path, SUMMARY_ON_EVERY_WORKER.format(logs=str(tmp_path / "logs")), MWMS, metric_interval=0.0)
    try:
        assert _wait_reporting_then_all(h) == 0, h.tail(h.reporting)
        assert h.wait("worker-1", 30) == 0, h.tail("worker-1")
        for name in ("worker-0", "worker-1"):  # the cell's own summary files, without the tensorboard package
            assert any((tmp_path / "logs" / name).glob("events.out.tfevents.*")), name
        points = [e for e in h.events() if e["type"] == "metric"]
        assert [(p["step"], p["values"]["loss"]) for p in points] == [
            (1, 9.0),
            (2, 6.25),
            (3, 4.0),
            (4, 2.25),
            (5, 1.0),
        ]
        assert protocol.parse_lines(h.stdout("worker-1")) == []
    finally:
        h.teardown()


@pytest.mark.tf
def test_the_parameter_server_tutorials_fit_section_trains_with_its_callbacks(tmp_path):
    work = tmp_path / "my_working_dir"
    h = _run(tmp_path, cells.PS_TUTORIAL_FIT.replace("WORKING_DIR_HERE", str(work)), PS)
    try:
        assert _wait_reporting_then_all(h) == 0, h.tail(h.reporting)
        events = h.events()
        assert [e["step"] for e in events if e["type"] == "epoch"] == [20, 40, 60, 80, 100]
        assert "tensorboard files: True" in h.stdout(h.reporting)  # the TensorBoard callback wrote its logs
        assert (work / "ckpt").is_dir() and (work / "backup").is_dir()  # ModelCheckpoint, BackupAndRestore
        assert "variable_partitioner" in h.stderr(h.reporting)
    finally:
        h.teardown()


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_the_all_reduce_tutorials_shared_backup_dir_resumes_after_a_crash(tmp_path):
    backup = tmp_path / "backup"
    code = cells.MWMS_TUTORIAL_BACKUP.replace("BACKUP_DIR_HERE", str(backup))
    first = _run(tmp_path, code, MWMS)
    try:
        assert first.wait("worker-0", JOB_TIMEOUT) == 1
        assert "simulated crash after epoch 1" in first.events()[-1]["message"], first.tail("worker-0")
        first.wait("worker-1", 30)
    finally:
        first.teardown()
    assert sorted(p.name for p in backup.iterdir()) == ["worker-0", "worker-1"]  # one dir each: no lock clash
    (tmp_path / "payload.json").unlink()
    for log in (tmp_path / "logs").iterdir():
        log.unlink()
    second = _run(tmp_path, code, MWMS)
    try:
        assert _wait_reporting_then_all(second) == 0, second.tail("worker-0")
        events = second.events()
        restored = [e["epoch"] for e in events if e["type"] == "checkpoint" and e["action"] == "restored"]
        assert restored == [2]
        assert [e["epoch"] for e in events if e["type"] == "epoch"] == [2]
        sums = _checksums(second)
        assert len(sums) == 2 and len(set(sums.values())) == 1, sums
    finally:
        second.teardown()


def _summary_values(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars in the event files under ``folder`` (read with TensorFlow's own record reader)."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    found: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                number = tf.make_ndarray(value.tensor) if value.HasField("tensor") else value.simple_value
                found.setdefault(value.tag, []).append((event.step, float(number)))
    return found


@pytest.mark.tf
def test_summaries_written_inside_an_all_reduce_step_function_stream_points(tmp_path):
    code = cells.MWMS_GRAPH_SUMMARY.format(ckpt=str(tmp_path / "ckpt"), sleep=0)
    h = _run(tmp_path, code, MWMS, metric_interval=0.0)
    try:
        assert _wait_reporting_then_all(h) == 0, h.tail(h.reporting)
        points = [e for e in h.events() if e["type"] == "metric"]
        assert [p["step"] for p in points] == list(range(1, 61)), points[:3]
        assert all(set(p["values"]) == {"loss", "replica_loss"} for p in points), points[:3]
        assert points[0]["values"]["loss"] > points[-1]["values"]["loss"]
        assert protocol.parse_lines(h.stdout("worker-1")) == []  # only the reporting replica reports
        # the cell's own summary files hold the same values (worker-1's in its temp folder)
        work = tmp_path / "work" / "worker-0"
        written = _summary_values(work / "logs")
        assert [s for s, _ in written["loss"]] == list(range(1, 61))
        assert [round(v, 5) for _, v in written["loss"]] == [round(p["values"]["loss"], 5) for p in points]
        assert _summary_values(tmp_path / "work" / "worker-1" / "workertemp_1" / "logs")["loss"]
    finally:
        h.teardown()


@pytest.mark.tf
def test_summaries_written_by_a_coordinator_function_stream_points(tmp_path):
    h = _run(tmp_path, cells.PS_GRAPH_SUMMARY, PS, metric_interval=0.0)
    try:
        assert _wait_reporting_then_all(h) == 0, h.tail(h.reporting)
        points = [e for e in h.events() if e["type"] == "metric"]
        assert [p["step"] for p in points] == [20, 40, 60], points
        assert all(set(p["values"]) == {"loss", "weight_norm"} for p in points), points
        assert points[0]["values"]["loss"] > points[-1]["values"]["loss"]
        assert "summary files: True variables on: /job:ps" in h.stdout(h.reporting)
        written = _summary_values(tmp_path / "work" / h.reporting / "logs")
        assert [s for s, _ in written["weight_norm"]] == [20, 40, 60]
    finally:
        h.teardown()
