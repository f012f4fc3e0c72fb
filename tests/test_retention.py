"""Job history that stays tidy: the retention rule (pure), the last loss read from the end of the events,
and, with real local jobs (the stand-in runner), ``%tfk8s_delete --older-than/--force/--dry-run``,
``c.TFK8s.keep_jobs`` applied by ``%tfk8s_jobs``, and ``%tfk8s_jobs --all-backends`` with a cluster that
cannot be reached."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from local_helpers import wait_for
from traitlets import TraitError

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends.base import JobStatus
from tfk8s_jupyter.backends.local import LocalBackend, job_processes, process_alive
from tfk8s_jupyter.records import JobRecord
from tfk8s_jupyter.retention import apply_keep_jobs, keep_limit, last_loss, select_expired
from tfk8s_jupyter.spec import SpecError

sys.path.insert(0, str(Path(__file__).parent / "notebook"))
from notebook_helpers import make_shell  # noqa: E402

DAY = 86400.0
NOW = 1_800_000_000.0


# -- the rule, pure -------------------------------------------------------------------------------------
def job(name, phase, days, owner="me"):
    return JobStatus(
        name=name, backend="local", strategy="mirrored", phase=phase, created=NOW - days * DAY, owner=owner
    )


TABLE = [
    job("new-ok", "succeeded", 0.5),
    job("running-old", "running", 30),
    job("pending-old", "pending", 20),
    job("two-days", "failed", 2),
    job("eight-days", "stopped", 8),
    job("ten-days", "succeeded", 10),
    job("bobs-old", "succeeded", 40, owner="bob"),
    job("bobs-new", "succeeded", 0.1, owner="bob"),
    job("no-owner", "succeeded", 50, owner=None),
]


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ({"max_age": 7 * DAY}, ["ten-days", "eight-days"]),
        ({"max_age": 1 * DAY}, ["ten-days", "eight-days", "two-days"]),
        ({"max_age": 60 * DAY}, []),
        # the newest N finished jobs stay; running and pending ones are neither removed nor counted
        ({"count": 1}, ["ten-days", "eight-days", "two-days"]),
        ({"count": 3}, ["ten-days"]),
        ({"count": 4}, []),
    ],
)
def test_only_finished_jobs_of_the_owner_beyond_the_limit_are_selected_oldest_first(limit, expected):
    assert select_expired(TABLE, NOW, owner="me", **limit) == expected


def test_another_owners_jobs_are_judged_by_their_own_history():
    assert select_expired(TABLE, NOW, count=1, owner="bob") == ["bobs-old"]
    assert select_expired(TABLE, NOW, max_age=7 * DAY, owner=None) == [
        "no-owner",
        "bobs-old",
        "ten-days",
        "eight-days",
    ]


def test_keep_jobs_takes_a_count_or_an_age_and_refuses_anything_else():
    assert keep_limit("50") == {"count": 50} and keep_limit(3) == {"count": 3}
    assert keep_limit("7d") == {"max_age": 7 * DAY} and keep_limit("90m") == {"max_age": 5400.0}
    with pytest.raises(TraitError, match="keep_jobs '7x' is not a positive duration"):
        tk.TFK8s(keep_jobs="7x")
    with pytest.raises(TraitError, match="keep_jobs '0' would keep no job; use a number of jobs"):
        tk.TFK8s(keep_jobs="0")
    with pytest.raises(SpecError, match="keep_jobs 'lots' is not a positive duration"):
        apply_keep_jobs(LocalBackend(), TABLE, "lots")


# -- the last loss, from the end ---------------------------------------------------------------------------
def write_events(path: Path, events: list[dict], tail: str = "") -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in events) + tail)


@pytest.mark.parametrize("chunk", [7, 64, 65536])
def test_last_loss_is_the_last_metric_or_epoch_with_a_loss_read_backwards(tmp_path, chunk):
    path = tmp_path / "events.jsonl"
    events = [{"type": "start", "run": "a", "seq": 0}]
    events += [{"type": "metric", "seq": i, "values": {"loss": 1.0 / (i + 1)}} for i in range(1, 300)]
    events += [
        {"type": "epoch", "seq": 300, "values": {"loss": 0.25, "accuracy": 0.9}},
        {"type": "metric", "seq": 301, "values": {"accuracy": 0.95}},  # no loss
        {"type": "checkpoint", "seq": 302, "values": {"loss": 9.0}},  # not a metric event
        {"type": "end", "seq": 303, "status": "succeeded"},
    ]
    write_events(path, events, tail='{"type":"metric","values":{"loss":0.0')  # a line being written
    assert last_loss(path, chunk=chunk) == 0.25


def test_last_loss_of_a_job_without_one(tmp_path):
    assert last_loss(tmp_path / "missing.jsonl") is None
    path = tmp_path / "events.jsonl"
    write_events(path, [{"type": "start"}, {"type": "metric", "values": {"mae": 0.3}}, {"type": "end"}])
    assert last_loss(path) is None
    write_events(path, [{"type": "metric", "values": {"loss": 0.5}}])  # a single line, from the start
    assert last_loss(path, chunk=5) == 0.5


def test_last_loss_reads_only_the_end_of_a_huge_events_file(tmp_path):
    path = tmp_path / "events.jsonl"
    with open(path, "w") as f:
        line = json.dumps({"type": "metric", "values": {"loss": 0.75}}) + "\n"
        f.write(line * 400_000)  # ~17 MB
        f.write(json.dumps({"type": "epoch", "values": {"loss": 0.125}}) + "\n")
        f.write(json.dumps({"type": "end"}) + "\n")
    assert path.stat().st_size > 10_000_000
    assert last_loss(path) == 0.125
    # bounded: past the limit it gives up rather than reading the whole file
    with open(path, "a") as f:
        f.write((json.dumps({"type": "metric", "values": {"mae": 1}}) + "\n") * 100_000)
    assert last_loss(path, limit=64 * 1024) is None
    assert last_loss(path, limit=8 << 20) == 0.125


# -- real local jobs through the magics ----------------------------------------------------------------
QUICK = "EPOCHS = 1\nSTEPS = {steps}\nSTEP_SECONDS = 0.01\n"
LONG = "EPOCHS = 100\nSTEPS = 100\nSTEP_SECONDS = 0.05\n"


@pytest.fixture
def shell(tmp_path, monkeypatch, standin):
    """A real InteractiveShell with ``%load_ext tfk8s_jupyter`` done (jobs run the stand-in runner)."""
    nb = tmp_path / "nb"
    nb.mkdir()
    monkeypatch.chdir(nb)
    sh = make_shell(tmp_path / "ipython")
    sh.run_line_magic("load_ext", "tfk8s_jupyter")
    yield sh
    InteractiveShell.clear_instance()


def finished(name: str, steps: int, days: float = 0.0, owner: str | None = None) -> tk.Job:
    """A finished local job whose last loss is 1/(steps+1), aged ``days`` (its submission moved back)."""
    options = {"owner": owner} if owner else {}
    job = tk.submit(QUICK.format(steps=steps), workers=1, name=name, **options)
    assert job.wait(timeout=60) == "succeeded"
    record = JobRecord(name)
    wait_for(lambda: not any(process_alive(p, t) for _, p, t in job_processes(record)), 20, f"{name} to end")
    if days:
        status = record.read_status()
        status["created"] -= days * DAY
        record.write_status(status)
    return job


def running(name: str) -> tk.Job:
    job = tk.submit(LONG, workers=1, name=name)
    wait_for(lambda: job.phase == "running", 30, f"{name} to run")
    return job


def names(home: Path) -> list[str]:
    return sorted(p.name for p in home.iterdir())


def table(lines: list[str]) -> dict[str, dict[str, str]]:
    """``%tfk8s_jobs``' text table by job name: each row's cells by column (cut at the header's offsets)."""
    header = lines[0]
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    columns = header.split()
    out = {}
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        out[cells[0]] = dict(zip(columns, cells, strict=True))
    return out


def out_of(capsys) -> str:
    return capsys.readouterr().out.strip()


def test_delete_older_than_takes_only_finished_jobs_of_mine_and_a_running_one_needs_force(
    shell, capsys, tfk8s_home
):
    finished("ten-days", 2, days=10)
    finished("eight-days", 3, days=8)
    finished("fresh", 4)
    finished("bobs", 2, days=30, owner="bob")
    live = running("live")
    time.sleep(1.1)  # every job is older than 1 s now, the running one too
    capsys.readouterr()

    shell.run_line_magic("tfk8s_delete", "--older-than 7d --dry-run")
    assert out_of(capsys) == (
        "tfk8s: would delete 2 jobs: ten-days (succeeded), eight-days (succeeded); nothing was deleted."
    )
    assert names(tfk8s_home) == ["bobs", "eight-days", "fresh", "live", "ten-days"]
    shell.run_line_magic("tfk8s_delete", "--older-than 7d")
    assert out_of(capsys) == "tfk8s: deleted 2 jobs: ten-days (succeeded), eight-days (succeeded)."
    assert names(tfk8s_home) == ["bobs", "fresh", "live"]
    shell.run_line_magic("tfk8s_delete", "--older-than 7d")
    assert out_of(capsys) == "tfk8s: no finished job is older than 7d, so there is nothing to delete."

    # 1 s: every job is older, but the running one and another owner's are not taken
    shell.run_line_magic("tfk8s_delete", "--older-than 1s")
    assert out_of(capsys) == "tfk8s: deleted 1 job: fresh (succeeded)."
    assert names(tfk8s_home) == ["bobs", "live"]

    for line, message in [
        ("--older-than 7x", "--older-than '7x' is not an age; use e.g. 7d, 12h or 90m."),
        ("--older-than 0d", "--older-than '0d' is not an age; use e.g. 7d, 12h or 90m."),
        (
            "live",
            "job live is still running; stop it first (%tfk8s_stop live) or pass --force to stop and "
            "delete it; nothing was deleted.",
        ),
        ("live --older-than 1s", "job live is still running; stop it first"),
        ("", "name the jobs to delete (%tfk8s_delete NAME ...), or pass --older-than AGE"),
    ]:
        with pytest.raises(UsageError) as e:
            shell.run_line_magic("tfk8s_delete", line)
        assert str(e.value).startswith(message), (line, str(e.value))
    assert names(tfk8s_home) == ["bobs", "live"]
    assert live.phase == "running"

    processes = job_processes(JobRecord("live"))
    assert len(processes) == 2  # the supervisor and worker-0
    shell.run_line_magic("tfk8s_delete", "live --force")
    assert out_of(capsys) == "tfk8s: deleted 1 job: live (running)."
    assert names(tfk8s_home) == ["bobs"]
    assert not any(process_alive(pid, ticks) for _, pid, ticks in processes)


def test_keep_jobs_is_applied_when_jobs_are_listed_and_the_list_shows_the_last_loss(
    shell, capsys, tfk8s_home
):
    finished("oldest", 2, days=3)  # loss 1/3
    finished("older", 3, days=2)  # 1/4
    finished("old", 4, days=1)  # 1/5
    finished("newest", 7)  # 1/8
    finished("bobs", 2, days=30, owner="bob")
    running("live")
    wait_for(lambda: last_loss(JobRecord("live").events_path), 30, "the running job's first loss")
    capsys.readouterr()

    shell.run_line_magic("tfk8s_jobs", "")
    rows = table(out_of(capsys).splitlines())
    assert sorted(rows) == ["live", "newest", "old", "older", "oldest"]  # keep_jobs unset: all stay
    losses = [rows[n]["loss"] for n in ("oldest", "older", "old", "newest")]
    assert losses == ["0.3333", "0.25", "0.2", "0.125"]
    assert rows["live"]["phase"] == "running" and float(rows["live"]["loss"]) < 1  # while it runs too

    shell.run_cell("%config TFK8s.keep_jobs = '2'")
    shell.run_line_magic("tfk8s_jobs", "--all")
    lines = out_of(capsys).splitlines()
    assert lines[0] == "tfk8s: keep_jobs = '2' removed 2 finished local jobs (oldest, older)."
    assert [line.split()[0] for line in lines[2:]] == ["live", "newest", "old", "bobs"]
    assert names(tfk8s_home) == ["bobs", "live", "newest", "old"]

    shell.run_line_magic("tfk8s_jobs", "")  # nothing beyond the limit any more: no line
    assert out_of(capsys).splitlines()[0].split()[0] == "name"

    shell.run_cell("%config TFK8s.keep_jobs = '12h'")
    shell.run_line_magic("tfk8s_jobs", "")
    lines = out_of(capsys).splitlines()
    assert lines[0] == "tfk8s: keep_jobs = '12h' removed 1 finished local job (old)."
    assert [line.split()[0] for line in lines[2:]] == ["live", "newest"]
    assert names(tfk8s_home) == ["bobs", "live", "newest"]

    # the running job is never removed, however small the limit
    shell.run_cell("%config TFK8s.keep_jobs = '1s'")
    time.sleep(1.1)
    shell.run_line_magic("tfk8s_jobs", "")
    assert out_of(capsys).splitlines()[0] == "tfk8s: keep_jobs = '1s' removed 1 finished local job (newest)."
    assert names(tfk8s_home) == ["bobs", "live"]
    tk.attach("live").stop()


def test_all_backends_lists_local_jobs_when_the_cluster_cannot_be_reached(
    shell, capsys, tmp_path, monkeypatch
):
    import socket

    import tfk8s_jupyter.api as api

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "default"}}],
                "current-context": "c",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    api._backends.pop("kubernetes", None)
    finished("here", 3)
    capsys.readouterr()
    try:
        shell.run_line_magic("tfk8s_jobs", "--all-backends")
    finally:
        api._backends.pop("kubernetes", None)
    lines = out_of(capsys).splitlines()
    assert lines[0].startswith(
        f"tfk8s: kubernetes jobs could not be listed: the Kubernetes API at http://127.0.0.1:{port} cannot be "
        "reached"
    )
    assert "Traceback" not in "\n".join(lines) and len(lines) == 3
    assert lines[1].split()[0] == "name" and lines[2].split()[:3] == ["here", "succeeded", "local"]
    with pytest.raises(UsageError, match="--all-backends lists every backend; drop --backend"):
        shell.run_line_magic("tfk8s_jobs", "--all-backends --backend local")


def test_list_jobs_through_the_python_api_applies_keep_jobs(capsys, tfk8s_home, monkeypatch):
    from tfk8s_jupyter.config import current_config

    finished("first", 2, days=3)
    finished("second", 3, days=2)
    finished("third", 4)
    monkeypatch.setattr(current_config(), "keep_jobs", "2")
    capsys.readouterr()
    jobs = tk.list_jobs(backend="local")
    assert [j.name for j in jobs] == ["third", "second"]
    assert capsys.readouterr().out.strip() == "tfk8s: keep_jobs = '2' removed 1 finished local job (first)."
    assert names(tfk8s_home) == ["second", "third"]
