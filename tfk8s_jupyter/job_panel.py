"""The live panel under a training cell: header, status badge, curve, replica table, log tail, Stop button.

A panel observes a :class:`~tfk8s_jupyter.monitor.JobState` and never talks to a backend. The log tail
comes through the state too: the panel says which replica it follows (``state.follow_log``) and renders
the tail the monitor put into the state. Only the Stop button calls the job handle (``job.stop()``).

Updates are coalesced by a timer thread: ticks at least ``interval`` (0.525 s) apart, each sending at
most two widget messages, so a panel sends at most 4 messages in any second; at most ``max_points``
points per series are sent to the browser. Background updates only mutate widget traits (never
``with output:`` from a thread), so they land in the panel's own cell whatever cell runs meanwhile.

CSS classes (stable, for tests and themes): ``tfk8s-job-panel``, ``tfk8s-status-badge`` (text = phase),
``tfk8s-replica-table``, ``tfk8s-curve`` (the bqplot Figure), ``tfk8s-log-tail``, ``tfk8s-stop-button``;
plus ``tfk8s-header``, ``tfk8s-job-title``, ``tfk8s-error``, ``tfk8s-phase-<phase>``, ``tfk8s-danger`` on a
failed panel and ``tfk8s-gone`` on a deleted job's panel (JupyterLab adds ``tfk8s-stale`` when the kernel
restarts).
"""

from __future__ import annotations

import html
import math
import threading
import time
from collections.abc import Callable, Mapping

import ipywidgets as W

from .display_text import (
    PHASE_COLORS,
    Summary,
    clean_log,
    elapsed,
    epoch_shown,
    format_duration,
    format_value,
    launch_text,
    notes_html,
    plural,
    progress_text,
    replica_table_html,
    snapshot_bundle,
)
from .monitor import SETTLE_SECONDS, JobState
from .panel_workers import WorkerControls

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
MESSAGES_PER_TICK = 2
SPARSE_POINTS = 60  # series with at most this many points are drawn with markers
FINAL_LOG_WAIT_SECONDS = 10.0  # how long the final render waits for the monitor's last log fetch
_LOG_PRE = "<pre style='font-size:11px;max-height:220px;overflow:auto;margin:0'>"


def merge_series(
    series: Mapping[str, Mapping[str, list]], max_points: int
) -> tuple[list[str], list[float], list[list[float]]]:
    """Put every metric on one shared x axis (NaN where a metric has no point), at most ``max_points``."""
    names = sorted(series)
    if not names:
        return [], [], []
    xs = [list(series[n]["x"]) for n in names]
    if all(x == xs[0] for x in xs):
        x = xs[0]
        ys = [list(series[n]["y"]) for n in names]
    else:
        x = sorted({v for xx in xs for v in xx})
        index = {v: i for i, v in enumerate(x)}
        ys = []
        for n in names:
            row = [math.nan] * len(x)
            for xv, yv in zip(series[n]["x"], series[n]["y"], strict=True):
                row[index[xv]] = yv
            ys.append(row)
    if len(x) > max_points:
        step = -(-len(x) // max_points)
        keep = list(range(0, len(x), step))
        if keep[-1] != len(x) - 1:
            keep[-1] = len(x) - 1
        x = [x[i] for i in keep]
        ys = [[row[i] for i in keep] for row in ys]
    return names, x, ys


def integer_ticks(x: list[float], most: int = 10) -> list[int]:
    """Whole-number ticks (steps and epochs are counts) spanning ``x``: at most ``most``, 1-2-5 spaced."""
    if not x:
        return []
    lo, hi = math.floor(min(x)), math.ceil(max(x))
    spacing = 1
    while (hi - lo) // spacing + 1 > most:
        for factor in (2, 5 / 2, 2):  # 1, 2, 5, 10, 20, 50, ...
            spacing = int(spacing * factor)
            if (hi - lo) // spacing + 1 <= most:
                break
    first = -(-lo // spacing) * spacing
    return list(range(first, hi + 1, spacing))


# -- the live panel --------------------------------------------------------------------------------
class JobPanel(W.VBox):
    """The live panel of one job: header, status badge, curve, replica table, log tail, Stop button.

    Args:
        job: the job handle (``name``, ``state``, ``stop()``), e.g. from ``tfk8s_jupyter.submit``.
            Only the Stop button calls it.
        state: the :class:`JobState` to observe (default: ``job.state``).
        interval: seconds between coalesced updates (each sends at most two widget messages).
        max_points: points per series sent to the browser.

    Example:
        >>> panel = JobPanel(tfk8s_jupyter.attach("mnist-ps"))   # doctest: +SKIP
        >>> panel.show()                                         # doctest: +SKIP
    """

    def __init__(
        self,
        job=None,
        *,
        state: JobState | None = None,
        interval: float = 0.525,
        max_points: int = 2000,
        start: bool = True,
    ):
        import bqplot as bq

        self.job = job
        self.state: JobState = state if state is not None else job.state
        self.interval = interval
        self.max_points = max_points
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._rendered_version = -1
        self._lines_key = None
        self._log_shown = None  # the LogTail on screen
        self._log_followed: str | None = None  # the replica whose log this panel follows
        self._panel_error: str | None = None
        self._snapshot = None  # (display handle, what it showed) of the static face beside the panel
        self._final = False
        self._last_sent: dict[str, float] = {}
        self._plotted = 0  # distinct x values on the curve
        self._done_callbacks: list[Callable[[JobPanel], None]] = []
        self.messages = 0  # widget messages this panel's updates sent (for tests and benchmarks)
        self.last_update: float | None = None  # time.time() of the last curve update

        # header
        self.title = W.HTML(
            f"<b style='white-space:nowrap'>{html.escape(self.state.name)}</b>",
            layout=W.Layout(width="auto", flex="0 0 auto"),
        )
        self.title.add_class("tfk8s-job-title")  # the side of JupyterLab reads the job's name here
        self.badge = W.Label("pending")
        self.badge.add_class("tfk8s-status-badge")
        self.badge.add_class("tfk8s-phase-pending")
        bg, fg = PHASE_COLORS["pending"]
        self.badge.style.background = bg
        self.badge.style.text_color = fg
        # sized by its text: "succeeded" (or "last known: succeeded") is never clipped
        self.badge.layout = W.Layout(padding="0 8px", margin="0 6px", width="auto", flex="0 0 auto")
        self.info = W.HTML("", layout=W.Layout(flex="1 1 auto", min_width="0"))
        self.info.add_class("tfk8s-header")
        self.stop_button = W.Button(
            description="Stop", icon="stop", button_style="warning", tooltip="Stop every replica"
        )
        self.stop_button.layout = W.Layout(
            width="auto", min_width="90px", margin="0 0 0 auto", flex="0 0 auto"
        )
        self.stop_button.add_class("tfk8s-stop-button")
        self.stop_button.on_click(self._on_stop)
        header = W.HBox([self.title, self.badge, self.info, self.stop_button])
        header.layout = W.Layout(align_items="center", width="100%")

        # curve
        self._xscale = bq.LinearScale()
        self._yscale_lin = bq.LinearScale()
        self._yscale_log = bq.LogScale()
        self.lines = bq.Lines(
            x=[],
            y=[],
            scales={"x": self._xscale, "y": self._yscale_lin},
            labels=[],
            display_legend=True,
            colors=PALETTE,
            stroke_width=1.5,
        )
        self._xaxis = bq.Axis(scale=self._xscale, label="step", grid_lines="dashed")
        self._yaxis = bq.Axis(scale=self._yscale_lin, side="left", grid_lines="dashed", tick_format=".3~g")
        self.figure = bq.Figure(
            marks=[self.lines],
            axes=[self._xaxis, self._yaxis],
            legend_location="right",  # the top right is where the figure shows its toolbar
            animation_duration=0,
            fig_margin={"top": 20, "bottom": 40, "left": 60, "right": 20},
            layout=W.Layout(width="100%", height="280px"),
        )
        self.figure.add_class("tfk8s-curve")
        self.kind = W.ToggleButtons(options=[("per step", "step"), ("per epoch", "epoch")], value="step")
        self.kind.style.button_width = "92px"
        self.kind.observe(lambda _: self._render_lines_now(), "value")
        self.log_scale = W.ToggleButton(value=False, description="log y", tooltip="Logarithmic y axis")
        self.log_scale.layout = W.Layout(width="auto")
        self.log_scale.observe(self._on_log_scale, "value")
        self.workers = WorkerControls(job, self._wake.set)  # −/+ call job.scale (panel_workers.py)
        controls = W.HBox([self.kind, self.log_scale, self.workers])

        # replicas, logs, error
        self.table = W.HTML(replica_table_html(None))
        self.table.add_class("tfk8s-replica-table")
        self.replica_chooser = W.Dropdown(options=[], description="logs of", layout=W.Layout(width="220px"))
        self.replica_chooser.observe(self._on_replica_chosen, "value")
        self.log_all = W.ToggleButton(
            value=False,
            description="show all",
            tooltip="Also TensorFlow's start-up lines (absl, oneDNN, CUDA), folded by default",
            layout=W.Layout(width="auto"),
        )
        self.log_all.add_class("tfk8s-log-show-all")
        self.log_all.observe(self._on_log_all, "value")
        self.log_tail = W.HTML(f"{_LOG_PRE}</pre>")
        self.log_tail.add_class("tfk8s-log-tail")
        self.error_box = W.HTML("", layout=W.Layout(display="none"))
        self.error_box.add_class("tfk8s-error")
        details = W.VBox([self.table, W.VBox([W.HBox([self.replica_chooser, self.log_all]), self.log_tail])])

        super().__init__([header, controls, self.figure, self.error_box, details])
        self.add_class("tfk8s-job-panel")
        self.layout = W.Layout(border="1px solid #ddd", padding="6px", width="100%")

        self._observer = self._on_state_changed
        self.state.observe(self._observer)
        self.render(budget=None)  # initial state: no messages before display
        if start:
            self.start()

    # display -------------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs)
        if isinstance(data, tuple):
            data = data[0]
        data = dict(data or {})
        data["text/plain"] = progress_text(self.state)
        return data

    def show(self, summary: bool = True) -> None:
        """Display the panel, plus a summary output that fills in when the job ends."""
        from IPython.display import display

        display(self)
        if summary:
            # Beside the widget, a static face saved with the notebook: what was last known while the
            # job runs (updated at phase and epoch changes), then the final summary.
            handle = display(snapshot_bundle(self.state), raw=True, display_id=True)
            self._snapshot = (handle, self._snapshot_key())

            def _fill(panel: JobPanel) -> None:
                if handle is not None:
                    handle.update(Summary(panel.state, hint=True))

            self.on_done(_fill)

    def _snapshot_key(self) -> tuple:
        status = self.state.status
        return (status.phase if status else None, self.state.epoch, bool(status and status.replicas))

    def _update_snapshot(self) -> None:
        if self._snapshot is None or self._final:
            return
        handle, key = self._snapshot
        now = self._snapshot_key()
        if now != key and handle is not None:
            self._snapshot = (handle, now)
            handle.update(snapshot_bundle(self.state), raw=True)

    def on_done(self, callback: Callable[[JobPanel], None]) -> None:
        """Call ``callback(panel)`` once, after the final render of a finished job."""
        if self._final:
            callback(self)
        else:
            self._done_callbacks.append(callback)

    # lifecycle -----------------------------------------------------------------------------------
    def start(self) -> JobPanel:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name=f"tfk8s-panel-{self.state.name}", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        if hasattr(self, "_closed"):
            self._closed.set()
            self._wake.set()
        observer = getattr(self, "_observer", None)
        if observer is not None:
            self.state.unobserve(observer)
            self._follow_log(None)
        super().close()

    @property
    def done(self) -> bool:
        return self._final

    def _loop(self) -> None:
        last = 0.0
        while not self._closed.is_set():
            # Ticks start at least `interval` apart, so any 1-second window holds at most
            # ceil(1 / interval) ticks of MESSAGES_PER_TICK messages each.
            self._closed.wait(max(0.0, last + self.interval - time.monotonic()))
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._closed.is_set():
                return
            last = time.monotonic()
            try:
                status = self.state.status
                if status is not None and status.done and self._final_ready():
                    self.flush()
                    return
                self.render(budget=MESSAGES_PER_TICK)
            except Exception as e:  # never die silently: show it
                self._show_error(f"panel update failed: {e}")

    def _final_ready(self) -> bool:
        """The monitor has delivered everything (or gave up) once its thread ended."""
        mon = getattr(self.job, "_monitor", None) if self.job is not None else None
        done = getattr(mon, "done", None)
        if done is not None:
            done.wait(timeout=SETTLE_SECONDS + 2.0)  # its last looks at an ended job that is settling
        return True

    def flush(self) -> None:
        """Render everything now (the final state of a finished job) and fire the done callbacks."""
        status = self.state.status
        if status is not None and status.done:
            with self._lock:
                self._update_table(time.time())  # the log chooser knows the replicas
            replica = self.replica_chooser.value
            if replica:  # the tail as the job ended, fetched by the monitor
                self.state.refresh_log(replica).wait(FINAL_LOG_WAIT_SECONDS)
        with self._lock:
            self.render(budget=None)
            if status is not None and status.done and not self._final:
                self._final = True
                self.stop_button.disabled = True
                callbacks, self._done_callbacks = self._done_callbacks, []
                for cb in callbacks:
                    try:
                        cb(self)
                    except Exception:
                        pass

    def mark_gone(self, why: str) -> None:
        """The job can no longer be followed (deleted, or its kernel is gone): keep the last known state
        on screen, say so and how to follow it again, and disable what can no longer act."""
        self._closed.set()
        self._wake.set()
        with self._lock:
            self.render(budget=None)
            self._final = True
            self.stop_button.disabled = True
            self.stop_button.description = "Stop"
            self.workers.disable()
            name = html.escape(self.state.name)
            note = f"<i>job {name} {html.escape(why)}"
            if not why.startswith("deleted"):
                note += f"; %tfk8s_attach {name} follows it again"
            self._set(self.info, value=self.info.value + f" · {note}</i>")
            self.add_class("tfk8s-gone")

    # rendering -----------------------------------------------------------------------------------
    def _set(self, widget: W.Widget, **traits) -> bool:
        """Set traits in one message; return whether anything changed."""
        changed = {k: v for k, v in traits.items() if not _same(getattr(widget, k), v)}
        if not changed:
            return False
        with widget.hold_sync():
            for k, v in changed.items():
                setattr(widget, k, v)
        self.messages += 1
        return True

    def render(self, budget: int | None = MESSAGES_PER_TICK) -> int:
        """Bring the widgets up to date; send at most ``budget`` messages (all when ``None``)."""
        with self._lock:
            sent = 0
            now = time.time()
            # Phase, error and curve first; the header, table and log tail take turns for what is left
            # (least recently sent first), so a busy curve never starves them.
            rotating = {
                "info": lambda: self._update_info(now),
                "table": lambda: self._update_table(now),
                "log": self._update_log,
            }
            order = sorted(rotating, key=lambda k: self._last_sent.get(k, 0.0))
            updates = [
                ("badge", self._update_badge),
                ("workers", lambda: self.workers.update(self.state.status, self._set)),
                ("error", self._update_error),
                ("lines", self._update_lines),
                *((k, rotating[k]) for k in order),
            ]
            for key, update in updates:
                if budget is not None and sent >= budget:
                    break
                n = update()
                if n:
                    self._last_sent[key] = time.monotonic()
                sent += n
            self._update_snapshot()
            return sent

    def _update_badge(self) -> int:
        status = self.state.status
        phase = status.phase if status else "pending"
        if self.badge.value == phase:
            return 0
        bg, fg = PHASE_COLORS.get(phase, PHASE_COLORS["pending"])
        classes = [c for c in self.badge._dom_classes if not c.startswith("tfk8s-phase-")]
        self._set(self.badge, value=phase, _dom_classes=(*classes, f"tfk8s-phase-{phase}"))
        self._set(self.badge.style, background=bg, text_color=fg)
        if phase == "failed":
            self.add_class("tfk8s-danger")
            self.layout.border = "2px solid #dc3545"
        if status is not None and status.done:
            self.stop_button.disabled = True
        return 2

    def _update_error(self) -> int:
        error = self.state.error or self._panel_error
        status = self.state.status
        if not error or (status is not None and status.phase == "succeeded" and not self.state.error):
            return 0
        value = (
            "<div style='color:#842029;background:#f8d7da;border:1px solid #f5c2c7;padding:6px;"
            f"border-radius:4px'><b>Error</b><pre style='white-space:pre-wrap;margin:4px 0 0 0'>"
            f"{html.escape(error)}</pre></div>"
        )
        if self.error_box.value == value:
            return 0
        self._set(self.error_box, value=value)
        self.error_box.layout.display = "block"
        return 1

    def _current_series(self) -> tuple[str, dict]:
        kind = self.kind.value
        series = self.state.series(kind, limit=self.max_points)
        if not series and kind == "step":
            epoch = self.state.series("epoch", limit=self.max_points)
            if epoch:
                return "epoch", epoch
        return kind, series

    def _update_lines(self, force: bool = False) -> int:
        version = self.state.version
        key = (version, self.kind.value)
        if key == self._lines_key and not force:
            return 0
        self._lines_key = key
        kind, series = self._current_series()
        names, x, ys = merge_series(series, self.max_points)
        if not names:
            return 0
        if kind == "epoch":
            x = [v + 1 for v in x]  # epochs as Keras prints them: 1, 2, 3
        plotted = len(series[names[0]]["x"]) if len(names) == 1 else len(set(x))
        # Whole-number ticks where the axis would otherwise tick 0.1 ... 0.9 (few epochs, the first
        # steps); past that the automatic ticks are whole numbers already and stay put (no messages).
        ticks = integer_ticks(x) if kind == "epoch" or max(x) - min(x) < 10 else []
        if len(x) == 1:
            # bqplot squeezes arrays: one point would become a 0-d array (or m metrics one m-point line).
            x, ys = x * 2, [row * 2 for row in ys]
        import numpy as np

        label = "epoch" if kind == "epoch" else "step"
        axis = {"label": label, "tick_values": np.asarray(ticks, dtype=float), "tick_format": "d"}
        sent = int(self._set(self._xaxis, **axis))
        changed = self._set(
            self.lines,
            x=np.asarray(x, dtype=float),
            y=np.asarray(ys, dtype=float),
            labels=names,
            # a sparse series (a short job, or per epoch) shows its points, not only the lines between them
            marker="circle" if plotted <= SPARSE_POINTS else None,
        )
        if changed:
            self.last_update = time.time()
            self._plotted = plotted
        return sent + int(changed)

    def _render_lines_now(self) -> None:
        with self._lock:
            self._update_lines(force=True)

    def _update_info(self, now: float) -> int:
        status = self.state.status
        parts = []
        if status is not None:
            parts.append(f"{html.escape(status.backend)} · {html.escape(status.strategy)}")
            launch = launch_text(status)
            if launch:
                parts.append(f'<span class="tfk8s-launch">{html.escape(launch)}</span>')
        parts.append(f"elapsed {format_duration(elapsed(status, now))}")
        if self.state.epoch is not None:
            parts.append(f"epoch {epoch_shown(self.state)}")
        if self.state.step is not None:
            parts.append(f"step {self.state.step}")
        for k, v in sorted(self.state.last_values.items())[:4]:
            parts.append(f"{html.escape(k)} {format_value(v)}")
        if self.state.checkpoints:
            parts.append(plural(self.state.checkpoints, "checkpoint"))
        if status is not None and status.message and status.phase != "failed":
            parts.append(f"<i>{html.escape(status.message[:200])}</i>")
        # For tests and tools reading the page: how many points the curve holds (the SVG path hides it).
        marker = f'<span class="tfk8s-points" data-points="{self._plotted}" hidden></span>'
        value = "<span style='color:#555'>" + " · ".join(parts) + "</span>" + marker + notes_html(self.state)
        return int(self._set(self.info, value=value))

    def _update_table(self, now: float) -> int:
        status = self.state.status
        sent = int(self._set(self.table, value=replica_table_html(status, now)))
        if status is not None and status.replicas:
            names = [r.name for r in status.replicas]
            if list(self.replica_chooser.options) != names:
                current = self.replica_chooser.value
                default = next((n for n in names if n in ("chief-0", "worker-0")), names[0])
                with self.replica_chooser.hold_sync():
                    self.replica_chooser.options = names
                    self.replica_chooser.value = current if current in names else default
                sent += 1
        return sent

    def _update_log(self) -> int:
        tail = self.state.log_tail(self.replica_chooser.value)
        if tail is None or tail is self._log_shown:
            return 0
        self._log_shown = tail
        if tail.error is None:
            text = clean_log(tail.text, show_all=self.log_all.value)
        else:
            text = f"(no log for {tail.replica}: {tail.error})"
        value = f"{_LOG_PRE}{html.escape(text) or '<i>(no output yet)</i>'}</pre>"
        return int(self._set(self.log_tail, value=value))

    # state and user actions ----------------------------------------------------------------------
    def _on_state_changed(self, _state: JobState) -> None:
        if self._final:  # the update loop has ended; a log tail chosen afterwards still shows
            with self._lock:
                self._update_log()
        else:
            self._wake.set()

    def _follow_log(self, replica: str | None) -> None:
        """Follow ``replica``'s log tail through the state (the monitor fetches it), not the previous one."""
        previous, self._log_followed = self._log_followed, replica
        if previous:
            self.state.unfollow_log(previous)
        if replica:
            self.state.follow_log(replica)

    def _on_replica_chosen(self, change) -> None:
        if change["new"]:
            self._follow_log(change["new"])

    def _on_log_all(self, _change) -> None:
        with self._lock:
            self._log_shown = None  # the same tail, shown again folded or whole
            self._update_log()

    def _on_log_scale(self, change) -> None:
        scale = self._yscale_log if change["new"] else self._yscale_lin
        self.lines.scales = {"x": self._xscale, "y": scale}
        self._yaxis.scale = scale

    def _on_stop(self, _button=None) -> None:
        if self.job is None:
            return
        self.stop_button.disabled = True
        self.stop_button.description = "Stopping…"

        def stop() -> None:
            try:
                self.job.stop()
                self.stop_button.description = "Stopped"
            except Exception as e:
                self._show_error(f"stop failed: {e}")
                self.stop_button.description = "Stop"
                self.stop_button.disabled = False
            self._wake.set()

        threading.Thread(target=stop, name=f"tfk8s-stop-{self.state.name}", daemon=True).start()

    def _show_error(self, message: str) -> None:
        self._panel_error = message
        self._update_error()


def _same(a, b) -> bool:
    try:
        import numpy as np

        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            a, b = np.asarray(a), np.asarray(b)
            return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    except (TypeError, ValueError):
        return False
    return a == b
