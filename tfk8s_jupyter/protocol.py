"""The line protocol the reporting replica prints and every monitor parses.

One JSON object per line behind a fixed marker, e.g.::

    @tfk8s {"v":1,"type":"metric","run":"a1b2c3d4","seq":7,"t":1764170000.1,"epoch":0,"step":40,
            "values":{"loss":0.31}}

The marker is matched anywhere in a line, because Keras progress bars write ``\\r`` and ANSI codes into
pipes and glue them onto the next line. Unknown fields are ignored; lines with a newer major version or
broken JSON are skipped, never fatal.

Lines are authenticated per job: the reporting replica appends an HMAC of the line's JSON under the job's
secret (``TFK8S_PROTOCOL_KEY``, which the runner takes out of the environment before the cell runs), e.g.
``@tfk8s {...} #3f0c9a1e5b7d2c48a6e1f0b9``, and every reader passes the key from the job's spec: a line the
cell prints (made up, or copied from another job's log) fails the check and stays plain output. A job
recorded without a key (older records) accepts unauthenticated lines.

Every event carries ``run`` (one id per replica process start) and ``seq`` (a counter within that run):
``(run, seq)`` identifies an event, so a monitor that re-reads a log after a dropped stream or a restart
neither loses nor duplicates a point.

Event types: ``start``, ``metric``, ``epoch``, ``checkpoint``, ``end``, ``error`` (the job's error: the
cell raised or the replica could not be set up) and ``note``: one sentence the user should see that is
not the job's error (``message``, and ``about``: what it concerns, e.g. ``"save"`` when the trained model
could not be saved; the job still succeeds). Records written before ``note`` existed carry that as an
``error`` event with ``phase="save"``: :func:`note_message` reads both.

This module is stdlib-only: the runner imports it inside replicas, where only TensorFlow is installed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math

MARKER = "@tfk8s "
VERSION = 1
TYPES = ("start", "metric", "epoch", "checkpoint", "end", "error", "note")
MAC_PREFIX = " #"
MAC_CHARS = 24  # hex digits of the HMAC-SHA256 kept on a line (96 bits)


def sign(text: str, key: str) -> str:
    """The line's authenticator: the first ``MAC_CHARS`` hex digits of HMAC-SHA256(key, text)."""
    return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()[:MAC_CHARS]


def encode(event_type: str, key: str | None = None, /, **fields) -> str:
    """One protocol line (without the trailing newline), authenticated with ``key`` when given.
    Non-finite floats become ``null``."""
    body = {"v": VERSION, "type": event_type}
    body.update(fields)
    text = json.dumps(_finite(body), separators=(",", ":"), allow_nan=False)
    return MARKER + text + (MAC_PREFIX + sign(text, key) if key else "")


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


_DECODER = json.JSONDecoder()


def parse_line(line: str, key: str | None = None) -> dict | None:
    """The event in ``line``, or ``None`` when the line carries none (user output, TF noise).

    Args:
        line: one line of a replica's output.
        key: the job's protocol key (its spec's ``protocol_key``): only lines authenticated with it count.
            Empty or ``None`` for a job recorded without a key: every well-formed line counts.
    """
    pos = line.find(MARKER)
    if pos < 0:
        return None
    text = line[pos + len(MARKER) :].lstrip()
    try:
        event, end = _DECODER.raw_decode(text)
    except ValueError:
        return None
    if key:
        rest = text[end:]
        if not rest.startswith(MAC_PREFIX):
            return None
        mac = rest[len(MAC_PREFIX) : len(MAC_PREFIX) + MAC_CHARS]
        if not hmac.compare_digest(mac, sign(text[:end], key)):
            return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return None
    if not isinstance(event.get("v"), int) or event["v"] > VERSION:
        return None
    return event


def parse_lines(lines, key: str | None = None) -> list[dict]:
    """All events in an iterable of lines (or one text blob), in order (authenticated with ``key``: see
    :func:`parse_line`)."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    return [e for e in (parse_line(line, key) for line in lines) if e is not None]


def event_key(event: dict) -> tuple:
    """The identity of an event for de-duplication: ``(run, seq)``."""
    return (event.get("run"), event.get("seq"))


class EventDedup:
    """The events not seen before, by :func:`event_key`: every follower de-duplicates through one of these.

    Memory stays O(runs), not O(events): a run prints its events in ``seq`` order and a re-read (a dropped
    stream, a log read again after a restart) repeats them in that order, so the highest ``seq`` delivered
    per run is enough. Events without an integer ``seq`` are remembered by key.

    Args:
        known: events already delivered or recorded.
    """

    def __init__(self, known=()):
        self._last_seq: dict = {}  # run -> highest seq delivered
        self._other: set = set()  # keys of events without an integer seq
        self.new(known)

    def __len__(self) -> int:
        return len(self._last_seq) + len(self._other)

    def __contains__(self, event: dict) -> bool:
        run, seq = event_key(event)
        if isinstance(seq, int) and not isinstance(seq, bool):
            last = self._last_seq.get(run)
            return last is not None and seq <= last
        return (run, seq) in self._other

    def new(self, events) -> list[dict]:
        """The events of ``events`` not seen before, in order; they count as seen from now on."""
        out = []
        for e in events:
            if e in self:
                continue
            run, seq = event_key(e)
            if isinstance(seq, int) and not isinstance(seq, bool):
                self._last_seq[run] = seq
            else:
                self._other.add((run, seq))
            out.append(e)
        return out


def is_metric(event: dict) -> bool:
    return event.get("type") in ("metric", "epoch")


def note_message(event: dict) -> str | None:
    """The sentence of a ``note`` event (or of an older record's ``error`` event with ``phase="save"``,
    which was a note too); ``None`` for any other event."""
    kind = event.get("type")
    if kind == "note" or (kind == "error" and event.get("phase") == "save"):
        message = event.get("message")
        return str(message) if message else None
    return None
