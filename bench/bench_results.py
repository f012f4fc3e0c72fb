"""Results: what loading a job's model through ``job.model()`` and saving it at the end of a job cost.

    .venv/bin/python bench/bench_results.py [--rounds 5] [--loads 5] [--seconds 60]

1. **Load**: a local job trains a ~10 M-parameter Keras 3 MLP (one replica, one short epoch) and saves it;
   then, in this process with TensorFlow already imported, ``job.model()`` and a plain
   ``keras.models.load_model`` of the same file run alternately ``--loads`` times each. Prints the medians
   and their ratio (target ≤ 2×).
2. **Save**: the same cell trained for about ``--seconds`` seconds (the step count calibrated from the
   speed of the jobs before), submitted with and without ``save_model=False`` (``--no-save-model``), one
   after the other, the order flipping every round. A job's time is its record's ``created`` → ``finished`` (submit
   to the end of its last replica). Prints the median times, their ratio (target ≤ 1.05) and the save time
   the job itself reported (``artifacts.json``), which is the cost without the machine's noise.

   Each job also prints how long its end event came after its last epoch. Before the runner tore tf.data
   iterators down off the cell's thread (``replica_keras.IteratorReaper``), ``fit`` returned 5-100 s after
   its last epoch in about half the jobs (the teardown joined the iterator's autotuning thread, asleep for
   up to 60 s), which swamped the save; now that tail is the save (about a second) or less. The cell turns
   tf.data autotuning off (``--autotune`` keeps it on); the ratio of the fastest job of each kind is printed
   too, since training time on a shared machine varies far more than the save costs.

Jobs run on the real local backend in a temporary ``TFK8S_HOME``, deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CELL = """\
import numpy as np
import tensorflow as tf
rng = np.random.default_rng(7)
x = rng.normal(size=(2048, 1024)).astype("float32")
y = rng.normal(size=(2048, 1)).astype("float32")
tf.keras.utils.set_random_seed(7)
ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(64)
options = tf.data.Options()
options.autotune.enabled = {autotune}
ds = ds.with_options(options)
model = tf.keras.Sequential([
    tf.keras.Input(shape=(1024,)),
    tf.keras.layers.Dense(3072, activation="relu"),
    tf.keras.layers.Dense(2048, activation="relu"),
    tf.keras.layers.Dense(1),
])
model.compile(optimizer=tf.keras.optimizers.Adam(1e-4), loss="mse")
model.fit(ds, epochs={epochs}, steps_per_epoch={steps}, verbose=2)
"""


def run_job(tk, name: str, epochs: int, steps: int, save: bool, autotune: bool = False):
    cell = CELL.format(epochs=epochs, steps=steps, autotune=autotune)
    job = tk.submit(cell, workers=1, name=name, save_model=save, setup_timeout=300)
    phase = job.wait(timeout=1800)
    if phase != "succeeded":
        raise SystemExit(f"job {name} {phase}: {job.status.message}\n{job.logs(tail=30)}")
    status = job.status
    return job, status.finished - status.created


def steps_per_second(job) -> float:
    """Training speed over the second half of the job's metric points (past the first steps' tracing)."""
    points = [e for e in job.events() if e.get("type") in ("metric", "epoch") and e.get("step")]
    first, last = points[len(points) // 2], points[-1]
    return (last["step"] - first["step"]) / max(1e-6, last["t"] - first["t"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="save/no-save pairs (default 5)")
    parser.add_argument("--loads", type=int, default=5, help="loads of each kind (default 5)")
    parser.add_argument("--seconds", type=float, default=60.0, help="training time of a job (default 60)")
    parser.add_argument(
        "--autotune",
        action="store_true",
        help="keep tf.data autotuning on in the cell's dataset",
    )
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="tfk8s-bench-results-")
    os.environ["TFK8S_HOME"] = home
    import tfk8s_jupyter as tk

    print(f"uptime: {os.popen('uptime').read().strip()}")
    # 1. load ------------------------------------------------------------------------------------
    job, _ = run_job(tk, "load", epochs=1, steps=80, save=True)
    from tfk8s_jupyter.results import read_index

    entry = read_index(job.backend, job.name)["model"]
    path = os.path.join(job.backend.artifacts_location(job.name), entry["path"])
    import keras

    warm = keras.models.load_model(path)  # TensorFlow and Keras imported and warmed on both sides
    params = warm.count_params()
    plain, ours = [], []
    for i in range(args.loads):
        for kind in ("plain", "job") if i % 2 == 0 else ("job", "plain"):
            t0 = time.perf_counter()
            model = keras.models.load_model(path) if kind == "plain" else job.model()
            (plain if kind == "plain" else ours).append(time.perf_counter() - t0)
            assert model.count_params() == params
    speed = steps_per_second(job)
    job.delete()
    p, o = statistics.median(plain), statistics.median(ours)
    print(
        f"load: {params / 1e6:.1f} M parameters, {entry['bytes'] / 1e6:.1f} MB ({entry['keras']}); "
        f"keras.models.load_model {p:.3f} s, job.model() {o:.3f} s (medians of {args.loads}); "
        f"ratio {o / p:.2f} (target <= 2)"
    )

    # 2. save ------------------------------------------------------------------------------------
    steps = max(10, int(speed * args.seconds))
    times: dict[bool, list[float]] = {True: [], False: []}
    saves = []
    for r in range(args.rounds):
        round_trained = []
        for save in (True, False) if r % 2 == 0 else (False, True):
            job, seconds = run_job(
                tk, f"save-{r}-{int(save)}", epochs=1, steps=steps, save=save, autotune=args.autotune
            )
            times[save].append(seconds)
            if save:
                saves.append(read_index(job.backend, job.name)["model"]["save_seconds"])
            events = job.events()
            trained = max(e["t"] for e in events if e.get("type") == "epoch") - min(
                e["t"] for e in events if e.get("type") == "start"
            )
            tail = max(e["t"] for e in events) - max(e["t"] for e in events if e.get("type") == "epoch")
            print(
                f"  round {r + 1}: save_model={save}: {steps} steps, job {seconds:.1f} s "
                f"(start -> last epoch {trained:.1f} s, last epoch -> end event {tail:.1f} s)",
                flush=True,
            )
            job.delete()
            round_trained.append(trained)
        # The next round's step count aims at --seconds of training at the speed this round saw.
        steps = max(10, int(steps * args.seconds / statistics.median(round_trained)))
    with_save, without = statistics.median(times[True]), statistics.median(times[False])
    save_s = statistics.median(saves)
    print(
        f"save: ~{args.seconds:g} s of training per job; job with the model "
        f"saved {with_save:.1f} s, with --no-save-model {without:.1f} s (medians of {args.rounds}); "
        f"ratio {with_save / without:.3f} (target <= 1.05); fastest of each {min(times[True]):.1f} s vs "
        f"{min(times[False]):.1f} s, ratio {min(times[True]) / min(times[False]):.3f}; the save itself "
        f"{save_s:.2f} s = {100 * save_s / without:.1f} % of the job"
    )
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
