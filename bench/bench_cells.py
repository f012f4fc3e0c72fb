"""Custom-loop cells under tfk8s against the same cell hand-launched, side by side in one run.

    .venv/bin/python bench/bench_cells.py [--rounds 3] [--steps 600] [--latency-steps 3000]

The cell is ``multi_worker_with_ctl``'s shape: its own ``MultiWorkerMirroredStrategy``,
``distribute_datasets_from_function``, ``strategy.run`` / ``reduce``, and a metric every step. Two workers.
It prints:

* **steps/s ratio** = tfk8s ÷ hand (target >= 0.97): the cell calls ``report(step=..., loss=...)`` every
  step and times its own steps after a warm-up. Hand: ``bench/hand_cell.py`` per worker (TF_CONFIG by hand,
  the cell as a script; ``report`` is a no-op there). tfk8s: ``tk.submit`` on the local backend. Rounds
  alternate which side runs first; the ratio is paired per round, then the median.
* **metric latency** (target p95 <= 1 s): two tfk8s runs whose cell calls ``tf.summary.scalar`` every step,
  eagerly in its loop, then inside its ``tf.function`` step; the cell records the wall time of each step,
  the bench records when each step's point appears in the job's ``JobState`` (an observer on the
  monitor); latency = appearance - call, over every point that appeared (the others were throttled away
  by ``metric_interval``, 1 s by default).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from handlaunch import HandLaunch  # noqa: E402

import tfk8s_jupyter as tk  # noqa: E402

CELL = """\
import json, os, time
import numpy as np
import tensorflow as tf
from tfk8s_jupyter import report

STEPS, WARMUP, GLOBAL_BATCH, SUMMARY = {steps}, 50, 64, {summary!r}
rng = np.random.default_rng(7)
x = rng.normal(size=(8192, 32)).astype("float32")
y = (x @ rng.normal(size=(32, 1)).astype("float32")).astype("float32")
strategy = tf.distribute.MultiWorkerMirroredStrategy()
is_chief = strategy.cluster_resolver.task_id == 0

def dataset_fn(input_context):
    batch = input_context.get_per_replica_batch_size(GLOBAL_BATCH)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(8192, seed=7).repeat().batch(batch)
    return ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)

with strategy.scope():
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(32,)),
        tf.keras.layers.Dense(64, activation="relu"),
        tf.keras.layers.Dense(64, activation="relu"),
        tf.keras.layers.Dense(1),
    ])
    optimizer = tf.keras.optimizers.Adam(0.005)
iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))

@tf.function
def train_step(iterator):
    def step_fn(inputs):
        xb, yb = inputs
        with tf.GradientTape() as tape:
            per_example = tf.reduce_mean(tf.square(model(xb, training=True) - yb), axis=-1)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=GLOBAL_BATCH)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss
    loss = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(step_fn, args=(next(iterator),)), axis=None)
    if SUMMARY == "in_function":
        tf.summary.scalar("loss", loss, step=optimizer.iterations)
    return loss

calls = {{}}
for step in range(1, STEPS + 1):
    if step == WARMUP + 1:
        started = time.perf_counter()
    loss = train_step(iterator)
    calls[step] = time.time()
    if SUMMARY == "eager":
        tf.summary.scalar("loss", loss, step=step)
    elif SUMMARY == "report":
        report(step=step, loss=loss)
elapsed = time.perf_counter() - started
if is_chief:
    print("BENCH " + json.dumps({{"steps_per_s": (STEPS - WARMUP) / elapsed, "calls": calls}}), flush=True)
"""


def _bench_line(text: str) -> dict:
    line = next(line for line in text.splitlines() if line.startswith("BENCH "))
    return json.loads(line[len("BENCH ") :])


def run_hand(steps: int) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-cells-hand-") as tmp:
        h = HandLaunch(
            CELL.format(steps=steps, summary="report"),
            "multi_worker_mirrored",
            2,
            Path(tmp),
            command=[sys.executable, str(REPO / "bench" / "hand_cell.py")],
        ).start()
        try:
            for name in ("worker-0", "worker-1"):
                assert h.wait(name, 600) == 0, h.tail(name)
            return _bench_line(h.stdout("worker-0"))["steps_per_s"]
        finally:
            h.teardown()


def run_tfk8s(steps: int, summary: str) -> tuple[float, list[float]]:
    seen: dict[int, float] = {}
    job = tk.submit(CELL.format(steps=steps, summary=summary), workers=2, setup_timeout=300)
    lock = threading.Lock()

    def observe(state) -> None:
        now = time.time()
        steps = state.series("step").get("loss", {}).get("x", [])
        with lock:
            for step in steps:
                seen.setdefault(int(step), now)

    job.state.observe(observe)
    try:
        phase = job.wait(timeout=900)
        assert phase == "succeeded", job.status.message
        bench = _bench_line(job.logs("worker-0"))
        time.sleep(1.0)  # the monitor's last refresh
        calls = {int(k): v for k, v in bench["calls"].items()}
        with lock:
            latencies = [seen[s] - calls[s] for s in seen if s in calls]
        return bench["steps_per_s"], latencies
    finally:
        job.monitor().stop()
        job.delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--latency-steps", type=int, default=3000, help="steps of the latency run")
    args = parser.parse_args()
    ratios = []
    for r in range(args.rounds):
        if r % 2 == 0:
            hand = run_hand(args.steps)
            ours, _ = run_tfk8s(args.steps, "report")
        else:
            ours, _ = run_tfk8s(args.steps, "report")
            hand = run_hand(args.steps)
        ratios.append(ours / hand)
        print(
            f"round {r}: hand {hand:.1f} steps/s, tfk8s {ours:.1f} steps/s, ratio {ours / hand:.3f}",
            flush=True,
        )
    if ratios:
        print(f"steps/s ratio (median of {len(ratios)}): {statistics.median(ratios):.3f}  (target >= 0.97)")
    for where in ("eager", "in_function"):
        _, latencies = run_tfk8s(args.latency_steps, where)
        latencies.sort()
        p95 = latencies[max(0, int(round(0.95 * len(latencies))) - 1)] if latencies else float("nan")
        print(
            f"tf.summary.scalar ({where.replace('_', ' ')}) -> JobState latency over {len(latencies)} points: "
            f"p50 {statistics.median(latencies):.3f} s, p95 {p95:.3f} s  (target p95 <= 1 s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
