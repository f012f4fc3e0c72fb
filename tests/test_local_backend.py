"""The local backend: pure helpers, the supervisor's lifecycle (with a TF-free stand-in runner, fast), and
real TensorFlow end to end (PS and all-reduce, ``tf.keras`` and ``import keras``)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from local_helpers import epoch_events, keras_cell, tf_keras_cell, wait_for

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends.base import JobConflict, JobNotFound, TFK8sError
from tfk8s_jupyter.backends.local import (
    LocalBackend,
    allocate_ports,
    cluster_of,
    detect_gpus,
    gpu_slices,
    live_processes,
    process_alive,
    process_env,
)
from tfk8s_jupyter.payload import Payload
from tfk8s_jupyter.records import JobRecord
from tfk8s_jupyter.spec import SpecError, make_spec


# --------------------------------------------------------------------------- pure helpers
def test_gpu_slices_give_each_chief_and_worker_its_own_gpus_and_ps_none():
    spec = make_spec("print(1)", ps=1, workers=2, gpus=2)
    slices = gpu_slices(spec, ["0", "1", "2", "3", "4", "5"])
    assert slices == {"ps-0": "", "chief-0": "0,1", "worker-0": "2,3", "worker-1": "4,5"}


def test_gpu_slices_without_gpus_hide_every_gpu():
    spec = make_spec("print(1)", workers=2)
    assert gpu_slices(spec, ["0", "1"]) == {"worker-0": "", "worker-1": ""}


def test_too_many_gpus_says_how_many_the_machine_has():
    spec = make_spec("print(1)", workers=2, gpus=2)
    with pytest.raises(SpecError) as e:
        gpu_slices(spec, ["0", "1", "2"])
    assert "asks for 4 GPU(s)" in str(e.value) and "this machine has 3" in str(e.value)
    with pytest.raises(SpecError, match="this machine has none"):
        gpu_slices(spec, [])


def test_submit_with_more_gpus_than_the_machine_starts_nothing(tfk8s_home, monkeypatch):
    monkeypatch.setattr("tfk8s_jupyter.backends.local.detect_gpus", lambda: ["0"])
    with pytest.raises(SpecError, match="this machine has 1"):
        tk.submit("print(1)", workers=2, gpus=1, name="gpu-job")
    assert not any(tfk8s_home.iterdir())


def test_allocate_ports_are_distinct_and_free():
    ports = allocate_ports(8)
    assert len(set(ports)) == 8
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_replica_env_follows_the_runner_contract(tmp_path):
    spec = make_spec("print(1)", ps=1, workers=2, env={"MY_FLAG": "on"}, metric_interval=0.5)
    cluster = cluster_of(spec, [1001, 1002, 1003, 1004])
    base = {
        "PATH": "/bin",
        "TF_CONFIG": "{}",
        "TFK8S_ROLE": "ps",
        "no_proxy": "corp.example",
        "http_proxy": "x",
    }
    env = process_env(
        spec,
        "worker-1",
        cluster,
        payload_path=tmp_path / "payload.json",
        checkpoint=tmp_path / "ckpt",
        workdir=tmp_path / "work",
        cuda_visible_devices="",
        base=base,
    )
    assert env["TFK8S_ROLE"] == "worker" and env["TFK8S_INDEX"] == "1"
    assert json.loads(env["TFK8S_CLUSTER"]) == {
        "ps": ["127.0.0.1:1001"],
        "chief": ["127.0.0.1:1002"],
        "worker": ["127.0.0.1:1003", "127.0.0.1:1004"],
    }
    assert env["TFK8S_STRATEGY"] == "parameter_server"
    assert env["TFK8S_PAYLOAD"] == str(tmp_path / "payload.json")
    assert env["TFK8S_METRIC_INTERVAL"] == "0.5"
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert "TF_CONFIG" not in env  # the submitter's own TF_CONFIG must never reach a replica
    assert {"localhost", "127.0.0.1", "corp.example"} <= set(env["no_proxy"].split(","))
    assert env["NO_PROXY"] == env["no_proxy"]
    assert env["MY_FLAG"] == "on" and env["PATH"] == "/bin"


# --------------------------------------------------------------------------- lifecycle (stand-in runner)
def test_ps_job_succeeds_and_the_rest_is_stopped(standin, tfk8s_home):
    started = time.monotonic()
    job = tk.submit("EPOCHS = 3\nSTEPS = 10", ps=1, workers=2, name="ps-ok")
    assert time.monotonic() - started < 2.0, "submit must return at once"
    assert job.wait(timeout=60) == "succeeded"
    status = job.status
    assert [r.name for r in status.replicas] == ["ps-0", "chief-0", "worker-0", "worker-1"]
    assert status.replica("chief-0").exit_code == 0
    for name in ("ps-0", "worker-0", "worker-1"):
        r = status.replica(name)
        assert r.state == "succeeded" and r.exit_code in (0, -15), r
        assert not process_alive(r.pid)
    epochs = epoch_events(job.events())
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    record = JobRecord("ps-ok", tfk8s_home)
    for f in (
        "spec.json",
        "payload.json",
        "status.json",
        "events.jsonl",
        "logs/chief-0.log",
        "logs/ps-0.log",
    ):
        assert (record.dir / f).exists(), f
    assert "listening" in job.logs("ps-0")


def test_all_reduce_job_succeeds_with_every_worker_exiting_by_itself(standin):
    job = tk.submit("EPOCHS = 2\nSTEPS = 5", workers=3, name="mw-ok")
    assert job.wait(timeout=60) == "succeeded"
    states = {r.name: (r.state, r.exit_code) for r in job.status.replicas}
    assert states["worker-0"] == ("succeeded", 0)
    assert all(state == "succeeded" for state, _ in states.values()), states


def test_a_name_that_exists_is_a_conflict(standin):
    job = tk.submit("EPOCHS = 1\nSTEPS = 2", workers=1, name="twice")
    with pytest.raises(JobConflict, match="a job named 'twice' exists already"):
        tk.submit("EPOCHS = 1\nSTEPS = 2", workers=1, name="twice")
    assert job.wait(timeout=60) == "succeeded"


def test_unknown_job_and_unknown_replica_are_clear_errors(standin):
    backend = LocalBackend()
    with pytest.raises(JobNotFound, match="no local job named 'nope'"):
        backend.get("nope")
    job = tk.submit("EPOCHS = 1\nSTEPS = 2", workers=1, name="one")
    job.wait(timeout=60)
    with pytest.raises(TFK8sError, match="has no replica 'worker-7'"):
        job.logs("worker-7")


def test_watch_delivers_metrics_while_the_job_runs(standin):
    job = tk.submit("EPOCHS = 3\nSTEPS = 20\nSTEP_SECONDS = 0.1", ps=1, workers=1, name="watched")
    seen = []  # (phase at delivery, number of metric events)
    statuses = []

    def on_events(events):
        last = statuses[-1].phase if statuses else "pending"
        seen.append((last, sum(e["type"] == "metric" for e in events)))

    job.backend.watch(job.name, statuses.append, on_events, threading.Event())
    assert statuses[-1].phase == "succeeded"
    while_running = [n for phase, n in seen if phase == "running" and n]
    assert len(while_running) >= 3, seen  # points came in several batches during training
    assert sum(n for _, n in seen) == sum(e["type"] == "metric" for e in job.events())


def test_delete_removes_the_record_and_every_process(standin, tfk8s_home):
    job = tk.submit("EPOCHS = 50\nSTEPS = 20", workers=2, name="doomed")
    wait_for(lambda: job.metrics(), 60, "the first metric point")
    record = JobRecord("doomed", tfk8s_home)
    pids = [r.pid for r in job.status.replicas]
    job.delete()
    assert not record.dir.exists()
    assert not any(process_alive(p) for p in pids)
    assert tk.list_jobs() == []


# --------------------------------------------------------------------------- real TensorFlow
def _train_and_check(job, timeout=240):
    """Follow a job: metric points must arrive while it runs, and it must succeed with a falling loss."""
    points_while_running = wait_for(
        lambda: (lambda st, m: len(m) if (m and not st.done) else 0)(job.status, job.metrics()),
        timeout,
        "a metric point while the job runs",
        poll=0.2,
    )
    assert points_while_running >= 1
    # Every replica shows as running while training goes on (their TF servers listen on their ports).
    wait_for(
        lambda: (lambda st: st.done or all(r.state == "running" for r in st.replicas))(job.status),
        30,
        "every replica to show as running",
    )
    assert job.wait(timeout=timeout) == "succeeded", job.status.message
    epochs = epoch_events(job.events())
    losses = [e["values"]["loss"] for e in epochs]
    assert len(losses) >= 3 and losses[-1] < losses[0], losses
    return losses


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_parameter_server_job_trains_end_to_end():
    job = tk.submit(
        tf_keras_cell(epochs=4, steps=40, step_sleep=0.05),
        ps=1,
        workers=2,
        name="tf-ps",
        metric_interval=0.2,
        setup_timeout=180,
    )
    _train_and_check(job)
    status = job.status
    assert status.replica("chief-0").exit_code == 0
    assert {r.name for r in status.replicas} == {"ps-0", "chief-0", "worker-0", "worker-1"}
    start = next(e for e in job.events() if e["type"] == "start")
    assert start["strategy"] == "parameter_server"
    assert "variable_device=/job:ps" in job.logs("chief-0")
    assert not any(process_alive(r.pid) for r in status.replicas)
    wait_for(lambda: not live_processes(JobRecord("tf-ps")), 10, "the supervisor to exit")


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_all_reduce_job_with_import_keras_trains_end_to_end():
    job = tk.submit(
        keras_cell(epochs=4, steps=60), workers=2, name="tf-mw", metric_interval=0.2, setup_timeout=180
    )
    _train_and_check(job)
    start = next(e for e in job.events() if e["type"] == "start")
    assert start["strategy"] == "multi_worker_mirrored" and start["keras"] == "keras3"
    assert {r.exit_code for r in job.status.replicas} == {0}


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_parameter_server_job_with_import_keras_trains_end_to_end():
    job = tk.submit(keras_cell(epochs=3, steps=60), ps=1, workers=1, name="tf-ps-k", setup_timeout=180)
    _train_and_check(job)


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_all_reduce_job_with_tf_keras_trains_end_to_end():
    job = tk.submit(tf_keras_cell(epochs=3, steps=60), workers=2, name="tf-mw-t", setup_timeout=180)
    _train_and_check(job)


def test_submit_of_a_spec_for_another_backend_is_refused(tfk8s_home):
    spec = make_spec("print(1)", workers=1, backend="kubernetes", name="elsewhere")
    with pytest.raises(SpecError, match="submit it to that backend"):
        LocalBackend().submit(spec, Payload(code="print(1)"))
    assert not any(tfk8s_home.iterdir())


# --------------------------------------------------------------------------- make demo
def test_demo_exits_non_zero_when_the_job_fails(standin, monkeypatch, capsys):
    from tfk8s_jupyter import demo

    monkeypatch.setattr(demo, "CELL", "raise ValueError('demo cell broke')")
    assert demo.main(["--epochs", "1", "--steps", "2"]) == 1
    out = capsys.readouterr().out
    assert "status       failed — chief-0 failed: ValueError: demo cell broke" in out
    assert "chief-0: exit 1" in out


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_demo_trains_with_live_progress_and_prints_a_summary():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "tfk8s_jupyter.demo", "--epochs", "3", "--steps", "80"],
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("submitted demo-") and "ps-0, chief-0, worker-0, worker-1" in lines[0]
    progress = [line for line in lines if "step " in line and "loss " in line]
    assert progress, out.stdout
    assert [line for line in lines if "epoch 3/3 done" in line]
    assert "  status       succeeded" in lines
    assert any(line.startswith("  final loss   ") for line in lines)
    replicas = next(line for line in lines if line.startswith("  replicas"))
    assert "chief-0: exit 0" in replicas and "ps-0: exit" in replicas and "worker-1: exit" in replicas


def test_detect_gpus_from_the_driver_or_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    proc = tmp_path / "gpus"
    proc.mkdir()
    for bus in ("0000:01:00.0", "0000:02:00.0", "0000:03:00.0"):
        (proc / bus).mkdir()
    assert detect_gpus(proc_dir=str(proc), nvidia_smi="no-such-tool") == ["0", "1", "2"]
    smi = tmp_path / "fake-nvidia-smi"
    smi.write_text(
        "#!/bin/sh\necho 'GPU 0: Tesla T4 (UUID: GPU-aaa)'\necho 'GPU 1: Tesla T4 (UUID: GPU-bbb)'\n"
    )
    smi.chmod(0o755)
    missing = str(tmp_path / "no-driver")
    assert detect_gpus(proc_dir=missing, nvidia_smi=str(smi)) == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert detect_gpus(proc_dir=missing, nvidia_smi=str(smi)) == ["1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert detect_gpus(proc_dir=missing, nvidia_smi=str(smi)) == []
    assert detect_gpus(proc_dir=missing, nvidia_smi="no-such-tool") == []


def test_a_submission_that_fails_half_way_leaves_nothing(tfk8s_home, monkeypatch):
    import subprocess

    def broken_popen(*args, **kwargs):
        raise PermissionError(13, "Permission denied", args[0][0])

    monkeypatch.setattr(subprocess, "Popen", broken_popen)
    with pytest.raises(
        TFK8sError, match=r"could not start job 'half-way' \(.*Permission denied.*\); check that"
    ):
        tk.submit("print(1)", workers=1, name="half-way")
    assert list(tfk8s_home.iterdir()) == []


def test_each_replica_works_in_its_own_directory_inside_the_record(standin, tfk8s_home):
    code = "import os\nopen('where.txt', 'w').write(os.getcwd())\nEPOCHS = 1\nSTEPS = 2"
    job = tk.submit(code, ps=1, workers=1, name="workdirs")
    assert job.wait(timeout=60) == "succeeded"
    work = JobRecord("workdirs", tfk8s_home).dir / "work"
    assert (work / "chief-0" / "where.txt").read_text() == str(work / "chief-0")
    assert {p.name for p in work.iterdir()} == {"ps-0", "chief-0", "worker-0"}


def test_follow_logs_streams_a_replica_log_to_the_end(standin):
    job = tk.submit(
        "print('hello from the cell')\nEPOCHS = 2\nSTEPS = 10\nSTEP_SECONDS = 0.05", workers=1, name="follow"
    )
    lines = list(job.backend.follow_logs(job.name, "worker-0", threading.Event()))
    assert job.status.done
    assert "hello from the cell" in lines
    assert sum('"type":"metric"' in line for line in lines) == 20
    assert lines[-1].startswith("@tfk8s") and '"type":"end"' in lines[-1]
    assert lines == job.logs("worker-0").splitlines()


def test_no_variable_of_the_submitting_process_changes_what_replicas_run(standin, monkeypatch, tmp_path):
    """Test switches live in the test suite's hooks only: the old environment switches, set by a stray
    kernel variable, are inert."""
    marker = tmp_path / "hijacked"
    impostor = tmp_path / "impostor.py"
    impostor.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.setenv("TFK8S_LOCAL_RUNNER", str(impostor))
    monkeypatch.setenv("TFK8S_TEST_STALL_REPLICA", "worker-1")
    monkeypatch.setenv("TFK8S_TEST_END_GRACE", "0.01")
    job = tk.submit("EPOCHS = 2\nSTEPS = 5", workers=2, name="env-inert")
    assert job.wait(timeout=60) == "succeeded", job.status.message
    assert not marker.exists()
    assert len(job.metrics()) >= 10


# --------------------------------------------------------------------------- artifacts (stand-in runner)
def test_replica_env_names_the_artifact_directory_and_the_checkpoint_to_resume(tmp_path):
    spec = make_spec("print(1)", workers=1)
    record = tmp_path / "rec"
    record.mkdir()
    (record / "local.json").write_text(
        json.dumps({"artifacts": str(record / "artifacts"), "resume_from": "/x/ck"})
    )
    env = process_env(
        spec,
        "worker-0",
        cluster_of(spec, [1001]),
        payload_path=record / "payload.json",
        checkpoint=record / "artifacts" / "checkpoints",
        workdir=tmp_path / "work",
        cuda_visible_devices="",
        base={},
    )
    assert env["TFK8S_ARTIFACTS"] == str(record / "artifacts")
    assert env["TFK8S_RESUME_FROM"] == "/x/ck"
    assert env["TFK8S_SAVE_MODEL"] == "1"


def test_checkpoints_go_into_the_artifacts_in_the_record_and_delete_removes_them(standin, tfk8s_home):
    job = tk.submit("EPOCHS = 1\nSTEPS = 3", workers=1, name="arts", save_model=False)
    assert job.wait(timeout=60) == "succeeded"
    record = JobRecord("arts", tfk8s_home)
    backend = job.backend
    assert backend.artifacts_location("arts") == str(record.dir / "artifacts")
    assert backend.checkpoint_location("arts") == str(record.dir / "artifacts" / "checkpoints")
    assert (record.dir / "artifacts" / "checkpoints" / "standin.json").is_file()
    assert [a.path for a in job.artifacts()] == ["checkpoints/standin.json"]
    assert job.artifacts()[0].kind == "checkpoint"
    job.delete()
    assert not record.dir.exists()
    with pytest.raises(JobNotFound):
        backend.artifacts_location("arts")


def test_a_configured_checkpoint_dir_wins_and_goes_with_the_job(standin, tfk8s_home, tmp_path):
    job = tk.submit("EPOCHS = 1\nSTEPS = 3", workers=1, name="ownck", checkpoint_dir=str(tmp_path / "ck"))
    assert job.wait(timeout=60) == "succeeded"
    assert job.backend.checkpoint_location("ownck") == str(tmp_path / "ck" / "ownck")
    assert (tmp_path / "ck" / "ownck" / "standin.json").is_file()
    assert not (JobRecord("ownck", tfk8s_home).dir / "artifacts" / "checkpoints").exists()
    job.delete()
    assert not (tmp_path / "ck" / "ownck").exists()


def test_watch_delivers_a_long_backlog_in_batches_and_misses_nothing(standin, tfk8s_home):
    job = tk.submit("EPOCHS = 1\nSTEPS = 2", workers=1, name="backlog")
    assert job.wait(timeout=60) == "succeeded"
    record = JobRecord("backlog", tfk8s_home)
    before = len(record.read_events())
    extra = [
        {"type": "metric", "run": "later", "seq": i, "step": i, "values": {"loss": 1.0}} for i in range(40000)
    ]
    with open(record.events_path, "a") as f:
        f.write("".join(json.dumps(e) + "\n" for e in extra))
    assert record.events_path.stat().st_size > 3 << 20
    batches: list[int] = []
    job.backend.watch(
        "backlog", lambda _s: None, lambda events: batches.append(len(events)), threading.Event()
    )
    assert sum(batches) == before + len(extra)
    assert len(batches) >= 3 and max(batches) < len(extra)  # about 1 MB at a time, never all at once
