"""Kept replicas, measured side by side in one run: a cold launch, then repeat runs of the same shape on
the replicas the previous job kept (``c.TFK8s.keep_warm``), and the same cell run repeatedly in 2
ipyparallel engines kept running with TF_CONFIG set by hand.

    .venv/bin/python bench/bench_kept.py [--rounds 3] [--epochs 3] [--steps 20] [--gap 2] [--idle 20]
        [--no-ipyparallel]

For each shape — 2 all-reduce workers on Keras 3 (the default), 2 all-reduce workers on tf_keras
(``TFK8S_KERAS=legacy``), chief + 2 workers + 1 ps — it submits one job cold (no kept set, warm pool off)
and then ``--rounds`` jobs of the same shape, each running on the replicas the one before kept, submitted
``--gap`` seconds after the previous one ended (a user editing the cell; meanwhile a kept replica resets what
its run left, which a job submitted at once waits for). It prints
submit -> first metric point seen through the API (``job.metrics()`` polled every 0.01 s; targets: all-reduce
<= 0.35 s, parameter servers <= 1.0 s), submit -> end, how each job's replicas started, for each repeat where
the time went (the runner's start event, the cell's first line, the fit's first batch end as the cell timed
it, the first metric point as written, seen through the API; seconds after submit), and what the last kept
set costs: the CPU its members' reset after the last run took (``local_keep_process.reset_process``;
the bench waits until every member finished it), then CPU summed over its processes while idle for
``--idle`` seconds, and RSS per process. With ipyparallel, each shape's median repeat is also given as a
ratio to ipyparallel's median repeat. After the repeats, per shape: a job whose cell raises (a typo on its
first line: it fails as the cell raised), then the fixed cell ``--gap`` seconds later, which runs on the
replicas the failed job kept: its submit -> first metric point and how its replicas started.

ipyparallel (a bench-only dependency: ``pip install 'tfk8s-jupyter[bench]'``): 2 engines started, each given
``TF_USE_LEGACY_KERAS=1`` and its TF_CONFIG by hand (tf_keras: with Keras 3 the cell fails there,
keras#20585), then the same all-reduce cell executed ``--rounds + 1`` times, ``--gap`` s apart: ``execute`` -> first batch
(timed by the cell) and -> done for each.

The cell times its own batches; it creates ``MultiWorkerMirroredStrategy()`` as TensorFlow's tutorials do
(under tfk8s that is the job's strategy) and trains a small dense model.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CELL = """\
import json, time
CELL_START = time.time()
import numpy as np
import tensorflow as tf

strategy = {strategy}  # first: a plain process must create it before anything touches TensorFlow
rng = np.random.default_rng(11)
x = rng.normal(size=(4096, 32)).astype("float32")
y = (x @ rng.normal(size=(32, 1))).astype("float32")
tf.keras.utils.set_random_seed(11)
ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(64)
with strategy.scope():
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(32,)),
        tf.keras.layers.Dense(64, activation="relu"),
        tf.keras.layers.Dense(1),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(0.005), loss="mse")

class FirstBatch(tf.keras.callbacks.Callback):
    first = None
    def __init__(self):
        super().__init__()
        self._supports_tf_logs = True  # batch-level callbacks with ParameterServerStrategy
    def on_train_batch_end(self, batch, logs=None):
        if FirstBatch.first is None:
            if hasattr(logs, "fetch"):
                logs.fetch()
            FirstBatch.first = time.time()

model.fit(ds, epochs={epochs}, steps_per_epoch={steps}, verbose=0, callbacks=[FirstBatch()])
RESULT = {{
    "cell_start": CELL_START, "first_batch": FirstBatch.first, "done": time.time(),
    "replicas": strategy.num_replicas_in_sync,
}}
print("BENCH " + json.dumps(RESULT))
"""

SHAPES = {
    "all-reduce 2 workers (Keras 3)": (
        {"workers": 2},
        "tf.distribute.MultiWorkerMirroredStrategy()",
    ),
    "all-reduce 2 workers (tf_keras)": (
        {"workers": 2, "env": {"TFK8S_KERAS": "legacy"}},
        "tf.distribute.MultiWorkerMirroredStrategy()",
    ),
    "chief + 2 workers + 1 ps": ({"workers": 2, "ps": 1}, "tf.distribute.get_strategy()"),
}


TYPO = "print(learning_rat)\n"  # the fixed cell is the same without this line


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_job(code: str, kwargs: dict, expect: str = "succeeded") -> dict:
    import tfk8s_jupyter as tk

    t0 = time.time()
    job = tk.submit(code, **kwargs)
    seen = None
    while time.time() - t0 < 600:
        if seen is None and any(p.get("kind") == "step" for p in job.metrics()):
            seen = time.time() - t0
        if job.phase in ("failed", "stopped", "succeeded"):
            break
        time.sleep(0.01)
    phase = job.wait(timeout=600)
    if phase != expect:
        raise RuntimeError(f"job {job.name} ended {phase}: {job.status.message}")
    ended = time.time() - t0
    events = job.events()
    start = next((e for e in events if e.get("type") == "start"), {})
    point = next((e for e in events if e.get("type") == "metric"), {})
    reporting = job.spec.reporting_replica
    line = next((ln for ln in job.logs(reporting).splitlines() if ln.startswith("BENCH ")), None)
    cell = json.loads(line[len("BENCH ") :]) if line else {}
    nan = float("nan")
    return {
        "first_point": seen if seen is not None else float("nan"),
        # where it went, seconds after submit: the runner's start event, the cell's first line, the fit's
        # first batch end (timed by the cell), the first metric point written (its own timestamp)
        "path": [
            float(x) - t0 if x is not None else nan
            for x in (start.get("t"), cell.get("cell_start"), cell.get("first_batch"), point.get("t"))
        ],
        "end": ended,
        "launch": ",".join(sorted({r.launch or "?" for r in job.status.replicas})),
        "pids": sorted(r.pid for r in job.status.replicas if r.pid),
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_done(pids: list[int], timeout: float = 60.0) -> float:
    """Wait until every member of the kept set of ``pids`` has finished resetting what its run left
    (``local_keep_process.after_run``: its ``ready.json`` written, no ``resetting`` marker in its member
    directory; serving replicas never reset); returns the seconds waited."""
    from tfk8s_jupyter.backends.local_keep import keep_dir, list_kept
    from tfk8s_jupyter.records import records_root

    sets = keep_dir(records_root()) / "sets"
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        rows = [r for r in list_kept(records_root()) if r["pid"] in pids]
        done = len(rows) == len(pids)
        for r in rows:
            member = sets / r["slot"]
            try:
                ready = json.loads((member / "ready.json").read_text())
            except (OSError, ValueError):
                done = False
                continue
            # ready.json comes a moment before the ``resetting`` marker: give that moment 0.2 s
            if (member / "resetting").exists() or time.time() - float(ready.get("at") or 0) < 0.2:
                done = False
        if done:
            return time.monotonic() - t0
        time.sleep(0.02)
    raise RuntimeError(f"the kept set {pids} did not finish its reset within {timeout:g} s")


def idle_cost(pids: list[int], seconds: float) -> dict:
    """The kept set once its last job ended: the CPU its reset took (until :func:`reset_done`), then CPU
    (percent of one core, summed over the kept processes) and RSS while it waits ``seconds``."""
    from tfk8s_jupyter.backends.local_pool import _rss

    start = sum(cpu_seconds(p) for p in pids)
    reset_wall = reset_done(pids)
    before = sum(cpu_seconds(p) for p in pids)
    time.sleep(seconds)
    after = sum(cpu_seconds(p) for p in pids)
    return {
        "reset_cpu": before - start,
        "reset_wall": reset_wall,
        "cpu_percent": 100.0 * (after - before) / seconds,
        "rss_mb": [round((_rss(p) or 0) / 2**20) for p in pids],
    }


def bench_shape(
    label: str, rounds: int, epochs: int, steps: int, idle: float = 0.0, gap: float = 2.0
) -> dict:
    from tfk8s_jupyter.backends.local_keep import stop_kept
    from tfk8s_jupyter.records import records_root

    kwargs, strategy = SHAPES[label]
    code = CELL.format(strategy=strategy, epochs=epochs, steps=steps)
    stop_kept(records_root())  # the first launch is cold
    runs = [run_job(code, kwargs)]
    for _ in range(rounds):
        time.sleep(gap)  # a user changing the cell before running it again
        runs.append(run_job(code, kwargs))
    cost = idle_cost(runs[-1]["pids"], idle) if idle > 0 else None
    # a cell that raises (a typo on its first line), then the fixed cell: it runs on the replicas kept
    time.sleep(gap)
    failed = run_job(TYPO + code, kwargs, expect="failed")
    time.sleep(gap)
    after_error = run_job(code, kwargs)
    stop_kept(records_root())
    return {
        "label": label,
        "cold": runs[0],
        "kept": runs[1:],
        "idle": cost,
        "failed": failed,
        "after_error": after_error,
    }


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def bench_ipyparallel(rounds: int, epochs: int, steps: int, gap: float) -> dict:
    import ipyparallel as ipp

    t0 = time.time()
    cluster = ipp.Cluster(n=2, log_level=40)
    rc = cluster.start_and_connect_sync()
    rc.wait_for_engines(2, timeout=120)
    engines_up = time.time() - t0
    try:
        ports = free_ports(2)
        workers = [f"127.0.0.1:{p}" for p in ports]
        for i in range(2):
            tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
            rc[i].execute(
                f"import os\nos.environ['TF_USE_LEGACY_KERAS'] = '1'\nos.environ['TF_CONFIG'] = {tf_config!r}\n"
                "os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'",
                block=True,
            )
        code = CELL.format(strategy="tf.distribute.MultiWorkerMirroredStrategy()", epochs=epochs, steps=steps)
        runs = []
        for i in range(rounds + 1):
            time.sleep(gap if i else 0.0)
            start = time.time()
            rc[:].execute(code, block=True)
            done = time.time() - start
            results = rc[:].pull("RESULT", block=True)
            runs.append(
                {
                    "cell_start": min(r["cell_start"] for r in results) - start,
                    "first_batch": results[0]["first_batch"] - start,
                    "end": done,
                    "replicas": results[0]["replicas"],
                }
            )
    finally:
        cluster.stop_cluster_sync()
    return {"engines_up": engines_up, "runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="repeat runs per shape after the cold one")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--gap", type=float, default=2.0, help="seconds between a job's end and the next submit"
    )
    parser.add_argument(
        "--idle", type=float, default=20.0, help="seconds to measure the kept set's idle cost"
    )
    parser.add_argument("--no-ipyparallel", action="store_true")
    args = parser.parse_args()

    from tfk8s_jupyter.config import TFK8s, set_current_config

    home = os.environ.get("TFK8S_HOME")
    if not home:
        import tempfile

        os.environ["TFK8S_HOME"] = tempfile.mkdtemp(prefix="tfk8s-bench-kept-")
    set_current_config(TFK8s(warm_pool=0, keep_warm=600))
    print(
        f"# bench_kept.py --rounds {args.rounds} --epochs {args.epochs} --steps {args.steps} "
        f"--gap {args.gap:g} --idle {args.idle:g}"
    )
    print(f"# start {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {load()}")
    results = [
        bench_shape(label, args.rounds, args.epochs, args.steps, args.idle, args.gap) for label in SHAPES
    ]
    ipp = None if args.no_ipyparallel else bench_ipyparallel(args.rounds, args.epochs, args.steps, args.gap)
    print()
    print("submit -> first metric point seen through the API, and -> job end (seconds)")
    for r in results:
        kept = r["kept"]
        print(f"{r['label']}:")
        c = r["cold"]
        print(
            f"  cold            first point {c['first_point']:6.2f}  end {c['end']:6.2f}  ({c['launch']} start)"
        )
        for i, k in enumerate(kept, 1):
            same = "same pids" if k["pids"] == c["pids"] else "other pids"
            print(
                f"  repeat {i}        first point {k['first_point']:6.2f}  end {k['end']:6.2f}  "
                f"({k['launch']} start, {same})"
            )
            print(
                "                  start event {:.3f}, cell's first line {:.3f}, first batch {:.3f}, "
                "point written {:.3f}, seen {:.3f}".format(*k["path"], k["first_point"])
            )
        f, a = r["failed"], r["after_error"]
        print(
            f"  after a failed cell first point {a['first_point']:6.2f}  end {a['end']:6.2f}  ({a['launch']} "
            f"start; the failed cell's job ran on {f['launch']} replicas and failed as the cell raised)"
        )
        med = statistics.median(k["first_point"] for k in kept)
        print(
            f"  median repeat first point {med:.2f} s = {med / c['first_point']:.2f} x cold; "
            f"median repeat end {statistics.median(k['end'] for k in kept):.2f} s"
        )
        if r["idle"]:
            print(
                f"  reset after the last run: {r['idle']['reset_cpu']:.2f} CPU s in all, done "
                f"{r['idle']['reset_wall']:.2f} s after the job's end was seen"
            )
            print(
                f"  kept and idle for {args.idle:g} s once reset: CPU {r['idle']['cpu_percent']:.2f} % of a core "
                f"in all, RSS MB {r['idle']['rss_mb']}"
            )
    if ipp is not None:
        print("ipyparallel, 2 engines kept running, TF_CONFIG by hand, tf_keras, the all-reduce cell:")
        print(f"  engines started in {ipp['engines_up']:.2f} s")
        for i, run in enumerate(ipp["runs"]):
            what = "first run " if i == 0 else f"repeat {i}  "
            print(
                f"  {what}      first batch {run['first_batch']:6.2f}  end {run['end']:6.2f}  "
                f"({run['replicas']} replicas in sync; the cell's first line at {run['cell_start']:.3f})"
            )
        med = statistics.median(r["first_batch"] for r in ipp["runs"][1:])
        print(f"  median repeat first batch {med:.2f} s")
        for r in results:
            repeat = statistics.median(k["first_point"] for k in r["kept"])
            print(
                f"  {r['label']}: median repeat first point {repeat:.2f} s = {repeat / med:.2f} x "
                "ipyparallel's median repeat first batch"
            )
    print(f"# end {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
