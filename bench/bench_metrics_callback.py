"""What the runner's metrics callback costs per batch, against the batch time (real TensorFlow).

    .venv/bin/python bench/bench_metrics_callback.py [--epochs 3] [--steps 100]

Each case runs in its own process: a tiny MLP (batch 64) fit for ``epochs x steps`` with the reporting
replica's ``TFK8sMetrics`` callback (``replica_callbacks.metrics_callback``, default metric interval 1 s,
protocol lines authenticated and written to /dev/null) and a timing callback before it. Cases: Keras 3
and tf_keras in one process, and tf_keras with parameter servers (an in-process cluster: one worker, one
ps; batch logs are RemoteValues). Prints, per case: the mean batch time, the callback's mean time per
batch during the dense first steps and after them, their ratio to the batch time, the ratio over the
window tf_keras checks (its first 5 timed batches: it warns "`on_train_batch_end` is slow compared to the
batch time" when all batch-end hooks together take longer than the batch), the points emitted, and the
number of slow-callback warnings TensorFlow logged. Target: ratio < 1 (no warning), every case.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("keras3", "tf_keras", "tf_keras_ps")


class Counting:
    """A stdout stand-in for the reporter: counts lines, writes them to /dev/null."""

    def __init__(self) -> None:
        self.lines = 0
        self.sink = open(os.devnull, "w")  # noqa: SIM115

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        return self.sink.write(text)

    def flush(self) -> None:
        self.sink.flush()


def in_process_cluster(tf):
    """One worker and one ps as in-process servers (TensorFlow's parameter-server tutorial)."""
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    spec = tf.train.ClusterSpec({"worker": [f"localhost:{ports[0]}"], "ps": [f"localhost:{ports[1]}"]})
    tf.distribute.Server(spec, job_name="worker", task_index=0, protocol="grpc")
    tf.distribute.Server(spec, job_name="ps", task_index=0, protocol="grpc")
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(spec, rpc_layer="grpc")
    return tf.distribute.ParameterServerStrategy(resolver)


def run_case(case: str, epochs: int, steps: int) -> dict:
    if case != "keras3":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import tensorflow as tf

    from tfk8s_jupyter import replica_callbacks
    from tfk8s_jupyter.replica_env import ReplicaEnv
    from tfk8s_jupyter.replica_output import LineTrackingStdout, Reporter
    from tfk8s_jupyter.replica_runtime import Runtime

    warnings: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            if "is slow compared to the batch time" in record.getMessage():
                warnings.append(record.getMessage())

    logging.getLogger("tensorflow").addHandler(Catch())
    if case == "keras3":
        import keras
    else:
        import tf_keras as keras
    ps = case == "tf_keras_ps"
    strategy = in_process_cluster(tf) if ps else tf.distribute.get_strategy()
    renv = ReplicaEnv(
        job="bench",
        role="chief" if ps else "worker",
        index=0,
        cluster={},
        strategy="parameter_server" if ps else "mirrored",
        payload_path=None,
        checkpoint_dir=None,
        metric_interval=1.0,
        legacy_keras=case != "keras3",
        protocol_key="k" * 32,
    )
    out = Counting()
    runtime = Runtime(tf, renv, strategy, Reporter(LineTrackingStdout(out), True, renv.protocol_key))

    rng = np.random.default_rng(7)
    x = rng.normal(size=(2048, 8)).astype("float32")
    y = (x @ np.linspace(-1, 1, 8, dtype="float32").reshape(8, 1)).astype("float32")
    with strategy.scope():
        model = keras.Sequential(
            [keras.Input(shape=(8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)]
        )
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")

    def dataset(_context=None):
        return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(64)

    data = keras.utils.experimental.DatasetCreator(dataset) if ps else dataset()
    batch_times: list[float] = []
    hook_times: list[float] = []

    class Timing(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self._supports_tf_logs = True
            self.async_safe = True
            self.began = 0.0

        def on_train_batch_begin(self, batch, logs=None):
            self.began = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            batch_times.append(time.perf_counter() - self.began)

    metrics = replica_callbacks.metrics_callback(keras, runtime)(0, 0, None)
    hook = metrics.on_train_batch_end

    def timed(batch, logs=None):
        t0 = time.perf_counter()
        hook(batch, logs)
        hook_times.append(time.perf_counter() - t0)

    metrics.on_train_batch_end = timed
    model.fit(data, epochs=epochs, steps_per_epoch=steps, callbacks=[Timing(), metrics], verbose=0)
    dense = replica_callbacks.DENSE_STEPS
    b, h = np.asarray(batch_times[1:]), np.asarray(hook_times[1:])  # batch 0 carries the trace
    mean_batch = float(b.mean())
    return {
        "case": case,
        "batches": len(batch_times),
        "batch_ms": 1000 * mean_batch,
        "dense_hook_ms": 1000 * float(h[:dense].mean()),
        "later_hook_ms": 1000 * float(h[dense:].mean()),
        "dense_ratio": float(h[:dense].mean()) / mean_batch,
        "later_ratio": float(h[dense:].mean()) / mean_batch,
        "check_ratio": float(np.mean(hook_times[:6]) / np.mean(batch_times[1:6])),
        "points": out.lines,
        "warnings": len(warnings),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print("RESULT " + json.dumps(run_case(args.case, args.epochs, args.steps)))
        return
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  load average {os.getloadavg()[0]:.2f}")
    print(
        f"{args.epochs} epochs x {args.steps} steps, metric interval 1 s, callback time per batch vs batch time"
    )
    header = (
        "case           batch    hook dense  hook later  ratio dense  ratio later  tf check  points  warnings"
    )
    print(header)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    for case in CASES:
        cmd = [
            sys.executable,
            __file__,
            "--case",
            case,
            "--epochs",
            str(args.epochs),
            "--steps",
            str(args.steps),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{case:<13}  failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(line[7:])
        print(
            f"{case:<13} {r['batch_ms']:6.2f} ms {r['dense_hook_ms']:8.3f} ms {r['later_hook_ms']:8.3f} ms"
            f" {r['dense_ratio']:11.3f} {r['later_ratio']:12.3f} {r['check_ratio']:9.3f}"
            f" {r['points']:7d} {r['warnings']:9d}"
        )


if __name__ == "__main__":
    main()
