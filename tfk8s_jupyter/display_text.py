"""The text face of a job, shared by the panels and the magics: durations and values, the one-line
progress text, the final summary (text and HTML), the replica table, a cleaned log tail and the
``%tfk8s_jobs`` / ``%tfk8s_config`` tables.

Pure functions of a :class:`~tfk8s_jupyter.monitor.JobState` or a
:class:`~tfk8s_jupyter.backends.base.JobStatus`; no widgets, so terminal IPython can use them too.
"""

from __future__ import annotations

import html
import math
import time
from typing import TYPE_CHECKING

from .logtext import TERMINAL_CODES, is_startup_noise, last_lines
from .protocol import MARKER

if TYPE_CHECKING:
    from .backends.base import JobStatus
    from .monitor import JobState

PHASE_COLORS = {
    "pending": ("#6c757d", "white"),
    "running": ("#0d6efd", "white"),
    "succeeded": ("#198754", "white"),
    "failed": ("#dc3545", "white"),
    "stopped": ("#6c757d", "white"),
}
LOG_TAIL_LINES = 15


# -- durations and values ------------------------------------------------------------------------
def format_duration(seconds: float | None, coarse: bool = False) -> str:
    """``"42s"``, ``"3m 05s"``, ``"1h 02m"``; ``coarse``: ``"7s"``, ``"40s"``, ``"3m"``, ``"1h 02m"``, for
    ages that should change at most every 10 s past the first 10 (fewer widget messages)."""
    if seconds is None or seconds < 0:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s // 10 * 10 if coarse and s >= 10 else s}s"
    if s < 3600:
        return f"{s // 60}m" if coarse else f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def format_value(v: float) -> str:
    """A metric value in at most four significant digits; ``nan`` for a missing or non-finite one."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "nan"
    return f"{v:.4g}"


def elapsed(status: JobStatus | None, now: float | None = None) -> float | None:
    """Seconds from the job's creation to its end (or to ``now`` while it runs)."""
    if status is None:
        return None
    end = status.finished if status.finished else (now or time.time())
    return max(0.0, end - status.created)


def epoch_number(epoch: int | None) -> int | None:
    """The epoch as Keras prints it ("Epoch 1/3"): the protocol counts from 0, people from 1."""
    return None if epoch is None else int(epoch) + 1


def epoch_shown(state: JobState) -> int | None:
    """The epoch a face shows, counted from 1: the one in progress, or the last one of a finished job.
    A job that failed or was stopped after an epoch ended did so in the next epoch, not in the one
    before it (the next epoch reports nothing until its first metric point)."""
    n = epoch_number(state.epoch)
    status = state.status
    last = state.last_point
    if (
        n is not None
        and status is not None
        and status.phase in ("failed", "stopped")
        and last is not None
        and last.get("kind") == "epoch"
    ):
        return n + 1
    return n


def plural(n: int, noun: str) -> str:
    """``"1 checkpoint"``, ``"3 checkpoints"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


# -- progress and summary ------------------------------------------------------------------------
def progress_text(state: JobState, now: float | None = None) -> str:
    """One line: ``job x · running · 1m 05s · epoch 2 · step 140 · loss 0.31 · 4/4 replicas running``."""
    status = state.status
    phase = status.phase if status else "pending"
    parts = [f"job {state.name}", phase, format_duration(elapsed(status, now))]
    if state.epoch is not None:
        parts.append(f"epoch {epoch_shown(state)}")
    if state.step is not None:
        parts.append(f"step {state.step}")
    if state.last_values:
        parts.append(" ".join(f"{k} {format_value(v)}" for k, v in sorted(state.last_values.items())))
    if status and status.replicas:
        n = len(status.replicas)
        counts = status.counts()
        parts.append(", ".join(f"{c}/{n} {s}" for s, c in sorted(counts.items())) + " replicas")
    return " · ".join(parts)


LAUNCH_ORDER = ("kept", "warm", "cold")


def launch_text(status: JobStatus | None) -> str | None:
    """How the job's current replicas started (local backend): ``kept`` (a finished job's replica took this
    run), ``warm`` (a warm pool process became it) or ``cold`` (a new process), e.g. ``warm start`` or
    ``start: 2 warm, 1 cold``; None when no replica says (Kubernetes, or before any started)."""
    kinds: dict[str, int] = {}
    for r in status.replicas if status else []:
        if r.launch and r.state != "removed":
            kinds[r.launch] = kinds.get(r.launch, 0) + 1
    if not kinds:
        return None
    if len(kinds) == 1:
        return f"{next(iter(kinds))} start"
    order = sorted(
        kinds, key=lambda k: (LAUNCH_ORDER.index(k) if k in LAUNCH_ORDER else len(LAUNCH_ORDER), k)
    )
    return "start: " + ", ".join(f"{kinds[k]} {k}" for k in order)


def format_bytes(n: float | None) -> str:
    """``"812 B"``, ``"4.1 kB"``, ``"1.2 MB"``, ``"3.4 GB"`` (powers of 1000); ``"?"`` when unknown."""
    if not isinstance(n, (int, float)):
        return "?"
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def model_line(artifacts: dict | None) -> str | None:
    """What the final line says of the saved model, from the ``end`` event's ``artifacts``:
    ``model saved: 1.2 MB in 0.4 s — job.model() loads it``, or why none was (``model_note``)."""
    model = artifacts.get("model") if isinstance(artifacts, dict) else None
    if not isinstance(model, dict) or not model.get("path"):
        note = artifacts.get("model_note") if isinstance(artifacts, dict) else None
        return f"no model saved: {str(note).rstrip('.')}" if note else None
    seconds = model.get("save_seconds")
    took = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    return f"model saved: {format_bytes(model.get('bytes'))}{took} — job.model() loads it"


def notes_of(state: JobState) -> list[str]:
    """The job's one-line notes (``JobStatus.notes``, e.g. that its artifacts will not survive its pods)."""
    status = state.status
    return [n for n in (status.notes if status else []) if n]


def notes_html(state: JobState) -> str:
    """The job's notes as lines under the panel's header (class ``tfk8s-note``); ``""`` without notes."""
    return "".join(
        f'<div class="tfk8s-note" style="color:#664d03">&#9888; {html.escape(n)}</div>'
        for n in notes_of(state)
    )


def summary_text(state: JobState, now: float | None = None) -> str:
    """The final summary (plain text): status line, last metrics, the saved model, notes, error if any."""
    status = state.status
    phase = status.phase if status else "pending"
    lines = [f"tfk8s job {state.name}: {phase}"]
    if status:
        lines[0] += f" after {format_duration(elapsed(status, now))} ({status.backend}, {status.strategy})"
    if state.epoch is not None or state.step is not None:
        reached = ", ".join(
            f"{what} {n}"
            for what, n in (("epoch", epoch_shown(state)), ("step", state.step))
            if n is not None
        )
        lines.append(f"  reached {reached}; {plural(state.n_points, 'metric point')}")
    if state.last_values:
        lines.append(
            "  last: " + ", ".join(f"{k}={format_value(v)}" for k, v in sorted(state.last_values.items()))
        )
    if status and status.replicas:
        lines.append(
            "  replicas: "
            + ", ".join(
                f"{r.name} {r.state}" + (f" ({r.restarts} restarts)" if r.restarts else "")
                for r in status.replicas
            )
        )
    saved = model_line(getattr(state, "artifacts", None))
    if saved:
        lines.append(f"  {saved}")
    lines.extend(f"  note: {n}" for n in notes_of(state))
    if state.error:
        lines.append(f"  error: {state.error}")
    return "\n".join(lines)


def summary_html(state: JobState, now: float | None = None) -> str:
    """The final summary as HTML, the phase in its colour."""
    status = state.status
    phase = status.phase if status else "pending"
    bg, fg = PHASE_COLORS.get(phase, PHASE_COLORS["pending"])
    rows = summary_text(state, now).splitlines()
    head = html.escape(rows[0]).replace(
        html.escape(phase),
        f'<span style="background:{bg};color:{fg};padding:0 6px;border-radius:8px">{phase}</span>',
        1,
    )
    body = "<br>".join(html.escape(r.strip()) for r in rows[1:])
    return f'<div class="tfk8s-summary"><b>{head}</b><br>{body}</div>'


def attach_hint(name: str) -> str:
    return f"%tfk8s_attach {name} shows the live panel again (after a kernel restart, or in a reopened notebook)."


def snapshot_bundle(state: JobState) -> dict[str, str]:
    """What is known of a running job, saved beside its live panel: a reopened notebook, an export or a
    page whose kernel is gone shows this (and how to follow the job again) instead of a stale panel."""
    line = progress_text(state)
    hint = attach_hint(state.name)
    return {
        "text/plain": f"{line}\n{hint}",
        "text/html": f'<div class="tfk8s-snapshot"><span>{html.escape(line)}</span><br>'
        f'<span style="color:#6c757d">{html.escape(hint)}</span></div>',
    }


class Summary:
    """A display object with the final summary as text and HTML (for viewers without a kernel);
    ``hint``: add how to bring the live panel back."""

    def __init__(self, state: JobState, hint: bool = False):
        self.text = summary_text(state)
        self.html = summary_html(state)
        if hint:
            self.text += "\n" + attach_hint(state.name)
            self.html += f'<div style="color:#6c757d">{html.escape(attach_hint(state.name))}</div>'

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/plain": self.text, "text/html": self.html}

    def __repr__(self) -> str:
        return self.text


# -- replicas and logs ---------------------------------------------------------------------------
def replica_table_html(status: JobStatus | None, now: float | None = None) -> str:
    """One row per replica (``data-replica`` = its name): role, index, state, restarts, host, age."""
    now = now or time.time()
    head = "".join(f"<th>{h}</th>" for h in ("role", "index", "state", "restarts", "host/pod", "age"))
    rows = []
    for r in status.replicas if status else []:
        bg, _ = PHASE_COLORS.get(r.state, ("#6c757d", "white"))
        age = format_duration(now - r.started, coarse=True) if r.started else "-"
        cells = [
            r.role,
            str(r.index),
            f'<span style="color:{bg};font-weight:bold">{html.escape(r.state)}</span>'
            + (f' <span style="color:#6c757d">{html.escape(r.message[:160])}</span>' if r.message else ""),
            str(r.restarts),
            html.escape(r.host or (f"pid {r.pid}" if r.pid else "-")),
            age,
        ]
        rows.append(
            f'<tr data-replica="{html.escape(r.name)}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        )
    if not rows:
        rows.append('<tr><td colspan="6"><i>waiting for replicas…</i></td></tr>')
    return (
        '<table style="border-collapse:collapse;font-size:12px" cellpadding="3">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def clean_log(text: str, tail: int | None = LOG_TAIL_LINES, show_all: bool = False) -> str:
    """The last ``tail`` human lines (all when ``None``): protocol lines dropped, progress-bar carriage
    returns and terminal control codes resolved, and - unless ``show_all`` - TensorFlow's start-up noise
    folded into one first line saying how many lines it hides. The stored log is never changed."""
    out = []
    folded = 0
    for line in text.split("\n"):
        line = TERMINAL_CODES.sub("", line.rstrip("\r").rsplit("\r", 1)[-1])
        pos = line.find(MARKER)
        if pos >= 0:
            line = line[:pos]
        if not line.strip():
            continue
        if not show_all and is_startup_noise(line):
            folded += 1
            continue
        out.append(line)
    shown = last_lines("\n".join(out), tail).rstrip("\n")
    if folded:
        note = f"({plural(folded, 'TensorFlow start-up line')} folded; show all to see them)"
        shown = f"{note}\n{shown}" if shown else note
    return shown


# -- magic output tables -------------------------------------------------------------------------
class JobsTable:
    """``%tfk8s_jobs`` output: HTML in a notebook, an aligned text table elsewhere.

    ``details`` maps a job (``(backend, name)``, as its row's backend column shows it, or just its name) to
    what its record adds: ``{"loss": 0.12, "origin": "quickstart.ipynb [5]"}``.
    """

    COLUMNS = ("name", "phase", "backend", "strategy", "replicas", "loss", "origin", "age")

    def __init__(self, jobs: list[JobStatus], details: dict[str, dict] | None = None):
        now = time.time()
        details = details or {}
        self.rows = []
        for s in jobs:
            counts = s.counts()
            replicas = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "-"
            extra = details.get((s.backend, s.name)) or details.get(s.name) or {}
            loss = extra.get("loss")
            self.rows.append(
                (
                    s.name,
                    s.phase,
                    s.backend,
                    s.strategy,
                    replicas,
                    "-" if loss is None else format_value(loss),
                    extra.get("origin") or "-",
                    format_duration(now - s.created),
                )
            )

    def __repr__(self) -> str:
        if not self.rows:
            return "no tfk8s jobs"
        return text_table(self.COLUMNS, self.rows)

    def _repr_html_(self) -> str:
        if not self.rows:
            return "<i>no tfk8s jobs</i>"
        return html_table(self.COLUMNS, self.rows, "tfk8s-jobs")


class ConfigTable:
    """``%tfk8s_config`` output: ``(option, value, source)`` rows."""

    COLUMNS = ("option", "value", "source")

    def __init__(self, rows):
        self.rows = [(f"TFK8s.{n}", repr(v), s) for n, v, s in rows]

    def __repr__(self) -> str:
        return text_table(self.COLUMNS, self.rows)

    def _repr_html_(self) -> str:
        return html_table(self.COLUMNS, self.rows, "tfk8s-config")


def text_table(columns, rows) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(str(x)) for x in col) for col in zip(columns, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def html_table(columns, rows, cls: str) -> str:
    """A left-aligned HTML table with class ``cls``, every cell escaped."""
    head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
