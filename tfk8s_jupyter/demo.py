"""``make demo``: train a small seeded Keras model with 1 ps + 2 workers + a chief on local processes.

Prints live progress (epoch, step, loss) while the job trains and a summary at the end (status, wall
time, final loss, per-replica exit codes). Exits 0 when the job succeeded, 1 otherwise, 130 on Ctrl-C
(which stops the job first).

Run: ``python -m tfk8s_jupyter.demo [--ps 1] [--workers 2] [--epochs 5] [--steps 150]``.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import threading
import time

from .backends.base import JobStatus
from .backends.local import LocalBackend

CELL = """\
import numpy as np
import tensorflow as tf

# Synthetic regression data, seeded: y = x @ w + noise.
rng = np.random.default_rng(42)
x = rng.normal(size=(8192, 16)).astype("float32")
w = rng.normal(size=(16, 1)).astype("float32")
y = (x @ w + 0.05 * rng.normal(size=(8192, 1))).astype("float32")

tf.keras.utils.set_random_seed(42)
ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(8192, seed=42).repeat().batch(64)
model = tf.keras.Sequential([
    tf.keras.Input(shape=(16,)),
    tf.keras.layers.Dense(32, activation="relu"),
    tf.keras.layers.Dense(32, activation="relu"),
    tf.keras.layers.Dense(1),
])
model.compile(optimizer=tf.keras.optimizers.Adam(0.005), loss="mse", metrics=["mae"])
model.fit(ds, epochs={epochs}, steps_per_epoch={steps})
"""


def _fmt(values: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in values.items() if isinstance(v, (int, float)))


class Progress:
    """Prints one line per status change, per epoch end, and per-step points at most every ``every`` s."""

    def __init__(self, epochs: int, steps: int, started: float, every: float = 1.0):
        self.epochs, self.steps, self.started, self.every = epochs, steps, started, every
        self.last_print = 0.0
        self.last_summary = None
        self.final_values: dict = {}

    def _line(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def on_status(self, status: JobStatus) -> None:
        counts = ", ".join(f"{n} {state}" for state, n in sorted(status.counts().items()))
        summary = f"job {status.phase}: replicas {counts}" + (
            f" — {status.message}" if status.message else ""
        )
        if summary != self.last_summary:
            self.last_summary = summary
            self._line(summary)

    def on_events(self, events: list[dict]) -> None:
        for e in events:
            kind = e.get("type")
            if kind == "start":
                self._line(
                    f"training started on {e.get('role', '?')}-{e.get('index', 0)} ({e.get('keras', 'keras')})"
                )
            elif kind == "metric":
                now = time.monotonic()
                if now - self.last_print >= self.every:
                    self.last_print = now
                    self._line(
                        f"epoch {e.get('epoch', 0) + 1}/{self.epochs}  step {e.get('step')}/{self.epochs * self.steps}"
                        f"  {_fmt(e.get('values') or {})}"
                    )
            elif kind == "epoch":
                self.final_values = e.get("values") or self.final_values
                self._line(f"epoch {e.get('epoch', 0) + 1}/{self.epochs} done  {_fmt(self.final_values)}")
            elif kind == "checkpoint" and e.get("action") == "restored":
                self._line(f"resumed from the checkpoint of epoch {e.get('epoch')}")
            elif kind == "error":
                self._line(f"error: {e.get('message')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfk8s_jupyter.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--ps", type=int, default=1, help="parameter servers (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="workers (default 2)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=150, help="steps per epoch")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before the demo gives up")
    args = parser.parse_args(argv)

    from .api import submit
    from .config import current_config

    # One job and gone: no warm pool to refill and no replicas kept for a next run this process never makes
    config = current_config()
    config.warm_pool, config.keep_warm = 0, 0
    code = CELL.format(epochs=args.epochs, steps=args.steps)
    name = f"demo-{secrets.token_hex(3)}"
    started = time.monotonic()
    job = submit(
        code,
        ps=args.ps,
        workers=args.workers,
        name=name,
        backend="local",
        metric_interval=0.5,
        setup_timeout=240,
    )
    backend: LocalBackend = job.backend  # type: ignore[assignment]
    spec = job.spec
    print(
        f"submitted {name}: {spec.strategy}, {', '.join(spec.replica_names)} (record: {backend.root / name})",
        flush=True,
    )
    progress = Progress(args.epochs, args.steps, started)
    stop = threading.Event()
    timer = threading.Timer(args.timeout, stop.set)
    timer.daemon = True
    timer.start()
    try:
        backend.watch(name, progress.on_status, progress.on_events, stop)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the job ...", flush=True)
        job.stop()
        return 130
    finally:
        timer.cancel()
    status = job.status
    if not status.done:
        print(f"the job is still {status.phase} after {args.timeout:g} s; stopping it.", flush=True)
        status = job.stop()
    wall = (status.finished or time.time()) - status.created
    print("\nsummary", flush=True)
    print(f"  job          {name}", flush=True)
    print(f"  status       {status.phase}" + (f" — {status.message}" if status.message else ""), flush=True)
    print(f"  wall time    {wall:.1f} s", flush=True)
    print(f"  final loss   {progress.final_values.get('loss', float('nan')):.4f}", flush=True)
    print("  replicas     " + "  ".join(f"{r.name}: exit {r.exit_code}" for r in status.replicas), flush=True)
    restarts = sum(r.restarts for r in status.replicas)
    if restarts:
        print(f"  restarts     {restarts}", flush=True)
    print(f"  logs         {backend.root / name / 'logs'}", flush=True)
    return 0 if status.phase == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
