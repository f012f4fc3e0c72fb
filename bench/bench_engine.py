"""Engine overhead, measured side by side in one run: the same training hand-launched and via ``tk.submit``.

    .venv/bin/python bench/bench_engine.py [--what all|engine|warm] [--rounds 3] [--mode alternate]
        [--launch cold,warm,kept]

For parameter servers (chief + 2 workers + 1 ps) and all-reduce (2 workers), ``--rounds`` rounds of one
hand run paired with one tfk8s run per launch kind (``--launch``, see ``engine_launches.py``: cold = no pool
and nothing kept; warm = replicas from a warm pool filled beforehand; kept = a repeat on the replicas a
previous job of the shape kept), the kinds' order rotating every round and the side that goes first flipping
every pair, it prints per kind:

* steps/s ratio = tfk8s ÷ hand (target >= 0.97), steps/s measured by the cell itself over epochs 2..N,
  paired per pair then the median; each pair's epoch seconds on both sides;
* launch overhead ratio = (submit -> first metric point) ÷ (hand start -> first batch) (target <= 1.10
  for cold launches);
* ``import tfk8s_jupyter`` time (target < 0.3 s, and TensorFlow not imported), and next to it
  ``%load_ext tfk8s_jupyter`` in a fresh interpreter's IPython InteractiveShell (the import included).

``--what warm`` (part of the default ``all``): warm launch. For the same two shapes, ``--rounds`` times in a
rotating order: a cold launch with the pool off (``c.TFK8s.warm_pool = 0``), a launch from a warm pool
filled beforehand for the shape, and a cold launch with the pool on (a job whose ``--env`` no pool process
has, so it starts cold while the pool refills after it). It prints submit -> first metric point for each,
warm ÷ cold (target <= 0.35) and cold-with-pool ÷ cold (target <= 1.05), then the idle pool's RSS per
process and its CPU over a minute, next to the floor: fresh idle processes in a pool process's environment
that only imported TensorFlow, then TensorFlow and tf_keras, then everything a pool process preloads
(same ``smaps_rollup`` figures; the floor keeps its library pages mapped, a pool process releases them).

"Hand" replicas run ``bench/hand_replica.py`` (TF_CONFIG from the same cluster, the strategy, the cell
under its scope) through ``tests/handlaunch.py``; tfk8s replicas run the runner under the local backend's
supervisor. Both run the same cell, which times its own batches.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from engine_launches import (  # noqa: E402
    KINDS,
    PRIMER,
    Launches,
    floors,
    pool_env,
    settle_refill,
    smaps,
    start_floors,
)
from handlaunch import HandLaunch  # noqa: E402

CELL = """\
import json, time
cell_start = time.time()
import numpy as np
import tensorflow as tf

rng = np.random.default_rng(11)
x = rng.normal(size=(8192, 32)).astype("float32")
y = (x @ rng.normal(size=(32, 1)) + 0.1 * rng.normal(size=(8192, 1))).astype("float32")
tf.keras.utils.set_random_seed(11)
ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(64)
model = tf.keras.Sequential([
    tf.keras.Input(shape=(32,)),
    tf.keras.layers.Dense(64, activation="relu"),
    tf.keras.layers.Dense(64, activation="relu"),
    tf.keras.layers.Dense(1),
])
model.compile(optimizer=tf.keras.optimizers.Adam(0.005), loss="mse")

class BenchTiming(tf.keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self._supports_tf_logs = True
        self.first = None
        self.epoch_ends = []

    def on_train_batch_end(self, batch, logs=None):
        if self.first is None:
            if hasattr(logs, "fetch"):  # parameter servers: wait until the step really ran
                logs.fetch()
            self.first = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_ends.append(time.time())

timing = BenchTiming()
model.fit(ds, epochs=EPOCHS, steps_per_epoch=STEPS, verbose=2, callbacks=[timing])
ends = timing.epoch_ends
print("BENCH " + json.dumps({"first_batch": timing.first, "cell_start": cell_start,
                             "steps_per_s": STEPS * (len(ends) - 1) / (ends[-1] - ends[0]),
                             "epoch_s": [b - a for a, b in zip(ends, ends[1:])]}))
"""

SETUPS = {
    "parameter_server": {"workers": 2, "ps": 1},
    "multi_worker_mirrored": {"workers": 2, "ps": 0},
}


def bench_line(text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith("BENCH "):
            return json.loads(line[len("BENCH ") :])
    raise RuntimeError(f"the cell printed no BENCH line:\n{text[-3000:]}")


class HandRun:
    """The training launched by hand (``bench/hand_replica.py`` replicas via ``tests/handlaunch.py``)."""

    def __init__(self, code: str, strategy: str, tmp: Path) -> None:
        setup = SETUPS[strategy]
        self.strategy = strategy
        self.launch = HandLaunch(
            code,
            strategy,
            setup["workers"],
            tmp,
            ps=setup["ps"],
            command=[sys.executable, str(REPO / "bench" / "hand_replica.py")],
        )

    def start(self) -> HandRun:
        self.t0 = time.time()
        self.launch.start()
        return self

    def finish(self) -> dict:
        h = self.launch
        try:
            if h.wait(h.reporting, 900) != 0:
                raise RuntimeError(f"hand-launched {self.strategy} failed:\n{h.tail(h.reporting)}")
            result = bench_line(h.stdout(h.reporting))
        finally:
            h.teardown()
        self.epoch_s = result.get("epoch_s", [])
        return {
            "launch": result["first_batch"] - self.t0,
            "to_cell": result["cell_start"] - self.t0,
            "steps_per_s": result["steps_per_s"],
        }


class Tfk8sRun:
    """The same training via ``tk.submit`` (local backend: supervisor + runner)."""

    def __init__(self, code: str, strategy: str, env: dict | None = None) -> None:
        self.code = code
        self.strategy = strategy
        self.env = env or {}
        self.observed: float | None = None

    def start(self) -> Tfk8sRun:
        import tfk8s_jupyter as tk

        setup = SETUPS[self.strategy]
        self.reporting = "chief-0" if setup["ps"] else "worker-0"
        self.t0 = time.time()
        self.job = tk.submit(
            self.code, workers=setup["workers"], ps=setup["ps"], strategy=self.strategy, env=self.env
        )
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()
        return self

    def _watch(self) -> None:
        """When the first metric point is visible through the API (polled every 0.05 s)."""
        while time.time() - self.t0 < 900:
            if any(p.get("kind") == "step" for p in self.job.metrics()):
                self.observed = time.time()
                return
            if self.job.phase in ("failed", "stopped", "succeeded"):
                return
            time.sleep(0.05)

    def finish(self) -> dict:
        phase = self.job.wait(timeout=900)
        self.watcher.join(timeout=5)
        if phase != "succeeded":
            raise RuntimeError(
                f"tfk8s {self.strategy} job ended {phase}:\n{self.job.logs(self.reporting)[-3000:]}"
            )
        first_point = next(p for p in self.job.metrics() if p.get("kind") == "step")
        result = bench_line(self.job.logs(self.reporting))
        self.launches = sorted({r.launch or "?" for r in self.job.status.replicas})
        self.epoch_s = result.get("epoch_s", [])
        return {
            "launch": first_point["t"] - self.t0,
            "launch_observed": (self.observed or float("nan")) - self.t0,
            "to_cell": result["cell_start"] - self.t0,
            "steps_per_s": result["steps_per_s"],
        }


def one_round(
    code: str, strategy: str, tmp: Path, concurrent: bool, tfk8s_first: bool, after=None
) -> tuple[HandRun, Tfk8sRun, dict, dict]:
    """A hand run and a tfk8s run of ``code``, one after the other (or together); ``after(tfk8s_run)`` is
    called once the tfk8s job ended, before anything else starts, and its dict joins the tfk8s figures."""
    hand = HandRun(code, strategy, tmp)
    tfk8s = Tfk8sRun(code, strategy)

    def tfk8s_finish() -> dict:
        result = tfk8s.finish()
        result.update(after(tfk8s.job) if after else {})
        return result

    if concurrent:
        tfk8s.start()
        hand.start()
        t = tfk8s_finish()
        return hand, tfk8s, hand.finish(), t
    if tfk8s_first:
        tfk8s.start()
        t = tfk8s_finish()
        return hand, tfk8s, hand.start().finish(), t
    h = hand.start().finish()
    tfk8s.start()
    return hand, tfk8s, h, tfk8s_finish()


def engine_strategy(code: str, strategy: str, kinds: list[str], launches: Launches, args) -> bool:
    """``--rounds`` rounds of hand vs tfk8s pairs, one per launch kind (the kinds' order rotates every round,
    which side goes first flips every pair); prints each pair and, per kind, the medians of the paired
    ratios. True: a target missed."""
    pairs: dict[str, list[tuple[dict, dict]]] = {k: [] for k in kinds}
    n = 0
    for r in range(args.rounds):
        for kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
            job_no, hand, run, h, t = retried(
                functools.partial(pair, code, strategy, kind, launches, args, tfk8s_first=n % 2 == 1),
                launches.stop_kept,  # a failed kept run leaves no kept set: the retry primes one
            )
            n += 1
            pairs[kind].append((h, t))
            refill = (
                f"; the pool's refill during the job: {t['refill_cpu']:.1f} CPU s in {t['refill_procs']} processes"
                if "refill_cpu" in t
                else ""
            )
            print(
                f"  {strategy} round {r + 1} {kind}: steps/s ratio {t['steps_per_s'] / h['steps_per_s']:.3f}; "
                f"hand {fmt(h)} | tfk8s {fmt(t)} (replicas {'/'.join(run.launches)}, job {job_no} on these "
                f"processes{refill})\n    epoch seconds 2..N: hand {epochs(hand.epoch_s)} | "
                f"tfk8s {epochs(run.epoch_s)}",
                flush=True,
            )
    launches.reset()
    failed = False
    for kind in kinds:
        hand = [h for h, _ in pairs[kind]]
        tfk8s = [t for _, t in pairs[kind]]
        ratios = [t["steps_per_s"] / h["steps_per_s"] for h, t in pairs[kind]]
        # paired: each round's tfk8s figure over the hand figure measured beside it, then the median
        steps_ratio = statistics.median(ratios)
        launch_ratio = statistics.median(t["launch"] / h["launch"] for h, t in pairs[kind])
        target = " (target <= 1.10)" if kind == "cold" else ""
        print(
            f"{strategy} {kind}: steps/s ratio {steps_ratio:.3f} (target >= 0.97; rounds "
            f"{', '.join(f'{x:.3f}' for x in ratios)}; medians tfk8s {median(tfk8s, 'steps_per_s'):.1f}, hand "
            f"{median(hand, 'steps_per_s'):.1f}); launch ratio {launch_ratio:.3f}{target} (medians tfk8s "
            f"{median(tfk8s, 'launch'):.2f} s, seen through the API {median(tfk8s, 'launch_observed'):.2f} s, "
            f"hand {median(hand, 'launch'):.2f} s; to the cell's first line tfk8s {median(tfk8s, 'to_cell'):.2f} s, "
            f"hand {median(hand, 'to_cell'):.2f} s)",
            flush=True,
        )
        failed = failed or steps_ratio < 0.97 or (kind == "cold" and launch_ratio > 1.10)
    return failed


def pair(code: str, strategy: str, kind: str, launches: Launches, args, tfk8s_first: bool) -> tuple:
    """(the job number of the tfk8s run's processes, then :func:`one_round`'s) for one launch kind."""
    launches.prepare(kind, strategy, SETUPS[strategy])
    job_no = launches.job_number(kind)
    with tempfile.TemporaryDirectory(prefix="tfk8s-bench-") as tmp:
        return job_no, *one_round(
            code,
            strategy,
            Path(tmp),
            args.mode == "concurrent",
            tfk8s_first=tfk8s_first,
            after=lambda job: launches.after(kind, job),
        )


def epochs(seconds: list[float]) -> str:
    return " ".join(f"{x:.2f}" for x in seconds) or "?"


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def import_time(runs: int = 5) -> tuple[float, bool]:
    code = (
        "import time, sys; t = time.perf_counter(); import tfk8s_jupyter; "
        "print(time.perf_counter() - t, 'tensorflow' in sys.modules)"
    )
    times, tf_loaded = [], False
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
        )
        seconds, loaded = out.stdout.split()
        times.append(float(seconds))
        tf_loaded = tf_loaded or loaded == "True"
    return statistics.median(times), tf_loaded


LOAD_EXT = """\
import sys, time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
t = time.perf_counter()
shell.run_line_magic("load_ext", "tfk8s_jupyter")
print(time.perf_counter() - t, "tensorflow" in sys.modules, "tfk8s_train" in shell.magics_manager.magics["cell"])
"""


def load_ext_time(runs: int = 5) -> tuple[float, bool]:
    """Median seconds of ``%load_ext tfk8s_jupyter`` in a fresh interpreter's IPython InteractiveShell (the
    package's import included: nothing imported it before), and whether TensorFlow got imported."""
    times, tf_loaded = [], False
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", LOAD_EXT], capture_output=True, text=True, check=True, cwd=REPO
        )
        seconds, loaded, registered = out.stdout.split()[-3:]
        if registered != "True":
            raise RuntimeError(
                f"%load_ext tfk8s_jupyter registered no %%tfk8s_train:\n{out.stdout}{out.stderr}"
            )
        times.append(float(seconds))
        tf_loaded = tf_loaded or loaded == "True"
    return statistics.median(times), tf_loaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--what", choices=("all", "engine", "warm"), default="all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--strategies", default="parameter_server,multi_worker_mirrored")
    parser.add_argument(
        "--launch",
        default=",".join(KINDS),
        help="the engine mode's tfk8s launch kinds, each paired with a hand run: cold (no pool, nothing "
        "kept), warm (replicas from a warm pool), kept (a repeat on the replicas a previous job kept)",
    )
    parser.add_argument(
        "--mode",
        choices=("concurrent", "alternate"),
        default="alternate",
        help="concurrent: both sides start together and share the machine's load (fair on a busy box); "
        "alternate: one after the other",
    )
    args = parser.parse_args(argv)
    code = CELL.replace("EPOCHS", str(args.epochs)).replace("STEPS", str(args.steps))
    os.environ.setdefault("TFK8S_HOME", tempfile.mkdtemp(prefix="tfk8s-bench-home-"))

    print(f"# bench_engine.py {' '.join(sys.argv[1:] if argv is None else argv)}", flush=True)
    print(f"# start {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {load()}", flush=True)
    seconds, tf_loaded = import_time()
    print(
        f"import tfk8s_jupyter: {seconds * 1000:.2f} ms (target < 300 ms); TensorFlow imported: {tf_loaded}"
    )
    ext_seconds, ext_tf = load_ext_time()
    print(
        f"%load_ext tfk8s_jupyter (fresh interpreter, IPython InteractiveShell, the import included): "
        f"{ext_seconds * 1000:.2f} ms; TensorFlow imported: {ext_tf}"
    )
    failed = seconds >= 0.3 or tf_loaded or ext_tf
    if args.what in ("all", "warm"):
        failed = warm_launch(args) or failed
    if args.what == "warm":
        print(f"# end {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {load()}", flush=True)
        return 1 if failed else 0
    kinds = [k for k in args.launch.split(",") if k]
    if any(k not in KINDS for k in kinds):
        parser.error(f"--launch takes a comma-separated list of {', '.join(KINDS)}, got {args.launch!r}")
    primer = CELL.replace("EPOCHS", str(PRIMER[0])).replace("STEPS", str(PRIMER[1]))
    launches = Launches(primer)
    for strategy in args.strategies.split(","):
        failed = engine_strategy(code, strategy, kinds, launches, args) or failed
    launches.reset()
    print(f"# end {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {load()}", flush=True)
    return 1 if failed else 0


WARM_EPOCHS, WARM_STEPS = 2, 40  # the warm-launch jobs only need to reach and pass their first points


def warm_launch(args) -> bool:
    """Cold vs warm vs cold-with-pool, same shape, rotating order; then the idle pool's cost. True: a miss."""
    from tfk8s_jupyter.backends.local import LocalBackend
    from tfk8s_jupyter.backends.local_pool import list_pool, owned_pool
    from tfk8s_jupyter.config import TFK8s, set_current_config
    from tfk8s_jupyter.records import records_root
    from tfk8s_jupyter.spec import make_spec

    code = CELL.replace("EPOCHS", str(WARM_EPOCHS)).replace("STEPS", str(WARM_STEPS))
    failed = False
    pool = owned_pool(records_root())
    for strategy in args.strategies.split(","):
        setup = SETUPS[strategy]
        spec = make_spec(code, workers=setup["workers"], ps=setup["ps"], strategy=strategy)
        runs: dict[str, list[dict]] = {"cold": [], "warm": [], "cold+pool": []}
        order = ["cold", "warm", "cold+pool"]
        for r in range(args.rounds):
            for kind in order[r % 3 :] + order[: r % 3]:
                run, result = retried(functools.partial(warm_one, kind, code, strategy, spec, pool, r))
                result["launches"] = run.launches
                runs[kind].append(result)
                print(
                    f"  {strategy} round {r + 1} {kind}: submit -> first metric point {result['launch']:.2f} s "
                    f"(seen through the API {result['launch_observed']:.2f} s; the cell's first line at "
                    f"{result['to_cell']:.2f} s; replicas {'/'.join(run.launches)})",
                    flush=True,
                )
        cold, warm, cold_pool = (median(runs[k], "launch") for k in ("cold", "warm", "cold+pool"))
        ratio = statistics.median(
            w["launch"] / c["launch"] for c, w in zip(runs["cold"], runs["warm"], strict=True)
        )
        pool_ratio = statistics.median(
            p["launch"] / c["launch"] for c, p in zip(runs["cold"], runs["cold+pool"], strict=True)
        )
        print(
            f"{strategy} warm launch: submit -> first metric point medians cold {cold:.2f} s, warm {warm:.2f} s, "
            f"cold with the pool on {cold_pool:.2f} s (seen through the API: cold "
            f"{median(runs['cold'], 'launch_observed'):.2f} s, warm {median(runs['warm'], 'launch_observed'):.2f} s); "
            f"warm/cold {ratio:.3f} (target <= 0.35), cold-with-pool/cold {pool_ratio:.3f} (target <= 1.05)",
            flush=True,
        )
        failed = failed or ratio > 0.35 or pool_ratio > 1.05
    # the idle pool's cost: one process per replica of the parameter-server shape
    set_current_config(TFK8s(warm_pool=None, keep_warm=0))
    pool.stop()
    setup = SETUPS["parameter_server"]
    LocalBackend().warm_up(make_spec(code, workers=setup["workers"], ps=setup["ps"]), timeout=300)
    from tfk8s_jupyter.backends.local_processes import process_cpu_seconds

    time.sleep(5.0)
    rows = [r for r in list_pool(records_root()) if r["state"] == "idle"]
    before = {r["pid"]: process_cpu_seconds(r["pid"]) or 0.0 for r in rows}
    t0 = time.monotonic()
    # the floor, meanwhile: fresh interpreters in a pool process's environment that only imported
    # TensorFlow (then its Keras, then all a pool process preloads), idle like the pool
    floor_procs = start_floors(pool_env(rows[0]["pid"]), str(REPO))
    time.sleep(max(5.0, 60.0 - (time.monotonic() - t0)))
    cpu = [(process_cpu_seconds(pid) or 0.0) - c for pid, c in before.items()]
    idle = [r for r in list_pool(records_root()) if r["state"] == "idle"]
    own = [smaps(r["pid"]) for r in idle]
    floor = floors(floor_procs)

    def mb(key: str, ms: list[dict]) -> str:
        return ", ".join(f"{m[key]:.0f}" for m in ms)

    print(
        f"idle warm pool ({len(rows)} processes): per process RSS {mb('rss', own)} MB, "
        f"of which its own (private) {mb('private', own)} MB, PSS {mb('pss', own)} MB (target <= 512 MB RSS; "
        f"the library pages it only read are released to the page cache); CPU over 60 s per process "
        f"{', '.join(f'{c:.3f}' for c in cpu)} s (max {max(cpu) / 60 * 100:.2f} %, target <= 1 %)",
        flush=True,
    )
    for label, m in floor.items():
        print(
            f"  floor, a fresh idle process in the pool's environment, {label}: RSS {m['rss']:.0f} MB, private "
            f"{m['private']:.0f} MB, PSS {m['pss']:.0f} MB (pool process minus this: RSS "
            f"{statistics.median(o['rss'] for o in own) - m['rss']:+.0f} MB, private "
            f"{statistics.median(o['private'] for o in own) - m['private']:+.0f} MB, medians)",
            flush=True,
        )
    pool.stop()
    return failed or max(cpu) / 60 > 0.01 or max(o["rss"] for o in own) > 512


def warm_one(kind: str, code: str, strategy: str, spec, pool, r: int) -> tuple[Tfk8sRun, dict]:
    """One launch of the warm mode: ``kind`` is cold, warm or cold+pool."""
    from tfk8s_jupyter.backends.local import LocalBackend
    from tfk8s_jupyter.config import TFK8s, set_current_config

    env = {}
    if kind == "cold":
        pool.stop()
        set_current_config(TFK8s(warm_pool=0, keep_warm=0))
    elif kind == "warm":
        set_current_config(TFK8s(warm_pool=None, keep_warm=0))
        if not LocalBackend().warm_up(spec, timeout=300):
            raise RuntimeError("the warm pool did not get ready within 300 s")
        time.sleep(2.0)  # let the machine settle after the pool's imports
    else:
        pool.stop()
        set_current_config(TFK8s(warm_pool=None, keep_warm=0))
        env = {"BENCH_COLD_ROUND": str(r)}  # a key no pool process has: a cold start
    run = Tfk8sRun(code, strategy, env)
    result = run.start().finish()
    if kind != "cold":  # the refill after the job (at its end on a machine its replicas fill) settles first
        settle_refill(pool)
    return run, result


PORT_RACE = ("submit the job again to get new ports", "Could not start gRPC server")


def retried(launch, before_retry=None):
    """``launch()``, once more if a replica lost its port to another process between the port's choice and
    its server's start (other TensorFlow runs share this machine); says so."""
    try:
        return launch()
    except RuntimeError as e:
        if not any(m in str(e) for m in PORT_RACE):
            raise
        first = str(e).splitlines()[0]
        print(f"  (a replica's port was taken by another process; running it again) {first}", flush=True)
        if before_retry:
            before_retry()
        return launch()


def median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def fmt(result: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in result.items() if not k.startswith("refill"))


if __name__ == "__main__":
    sys.exit(main())
