"""Replica output as text: one meaning of "the last N lines", the one-line excerpt, the file tail; and the
one way a job status becomes terminal."""

from __future__ import annotations

from tfk8s_jupyter.backends.base import JobStatus, ReplicaStatus
from tfk8s_jupyter.display_text import clean_log
from tfk8s_jupyter.logtext import FileTail, last_lines, log_excerpt, read_log


def test_last_lines_zero_means_none_and_none_means_all():
    text = "a\nb\nc\n"
    assert last_lines(text, 2) == "b\nc\n"
    assert last_lines(text, 10) == text
    assert last_lines(text, 0) == "" and last_lines(text, -3) == ""
    assert last_lines(text, None) == text
    assert last_lines("", 5) == ""
    assert last_lines("no newline at the end", 1) == "no newline at the end\n"


def test_a_progress_bars_carriage_returns_stay_in_its_line():
    """Keras redraws its bar with ``\\r`` and backspaces inside one line: the last N lines are counted by
    newlines, and each line reaches the face whole, for it to show the bar's last state."""
    bar = "\r 1/20 ━━ 0s - loss: 6.2\n" + "\b" * 8 + "\r17/20 ━━ 0s - loss: 1.1\r20/20 ━━ 1s - loss: 1.0\n"
    text = "Epoch 1/3\n" + bar + "Epoch 2/3\n"
    assert last_lines(text, 2) == "\b" * 8 + "\r17/20 ━━ 0s - loss: 1.1\r20/20 ━━ 1s - loss: 1.0\nEpoch 2/3\n"
    assert last_lines(text, 10) == text
    assert last_lines("a\r\nb", 1) == "b\n" and last_lines("a\r\nb", 2) == "a\r\nb\n"
    assert clean_log(last_lines(text, 3)).split("\n") == [
        " 1/20 ━━ 0s - loss: 6.2",
        "20/20 ━━ 1s - loss: 1.0",
        "Epoch 2/3",
    ]


def test_log_excerpt_is_one_line_of_the_last_non_empty_lines():
    text = "setup\n\nepoch 1\r epoch 1 done\nTraceback\n  ValueError: bad shape\n\n"
    assert log_excerpt(text, 2) == "Traceback | ValueError: bad shape"
    assert log_excerpt(text, 3) == "epoch 1 done | Traceback | ValueError: bad shape"
    long = log_excerpt("x" * 1000, 1, width=50)
    assert len(long) == 51 and long.startswith("…")
    assert log_excerpt(None) == "" and log_excerpt("a\nb", 0) == ""


def test_read_log_reads_the_end_of_big_files_and_missing_ones_as_empty(tmp_path):
    path = tmp_path / "r.log"
    assert read_log(path) == ""
    path.write_text("".join(f"line {i}\n" for i in range(1000)))
    assert read_log(path, tail=2) == "line 998\nline 999\n"
    assert read_log(path, tail=0) == ""
    assert read_log(path, max_bytes=18) == "line 998\nline 999\n"


def test_file_tail_returns_each_complete_line_once(tmp_path):
    path = tmp_path / "grows.log"
    tail = FileTail(path)
    assert tail.read() == []  # not written yet
    with open(path, "w") as f:
        f.write("one\ntw")
        f.flush()
        assert tail.read() == ["one"]
        f.write("o\nthree")
        f.flush()
        assert tail.read() == ["two"]
        assert tail.read() == []
    assert tail.rest() == "three" and tail.rest() is None


def test_end_makes_the_job_terminal_and_only_touches_unfinished_replicas():
    status = JobStatus(
        name="j",
        backend="local",
        strategy="parameter_server",
        replicas=[
            ReplicaStatus("chief", 0, state="succeeded"),
            ReplicaStatus("worker", 0, state="running"),
            ReplicaStatus("worker", 1, state="failed", message="killed"),
            ReplicaStatus("ps", 0, state="restarting"),
        ],
    )
    assert (
        status.end("failed", "ps-0 was lost", replica_state="stopped", replica_message="job failed") is status
    )
    assert status.done and status.phase == "failed" and status.message == "ps-0 was lost"
    assert status.finished is not None
    assert [(r.state, r.message) for r in status.replicas] == [
        ("succeeded", None),
        ("stopped", "job failed"),
        ("failed", "killed"),
        ("stopped", "job failed"),
    ]


def test_a_tail_reads_only_the_end_of_a_long_log(tmp_path, monkeypatch):
    path = tmp_path / "long.log"
    lines = [f"line {i} " + "x" * (i % 50) for i in range(200_000)]
    path.write_text("\n".join(lines) + "\n")
    read = []
    real_open = open

    class Counting:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            data = self.f.read(n)
            read.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr("builtins.open", lambda *a, **kw: Counting(real_open(*a, **kw)))
    assert read_log(path, tail=3) == "\n".join(lines[-3:]) + "\n"
    assert sum(read) <= 64 << 10  # one block from the end, not the whole file
    read.clear()
    assert read_log(path, tail=5000) == "\n".join(lines[-5000:]) + "\n"
    assert sum(read) < path.stat().st_size // 10
    monkeypatch.undo()
    assert read_log(path, tail=0) == ""
    assert read_log(path, tail=1) == lines[-1] + "\n"
    short = tmp_path / "short.log"
    short.write_text("a\nb\nunfinished")
    assert read_log(short, tail=2) == "b\nunfinished\n"
    assert read_log(short, tail=10) == "a\nb\nunfinished\n"
    assert read_log(tmp_path / "absent.log", tail=3) == ""
