"""Helpers for the local-backend tests: seeded training cells of a chosen length, waiting, killing by pid."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from tfk8s_jupyter.backends.local import LocalBackend, SupervisorTestHooks, process_alive


def children_of(pid: int) -> list[int]:
    """Live (non-zombie) direct children of ``pid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X") and int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


# Every cell seeds its data, so all-reduce workers see the same batches.
_DATA = """\
import numpy as np
rng = np.random.default_rng(7)
x = rng.normal(size=(4096, 8)).astype("float32")
true_w = rng.normal(size=(8, 1)).astype("float32")
y = (x @ true_w + 0.1 * rng.normal(size=(4096, 1))).astype("float32")
"""


def tf_keras_cell(epochs: int = 3, steps: int = 30, step_sleep: float = 0.0) -> str:
    """A ``tf.keras`` cell; ``step_sleep`` seconds per batch (in a callback) make training last."""
    slow = ""
    callbacks = ""
    if step_sleep:
        slow = (
            "import time\n"
            "class Slow(tf.keras.callbacks.Callback):\n"
            "    def __init__(self):\n"
            "        super().__init__()\n"
            "        self._supports_tf_logs = True\n"
            "    def on_train_batch_end(self, batch, logs=None):\n"
            f"        time.sleep({step_sleep})\n"
        )
        callbacks = ", callbacks=[Slow()]"
    return (
        "import tensorflow as tf\n"
        + _DATA
        + slow
        + f"""\
tf.keras.utils.set_random_seed(7)
ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(64)
model = tf.keras.Sequential([
    tf.keras.Input(shape=(8,)),
    tf.keras.layers.Dense(16, activation="relu"),
    tf.keras.layers.Dense(1),
])
model.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss="mse")
history = model.fit(ds, epochs={epochs}, steps_per_epoch={steps}{callbacks})
print("cell done, losses:", [round(v, 4) for v in history.history["loss"]])
"""
    )


def keras_cell(epochs: int = 3, steps: int = 30) -> str:
    """An ``import keras`` cell (functional model)."""
    return (
        _DATA
        + f"""\
import tensorflow as tf
import keras
from keras import layers

keras.utils.set_random_seed(7)
ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(64)
inputs = keras.Input(shape=(8,))
outputs = layers.Dense(1)(layers.Dense(16, activation="relu")(inputs))
model = keras.Model(inputs, outputs)
model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="mse")
history = model.fit(ds, epochs={epochs}, steps_per_epoch={steps})
print("cell done, losses:", [round(v, 4) for v in history.history["loss"]])
"""
    )


def wait_for(predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    os.kill(pid, sig)
    wait_for(lambda: not process_alive(pid), 10, f"pid {pid} to die")


def epoch_events(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("type") == "epoch"]


def set_test_hooks(monkeypatch, **changes) -> SupervisorTestHooks:
    """Change what local supervisors run from here on in this test (the stand-in runner, a stalled
    replica, a shorter end grace), on top of what is set already."""
    hooks = replace(LocalBackend.test_hooks or SupervisorTestHooks(), **changes)
    monkeypatch.setattr(LocalBackend, "test_hooks", hooks)
    return hooks


def hooks_prelude(hooks: SupervisorTestHooks) -> str:
    """Python source that installs ``hooks`` in another process (a kernel's startup file, a script)."""
    return (
        "from tfk8s_jupyter.backends.local import LocalBackend, SupervisorTestHooks\n"
        f"LocalBackend.test_hooks = SupervisorTestHooks(**{asdict(hooks)!r})\n"
    )


def assert_resize_continues(events: list[dict], history: list[dict], entry: dict, steps: int) -> None:
    """Around the resize ``entry``'s marker in a job's ``events``: the new shape's first step follows the
    checkpoint's step (the step count continues) and its loss continues from the loss before (not an
    untrained model's); no step reported twice."""
    n = next(i for i, h in enumerate(history) if h["time"] == entry["time"]) + 1
    at = next(i for i, e in enumerate(events) if e.get("type") == "resize" and e["seq"] == n)
    before = [e for e in events[:at] if e.get("type") in ("metric", "epoch")]
    after = [e for e in events[at:] if e.get("type") == "metric"]
    untrained = next(e for e in events if e.get("type") == "metric")["values"]["loss"]
    last, first = before[-1], after[0]
    assert last["type"] == "epoch" and last["epoch"] == entry["epoch"] and last["step"] == entry["step"]
    assert entry["step"] < first["step"] <= entry["step"] + steps, (entry, first)
    assert first["epoch"] == entry["epoch"] + 1
    assert first["values"]["loss"] < min(2 * last["values"]["loss"], untrained / 4), (untrained, last, first)
    steps_seen = [e["step"] for e in events if e.get("type") == "metric"]
    assert steps_seen == sorted(set(steps_seen)), steps_seen  # no step reported twice
