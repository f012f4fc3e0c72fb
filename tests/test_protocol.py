"""The line protocol: what the monitor accepts from a replica's stdout, and what it must skip."""

from __future__ import annotations

import json
import math

from tfk8s_jupyter import protocol
from tfk8s_jupyter.protocol import (
    MARKER,
    VERSION,
    EventDedup,
    encode,
    event_key,
    is_metric,
    parse_line,
    parse_lines,
)
from tfk8s_jupyter.records import JobRecord


def test_round_trip():
    line = encode("metric", run="r1", seq=3, t=1.5, epoch=0, step=40, values={"loss": 0.31})
    assert line.startswith(MARKER) and "\n" not in line
    assert parse_line(line) == {
        "v": VERSION,
        "type": "metric",
        "run": "r1",
        "seq": 3,
        "t": 1.5,
        "epoch": 0,
        "step": 40,
        "values": {"loss": 0.31},
    }


def test_marker_inside_a_progress_bar_line():
    """Keras progress bars write \\r, backspaces and ANSI codes without a newline; our line glues on."""
    event = encode("epoch", run="r", seq=9, epoch=1, step=20, values={"loss": 0.2})
    line = (
        "\r 7/20 \x1b[32m━━━━━━\x1b[0m\x1b[37m━━━━\x1b[0m 0s 3ms/step - loss: 0.4211\x08\x08\x08\x1b[2K"
        + event
    )
    parsed = parse_line(line)
    assert parsed is not None and parsed["type"] == "epoch" and parsed["values"] == {"loss": 0.2}


def test_text_glued_after_the_json_is_ignored():
    """stderr written into the same log file between the JSON and its newline must not lose the event."""
    line = encode("metric", run="r", seq=1, step=1, values={"loss": 1.0}) + "W0000 some TF warning"
    assert parse_line(line)["step"] == 1


def test_unknown_fields_are_kept_and_harmless():
    line = MARKER + json.dumps({"v": 1, "type": "metric", "seq": 1, "values": {"loss": 1}, "gpu_temp": 71})
    assert parse_line(line)["gpu_temp"] == 71


def test_unknown_event_types_parse_and_are_not_metrics():
    event = parse_line(MARKER + '{"v":1,"type":"heartbeat","seq":2}')
    assert event["type"] == "heartbeat" and not is_metric(event)
    assert is_metric({"type": "metric"}) and is_metric({"type": "epoch"})


def test_bad_json_is_skipped():
    assert parse_line(MARKER + '{"v":1,"type":"metric","values":{"loss":') is None
    assert parse_line(MARKER + "not json at all") is None
    assert parse_line(MARKER + "[1, 2, 3]") is None
    assert parse_line(MARKER + '{"v":1,"values":{}}') is None  # no type


def test_a_newer_version_is_skipped():
    assert parse_line(MARKER + json.dumps({"v": VERSION + 1, "type": "metric"})) is None
    assert parse_line(MARKER + json.dumps({"v": "1", "type": "metric"})) is None
    assert parse_line(MARKER + json.dumps({"type": "metric"})) is None


def test_user_output_and_tf_noise_are_not_events():
    for line in (
        "",
        "Epoch 1/3",
        "@tfk8s",
        "tfk8s {}",
        "I0000 00:00 port.cc:153] oneDNN custom operations are on",
    ):
        assert parse_line(line) is None


def test_non_finite_values_become_null():
    event = parse_line(encode("metric", values={"loss": math.nan, "acc": math.inf, "mae": 0.5}))
    assert event["values"] == {"loss": None, "acc": None, "mae": 0.5}


def test_parse_lines_of_a_log_blob():
    blob = "\n".join(
        [
            "hello from the cell",
            encode("start", run="a", seq=1),
            "Epoch 1/2",
            "\r1/2 [====>....]" + encode("metric", run="a", seq=2, step=1, values={"loss": 2.0}),
            MARKER + "{broken",
            encode("end", run="a", seq=3, status="succeeded"),
        ]
    )
    assert [e["type"] for e in parse_lines(blob)] == ["start", "metric", "end"]
    assert [e["seq"] for e in parse_lines(blob.splitlines())] == [1, 2, 3]


def test_events_are_identified_by_run_and_seq(tmp_path):
    record = JobRecord("dedupe", tmp_path)
    record.dir.mkdir()
    first = parse_lines(
        [encode("metric", run="a", seq=i, step=i, values={"loss": 1 / i}) for i in range(1, 4)]
    )
    assert len(record.append_events(first)) == 3
    # A re-read log (after a dropped stream, or by another follower) adds nothing twice...
    assert record.append_events(first) == []
    # ...while a restarted replica's new run (seq starting over) is new.
    again = [dict(e, run="b") for e in first]
    assert len(record.append_events(again)) == 3
    assert [event_key(e) for e in record.read_events()] == [
        ("a", 1),
        ("a", 2),
        ("a", 3),
        ("b", 1),
        ("b", 2),
        ("b", 3),
    ]


def test_a_half_written_events_line_is_skipped(tmp_path):
    record = JobRecord("partial", tmp_path)
    record.dir.mkdir()
    record.append_events([{"type": "metric", "run": "a", "seq": 1}])
    with open(record.events_path, "a") as f:
        f.write('{"type":"metric","run":"a","se')
    assert record.read_events() == [{"type": "metric", "run": "a", "seq": 1}]


def test_one_dedup_for_every_follower_keeps_memory_per_run_not_per_event():
    dedup = EventDedup()
    run_a = [{"type": "metric", "run": "a", "seq": i} for i in range(1, 10_001)]
    assert dedup.new(run_a[:6000]) == run_a[:6000]
    # A dropped stream read again from the start delivers only what was not seen.
    assert dedup.new(run_a) == run_a[6000:]
    assert dedup.new(run_a) == []
    # A restarted replica is a new run: its events are new even though seq starts over.
    run_b = [dict(e, run="b") for e in run_a[:3]]
    assert dedup.new(run_b) == run_b
    assert len(dedup) == 2  # one entry per run, whatever the number of events
    # Events without an integer seq are remembered by key.
    odd = [{"type": "end", "run": "c"}, {"type": "end", "run": "c"}, {"type": "end", "run": "c", "seq": "x"}]
    assert dedup.new(odd) == [odd[0], odd[2]]
    assert run_a[0] in dedup and {"run": "z", "seq": 1} not in dedup
    assert EventDedup(known=run_a).new(run_a[-2:]) == []


def test_a_note_is_not_an_error_and_an_older_records_save_error_reads_as_one():
    why = "training succeeded but the trained model could not be saved to /a/model (OSError: full)."
    note = protocol.parse_line(protocol.encode("note", "k", run="r", seq=3, about="save", message=why), "k")
    assert note["type"] == "note" and "note" in protocol.TYPES
    assert protocol.note_message(note) == why and not protocol.is_metric(note)
    older = {"type": "error", "run": "r", "seq": 3, "phase": "save", "message": why}
    assert protocol.note_message(older) == why
    assert protocol.note_message({"type": "error", "phase": "cell", "message": "ValueError: x"}) is None
    assert protocol.note_message({"type": "end", "status": "succeeded"}) is None
