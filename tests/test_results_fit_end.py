"""The end of ``fit`` on a replica: it returns right after its last epoch, so the job's end (and the model
save) follow it closely; and a replica restarted after its fit completed still gets that fit's History.

Tearing a tf.data iterator down joins its autotuning thread, which sleeps between rounds for longer and
longer (up to 60 s) while the iterator lives and is often not woken by the teardown: ``fit`` returned
5-100 s after its last epoch in about half the jobs before the runner moved that teardown off the cell's
thread (``replica_keras.IteratorReaper``). Real TensorFlow replicas launched by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from handlaunch import HandLaunch  # noqa: E402

FITS = 1

# The bench's shape (a wide MLP on a repeated dataset, ~20-60 s of training here), timing fit's return
# after its last callback (on_train_end). Without the deferred teardown, fit returned 22 s after it.
FITS_CELL = f"""\
import json, time
import numpy as np
import tensorflow as tf
rng = np.random.default_rng(7)
x = rng.normal(size=(2048, 1024)).astype("float32")
y = x.sum(axis=1, keepdims=True).astype("float32")
ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(64)
model = tf.keras.Sequential([tf.keras.Input(shape=(1024,)), tf.keras.layers.Dense(3072, activation="relu"), tf.keras.layers.Dense(2048, activation="relu"), tf.keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse")

class Timed(tf.keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self._supports_tf_logs = True
        self.ended = None
    def on_train_batch_end(self, batch, logs=None):
        pass
    def on_train_end(self, logs=None):
        self.ended = time.time()

returns = []
for i in range({FITS}):
    timed = Timed()
    history = model.fit(ds, epochs=3, steps_per_epoch=100, callbacks=[timed], verbose=2)
    returns.append(round(time.time() - timed.ended, 3))
    assert len(history.history["loss"]) == 3
print("FIT_RETURNS " + json.dumps(returns), flush=True)
"""


def _fit_returns(h: HandLaunch, name: str) -> list[float]:
    line = next(ln for ln in h.stdout(name).splitlines() if ln.startswith("FIT_RETURNS "))
    return json.loads(line.split(" ", 1)[1])


@pytest.mark.tf
@pytest.mark.parametrize("shape", ["all-reduce", "parameter-server"])
def test_fit_returns_right_after_its_last_epoch_and_the_job_ends_soon_after(tmp_path, shape):
    if shape == "all-reduce":
        h = HandLaunch(
            FITS_CELL,
            "mirrored",
            1,
            tmp_path,
            job="teardown",
            env={"TFK8S_ARTIFACTS": str(tmp_path / "artifacts")},
        )
    else:
        h = HandLaunch(FITS_CELL, "parameter_server", 1, tmp_path, ps=1, job="teardown")
    with h:  # starts the replicas
        assert h.wait(h.reporting, 300) == 0, h.tail(h.reporting)
        returns = _fit_returns(h, h.reporting)
        events = h.events()
    assert len(returns) == FITS
    # The iterator lived 20-60 s: a teardown in the cell's thread waits up to half of that for its
    # autotuning thread; deferred, fit returns in milliseconds. Generous bound for a loaded machine.
    assert sum(returns) < 4.0, f"fit returned {returns} s after on_train_end"
    last_epoch = max(e["t"] for e in events if e["type"] == "epoch")
    end = next(e for e in events if e["type"] == "end")
    assert end["status"] == "succeeded"
    assert end["t"] - last_epoch < 20.0, f"the job ended {end['t'] - last_epoch:.1f} s after its last epoch"


# A cell written as users write it: the History fit returns, read by key.
HISTORY_CELL = """\
import numpy as np
import tensorflow as tf
rng = np.random.default_rng(7)
x = rng.normal(size=(512, 8)).astype("float32")
y = x.sum(axis=1, keepdims=True).astype("float32")
model = tf.keras.Sequential([tf.keras.Input(shape=(8,)), tf.keras.layers.Dense(16), tf.keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse")
h = model.fit(x, y, epochs=3, batch_size=64, verbose=2)
print("LAST_LOSS", h.history["loss"][-1], len(h.history["loss"]), flush=True)
"""


@pytest.mark.tf
def test_a_replica_restarted_after_its_fit_completed_gets_the_history_of_that_fit(tmp_path):
    h = HandLaunch(HISTORY_CELL, "mirrored", 1, tmp_path, job="history")
    with h:  # starts the replicas
        assert h.wait("worker-0", 300) == 0, h.tail("worker-0")
        first = [ln for ln in h.stdout("worker-0").splitlines() if ln.startswith("LAST_LOSS ")]
        # the replica starts again (as after a crash once fit had ended): it restores the kept final
        # checkpoint and trains no epoch, yet the cell's h.history["loss"] is the completed fit's
        h.start_replica("worker", 0)
        assert h.wait("worker-0", 300) == 0, h.tail("worker-0")
        lines = [ln for ln in h.stdout("worker-0").splitlines() if ln.startswith("LAST_LOSS ")]
        assert "fit 0 restored a completed fit and trained no epoch" in h.stderr("worker-0")
    assert len(first) == 1 and first[0].endswith(" 3")
    assert lines == [first[0], first[0]]
    epochs = [e for e in h.events() if e["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]  # the restart trained nothing more
