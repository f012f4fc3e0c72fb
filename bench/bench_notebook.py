"""Numbers of the notebook face, measured in one run on this machine (real TensorFlow, local backend).

    .venv/bin/python bench/bench_notebook.py [--quick]

Prints:
  1. cell return time of ``%%tfk8s_train --ps 1 --workers 2`` (median of 10; target < 0.5 s);
  2. ``1+1`` cell latency while a job streams metrics at full rate (p95; target < 50 ms);
  3. metric latency from the batch end in the replica to the widget model update (p95; target < 1 s);
  4. widget messages per second per panel (max over any 1-second window; target <= 4);
  5. points per series sent to the browser (target <= 2,000), with a synthetic 100,000-point stream too;
  6. kernel-side memory for 1,000,000 metric points (target < 50 MB).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("TFK8S_HOME", tempfile.mkdtemp(prefix="tfk8s-bench-"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ipywidgets as W  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402
from traitlets.config import Config  # noqa: E402

CONTEXT = """
import numpy as np
LR = 0.01

def make_xy(n=2048):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = (x @ np.linspace(-1, 1, 8, dtype="float32").reshape(8, 1)).astype("float32")
    return x, y

def build_model(lr):
    import tensorflow as tf
    tf.keras.utils.set_random_seed(7)
    model = tf.keras.Sequential([tf.keras.Input(shape=(8,)), tf.keras.layers.Dense(16, activation="relu"),
                                 tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.Adam(lr), loss="mse")
    return model
"""

TRAIN = """\
import tensorflow as tf
x, y = make_xy()
ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(64)
model = build_model(LR)
model.fit(ds, epochs={epochs}, steps_per_epoch={steps})
"""


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def new_shell() -> InteractiveShell:
    cfg = Config()
    cfg.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=cfg)
    shell.run_line_magic("load_ext", "tfk8s_jupyter")
    shell.run_line_magic("config", "TFK8s.frontend = 'widgets'")
    shell.run_cell(CONTEXT, store_history=True)
    return shell


def magics_of(shell):
    return shell.magics_manager.registry["TFK8sMagics"]


class MessageCounter:
    """Counts every widget message (comm send) by widget."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, int]] = []
        self._original = W.Widget._send
        counter = self

        def counting(widget, msg, buffers=None):
            counter.sent.append((time.monotonic(), id(widget)))
            return counter._original(widget, msg, buffers)

        W.Widget._send = counting

    def rate(self, widgets: set[int], start: float, end: float) -> tuple[float, int]:
        times = sorted(t for t, w in self.sent if w in widgets and start <= t <= end)
        mean = len(times) / max(end - start, 1e-9)
        window = max((sum(1 for u in times if t <= u < t + 1.0) for t in times), default=0)
        return mean, window


def panel_widgets(panel) -> set[int]:
    out, stack = set(), [panel]
    while stack:
        w = stack.pop()
        if id(w) in out:
            continue
        out.add(id(w))
        for name in w.keys:
            value = getattr(w, name, None)
            values = (
                value
                if isinstance(value, (list, tuple))
                else (value.values() if isinstance(value, dict) else [value])
            )
            stack.extend(v for v in values if isinstance(v, W.Widget))
    return out


def bench_cell_return(shell, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        shell.run_cell(
            "%%tfk8s_train --ps 1 --workers 2\n" + TRAIN.format(epochs=1, steps=10), store_history=True
        )
        times.append(time.perf_counter() - start)
        job = shell.user_ns["_tfk8s_job"]
        job.stop()
        for panel in magics_of(shell).panels.get(job.name, []):
            panel.close()
    return times


def bench_streaming(shell, counter: MessageCounter, epochs: int, steps: int) -> dict:
    shell.run_cell(
        "%%tfk8s_train --workers 2 --metric-interval 0 --name bench-stream\n"
        + TRAIN.format(epochs=epochs, steps=steps),
        store_history=True,
    )
    job = shell.user_ns["_tfk8s_job"]
    (panel,) = magics_of(shell).panels[job.name]
    step_time: dict[float, float] = {}
    latencies: list[float] = []

    def on_state(state) -> None:
        p = state.last_point
        if p is not None and p.get("kind") == "step" and p.get("step") is not None and p.get("t"):
            step_time.setdefault(float(p["step"]), float(p["t"]))

    def on_lines(change) -> None:
        x = change["new"]
        if x is not None and len(x):
            t = step_time.get(float(x[-1]))
            if t is not None:
                latencies.append(time.time() - t)

    job.state.observe(on_state)
    panel.lines.observe(on_lines, "x")
    while job.phase == "pending" or not job.state.n_points:
        if job.status.done:
            raise SystemExit(f"the streaming job ended early: {job.phase}; {job.logs(tail=20)}")
        time.sleep(0.1)
    stream_start = time.monotonic()
    cell_latencies = []
    while not job.status.done:
        with contextlib.redirect_stdout(io.StringIO()):
            start = time.perf_counter()
            shell.run_cell("1+1")
            cell_latencies.append(time.perf_counter() - start)
        time.sleep(0.05)
    stream_end = time.monotonic()
    magics_of(shell).wait_for(job, timeout=120)
    mean, window = counter.rate(panel_widgets(panel), stream_start, stream_end)
    return {
        "phase": job.phase,
        "points": job.state.n_points,
        "stream_seconds": stream_end - stream_start,
        "cell_latencies": cell_latencies,
        "metric_latencies": latencies,
        "messages_mean": mean,
        "messages_window": window,
        "points_per_series": len(panel.lines.x),
    }


def bench_synthetic(counter: MessageCounter, total: int = 100_000) -> dict:
    from tfk8s_jupyter.backends.base import JobStatus
    from tfk8s_jupyter.job_panel import JobPanel
    from tfk8s_jupyter.monitor import JobState

    state = JobState("synthetic")
    state.set_status(JobStatus("synthetic", "local", "parameter_server", phase="running"))
    panel = JobPanel(state=state)
    start = time.monotonic()
    for first in range(1, total + 1, 1000):
        state.add_events(
            [
                {
                    "v": 1,
                    "type": "metric",
                    "run": "r",
                    "seq": s,
                    "t": time.time(),
                    "epoch": 0,
                    "step": s,
                    "values": {"loss": 1.0 / s, "accuracy": 1 - 1.0 / s},
                }
                for s in range(first, first + 1000)
            ]
        )
        time.sleep(0.02)
    time.sleep(1.0)
    end = time.monotonic()
    mean, window = counter.rate(panel_widgets(panel), start, end)
    n = len(panel.lines.x)
    last = panel.lines.x[-1]
    panel.close()
    return {"points_per_series": n, "last_step": last, "messages_mean": mean, "messages_window": window}


def bench_memory(points: int = 1_000_000) -> float:
    from tfk8s_jupyter.monitor import JobState

    tracemalloc.start()
    state = JobState("memory")
    base = tracemalloc.get_traced_memory()[0]
    for first in range(1, points + 1, 10_000):
        state.add_events(
            [
                {
                    "v": 1,
                    "type": "metric",
                    "run": "r",
                    "seq": s,
                    "t": 0.0,
                    "epoch": s // 1000,
                    "step": s,
                    "values": {"loss": 1.0 / s, "accuracy": 1 - 1.0 / s},
                }
                for s in range(first, first + 10_000)
            ]
        )
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert state.n_points == points
    return used / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and a shorter stream")
    args = parser.parse_args()
    os.chdir(tempfile.mkdtemp(prefix="tfk8s-bench-notebook-"))  # the notebook's directory
    runs = 3 if args.quick else 10
    counter = MessageCounter()
    shell = new_shell()

    print(f"tfk8s notebook benchmark (TFK8S_HOME={os.environ['TFK8S_HOME']}, {os.cpu_count()} cores)")
    with contextlib.redirect_stdout(io.StringIO()):
        times = bench_cell_return(shell, runs)
    print(
        f"1. cell return, 1 ps + 2 workers: median {statistics.median(times) * 1000:.0f} ms over {runs} "
        f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}); target < 500 ms"
    )
    with contextlib.redirect_stdout(io.StringIO()):
        s = bench_streaming(shell, counter, epochs=3 if args.quick else 5, steps=100 if args.quick else 400)
    print(
        f"   streaming job: {s['phase']}, {s['points']} metric points in {s['stream_seconds']:.1f} s "
        f"(metric interval 0: every batch)"
    )
    print(
        f"2. '1+1' cell while the job streams: p95 {percentile(s['cell_latencies'], 0.95) * 1000:.1f} ms, "
        f"median {statistics.median(s['cell_latencies']) * 1000:.1f} ms over {len(s['cell_latencies'])}; "
        "target p95 < 50 ms"
    )
    lat = s["metric_latencies"]
    print(
        f"3. metric latency batch end -> widget model: p95 {percentile(lat, 0.95) * 1000:.0f} ms, "
        f"median {statistics.median(lat) * 1000:.0f} ms over {len(lat)} updates; target p95 < 1000 ms"
    )
    syn = bench_synthetic(counter)
    print(
        f"4. widget messages per panel: real job max {s['messages_window']}/s in any second (mean "
        f"{s['messages_mean']:.2f}/s); 100,000-point stream max {syn['messages_window']}/s (mean "
        f"{syn['messages_mean']:.2f}/s); target <= 4/s"
    )
    print(
        f"5. points per series sent: real job {s['points_per_series']}; 100,000-point stream "
        f"{syn['points_per_series']} (last step {syn['last_step']:.0f}); target <= 2000"
    )
    print(f"6. kernel memory for 1,000,000 metric points: {bench_memory():.2f} MB; target < 50 MB")


if __name__ == "__main__":
    main()
