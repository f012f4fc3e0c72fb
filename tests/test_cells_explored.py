"""Cells as notebook users write them, trained unchanged through ``tk.submit`` on real TensorFlow.

Plain Keras cells that never name a strategy (a CSV next to the notebook, ``validation_split``, the usual
callbacks, ``evaluate``/``predict``/``save`` after ``fit``), a Keras error as the notebook shows it, and a
short custom loop with the default ``metric_interval``: what each gives back is checked, not only that the
job succeeded.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tfk8s_jupyter as tk  # noqa: E402
from tfk8s_jupyter import protocol  # noqa: E402
from tfk8s_jupyter.replica_metrics import CellMetrics  # noqa: E402
from tfk8s_jupyter.replica_output import LineTrackingStdout, Reporter  # noqa: E402

SHAPES = {"parameter_server": {"workers": 2, "ps": 1}, "multi_worker_mirrored": {"workers": 2, "ps": 0}}
REPORTING = {"parameter_server": "chief-0", "multi_worker_mirrored": "worker-0"}

# A classification cell as people write it: a CSV beside the notebook, numpy arrays, validation_split,
# the usual callbacks (relative paths), a custom callback that prints, then evaluate, predict and save.
CSV_CLASSIFIER = """\
import numpy as np
import pandas as pd
import tensorflow as tf

tf.keras.backend.clear_session()
tf.keras.utils.set_random_seed(1)
df = pd.read_csv("data/train.csv")
x = df[["a", "b", "c", "d"]].values.astype("float32")
y = df["label"].values


class PrintLogs(tf.keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        print("epoch", epoch, "keys", sorted(logs))


model = tf.keras.Sequential([
    tf.keras.layers.Input(shape=(4,)),
    tf.keras.layers.Dense(16, activation="relu"),
    tf.keras.layers.Dense(2, activation="softmax"),
])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
callbacks = [
    tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=3),
    tf.keras.callbacks.ModelCheckpoint("ckpt/best.keras", save_best_only=True),
    tf.keras.callbacks.TensorBoard(log_dir="./logs"),
    tf.keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.9),
    PrintLogs(),
]
history = model.fit(x, y, epochs=3, batch_size=32, validation_split=0.2, callbacks=callbacks)
print("evaluate", [round(v, 3) for v in model.evaluate(x[:100], y[:100], verbose=0)])
print("predict", model.predict(x[:5], verbose=0).shape)
model.save("model.keras")
"""


def _write_csv(folder: Path, rows: int = 640) -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    x = rng.normal(size=(rows, 4)).round(4)
    labels = (x[:, 0] - x[:, 2] > 0).astype(int)
    (folder / "data").mkdir()
    lines = ["a,b,c,d,label"] + [
        ",".join(map(str, r)) + f",{label}" for r, label in zip(x, labels, strict=True)
    ]
    (folder / "data" / "train.csv").write_text("\n".join(lines) + "\n")


def failure_sentence(job) -> tuple[str, dict]:
    """A failed job's error event and the one sentence of its message (checked to be one sentence)."""
    assert job.wait(timeout=300) == "failed", job.status.message
    error = next(e for e in job.events() if e["type"] == "error")
    sentence = error["message"].split(" (cell line")[0]
    assert sentence.count(". ") == 0 and sentence.endswith("."), sentence
    return sentence, error


@pytest.mark.tf
@pytest.mark.timeout(600)
@pytest.mark.parametrize("strategy", list(SHAPES))
def test_a_plain_keras_cell_with_callbacks_trains_and_gives_its_results_back(
    tmp_path, monkeypatch, tfk8s_home, strategy
):
    notebook = tmp_path / "nb"
    notebook.mkdir()
    _write_csv(notebook)
    monkeypatch.chdir(notebook)
    before = sorted(p.relative_to(notebook) for p in notebook.rglob("*"))
    job = tk.submit(CSV_CLASSIFIER, **SHAPES[strategy], name="plain", setup_timeout=180)
    assert job.wait(timeout=400) == "succeeded", job.status.message
    assert {r.name: r.state for r in job.status.replicas} == dict.fromkeys(
        job.spec.replica_names, "succeeded"
    )

    points = job.metrics()
    epochs = [p for p in points if p["kind"] == "epoch"]
    assert [p["step"] for p in epochs] == [16, 32, 48]  # 512 training rows / 32: the data once an epoch
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(epochs[-1]["values"])
    assert len([p for p in points if p["kind"] == "step"]) >= 40  # a short fit's every step is drawn
    assert epochs[0]["values"]["loss"] > epochs[-1]["values"]["loss"]

    log = job.logs(REPORTING[strategy])
    assert "epoch 2 keys" in log and "predict (5, 2)" in log and "evaluate [" in log
    index = json.loads((tfk8s_home / "plain" / "artifacts" / "artifacts.json").read_text())
    work = tfk8s_home / "plain" / "work"
    reporting = work / REPORTING[strategy]
    assert index["tensorboard"] == [str(reporting / "logs")]  # the cell's own TensorBoard folder, listed
    assert any((reporting / "logs" / "train").glob("events.out.tfevents.*"))
    assert (reporting / "ckpt" / "best.keras").is_file() and (reporting / "model.keras").is_file()
    assert job.model().count_params() == 4 * 16 + 16 + 16 * 2 + 2
    # what the replicas wrote stayed in their own work dirs: the notebook's folder is as it was, and no
    # replica's work dir holds a local copy of another file system's path (``ram://`` -> ``ram:/``)
    assert sorted(p.relative_to(notebook) for p in notebook.rglob("*")) == before
    strays = [p for p in work.rglob("*") if p.name.endswith(":")]
    assert not strays, strays


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_a_keras_error_reaches_the_notebook_as_plain_text():
    cell = (
        "import numpy as np\nimport tensorflow as tf\n"
        "model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1)])\n"
        "model.compile('sgd', 'mse')\n"
        "model.fit(np.zeros((64, 5), 'float32'), np.zeros((64, 1)), epochs=1)\n"
    )
    job = tk.submit(cell, workers=2, name="bad-shape", setup_timeout=180)
    assert job.wait(timeout=300) == "failed"
    error = next(e for e in job.events() if e["type"] == "error")
    assert "expected axis -1 of input shape to have value 3" in error["message"], error
    assert error["line"] == 5
    # Keras 3 writes part of this message in bold: no terminal code reaches the panel, REST or job list
    for text in (error["message"], error["traceback"], job.status.message):
        assert "\x1b" not in text and "[1m" not in text and "[0m" not in text, text


# The all-reduce custom loop of TensorFlow's multi_worker_with_ctl tutorial, short: one summary an epoch.
SHORT_LOOP = """\
import numpy as np
import tensorflow as tf

strategy = tf.distribute.MultiWorkerMirroredStrategy()
rng = np.random.default_rng(0)
x = rng.normal(size=(256, 4)).astype("float32")
y = (x.sum(axis=1, keepdims=True) > 0).astype("float32")


def dataset_fn(input_context):
    batch = input_context.get_per_replica_batch_size(64)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch)
    return ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)


with strategy.scope():
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1, activation="sigmoid")])
    optimizer = tf.keras.optimizers.SGD(0.5)
iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))


@tf.function
def train_step(iterator):
    def step_fn(inputs):
        features, labels = inputs
        with tf.GradientTape() as tape:
            per_example = tf.keras.losses.binary_crossentropy(labels, model(features, training=True))
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=64)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return strategy.reduce("SUM", strategy.run(step_fn, args=(next(iterator),)), axis=None)


for epoch in range(1, 9):
    total = 0.0
    for _ in range(4):
        total += train_step(iterator)
    tf.summary.scalar("loss", total / 4, step=epoch)
    print("epoch", epoch, "loss", float(total / 4))
"""


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_a_short_custom_loop_with_the_default_interval_draws_every_epoch():
    job = tk.submit(SHORT_LOOP, workers=2, name="short-loop", setup_timeout=180)  # metric_interval: 1 s
    assert job.wait(timeout=300) == "succeeded", job.status.message
    points = [p for p in job.metrics() if p["kind"] == "step"]
    assert [p["step"] for p in points] == list(range(1, 9)), points
    assert points[0]["values"]["loss"] > points[-1]["values"]["loss"]
    assert "epoch 8 loss" in job.logs("worker-0")


def test_a_cells_first_points_are_never_throttled_then_the_interval_grows(monkeypatch):
    from tfk8s_jupyter import replica_metrics

    clock = iter([0.0, 1.0, 2.0, 3.0, 3.01, 10.0, 10.0])
    monkeypatch.setattr(replica_metrics, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    raw = io.StringIO()
    metrics = CellMetrics(Reporter(LineTrackingStdout(raw), enabled=True), interval=3600, dense=3)
    for step in range(1, 7):  # a step's point is printed when the next step begins
        metrics.add(step, {"loss": 1.0 / step})
    metrics.flush()
    # steps 1-3: dense; step 4 came 0.01 s after step 3, under (3.01 - 1) / DENSE_STEPS: dropped; step 5,
    # 7 s on, is due under the grown interval (far below metric_interval); step 6 is the cell's end
    assert [e["step"] for e in protocol.parse_lines(raw.getvalue())] == [1, 2, 3, 5, 6]


# A hand-made epoch loop over train_on_batch, as GAN and Keras 2 era notebooks write it.
BATCH_LOOP = """\
import hashlib
import numpy as np
import tensorflow as tf

rng = np.random.default_rng(0)
x = rng.normal(size=(256, 4)).astype("float32")
y = (x.sum(axis=1) > 0).astype("float32")
tf.keras.utils.set_random_seed(0)
model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer=tf.keras.optimizers.SGD(0.5), loss="binary_crossentropy", metrics=["accuracy"])
for epoch in range(3):
    for i in range(0, 256, 32):
        out = model.train_on_batch(x[i : i + 32], y[i : i + 32])
    print("epoch", epoch, "out", type(out).__name__, len(out))
print("as dict", sorted(model.train_on_batch(x[:32], y[:32], return_dict=True)))
print("replicas", tf.distribute.get_strategy().num_replicas_in_sync)
print("predict_on_batch", model.predict_on_batch(x[:3]).shape)
digest = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()[:16]
print("weights", digest)
"""


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_a_train_on_batch_loop_trains_on_every_worker_and_draws_its_curve():
    job = tk.submit(BATCH_LOOP, workers=2, name="batch-loop", setup_timeout=180)
    assert job.wait(timeout=300) == "succeeded", job.status.message
    points = [p for p in job.metrics() if p["kind"] == "step"]
    assert [p["step"] for p in points] == list(range(1, 26)), points  # 3 x 8 batches + 1: each a point
    assert all(set(p["values"]) == {"loss", "accuracy"} for p in points), points[:2]
    assert sum(p["values"]["loss"] for p in points[:8]) > sum(p["values"]["loss"] for p in points[16:24])
    logs = {name: job.logs(name) for name in ("worker-0", "worker-1")}
    for log in logs.values():
        assert "epoch 2 out list 2" in log and "as dict ['accuracy', 'loss']" in log
        assert "replicas 2" in log
        assert "predict_on_batch (3, 1)" in log  # the batch's outputs, not each worker's copy of them
    digests = [log.split("weights ")[1].split()[0] for log in logs.values()]
    assert digests[0] == digests[1]  # trained in sync


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_train_on_batch_with_parameter_servers_is_refused_in_one_sentence():
    cell = BATCH_LOOP.replace(
        "for epoch in range(3):",
        "model.fit(x, y, epochs=1, batch_size=32, verbose=0)\n"
        'print("predict_on_batch", model.predict_on_batch(x[:3]).shape)\n'
        "for epoch in range(3):",
    )
    job = tk.submit(cell, ps=1, workers=1, name="batch-ps", setup_timeout=180)
    sentence, error = failure_sentence(job)
    assert sentence.startswith("DistributionError: train_on_batch() cannot run with parameter servers")
    assert "call model.fit(x, y, batch_size=..., epochs=...) instead" in sentence
    assert "ps=0, strategy='multi_worker_mirrored'" in sentence
    assert "create_per_worker_dataset" not in error["message"]
    assert error["line"] == 15  # the train_on_batch call
    assert all(r.restarts == 0 for r in job.status.replicas)
    assert "predict_on_batch (3, 1)" in job.logs("chief-0")  # computed on the chief, as predict is


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_a_train_on_batch_loop_on_kept_replicas_reports_to_its_own_job(tfk8s_home):
    from tfk8s_jupyter.backends.local_keep import stop_kept
    from tfk8s_jupyter.config import TFK8s, set_current_config

    set_current_config(TFK8s(warm_pool=0, keep_warm=600))
    first = tk.submit(BATCH_LOOP, workers=2, name="batch-first", setup_timeout=180)
    assert first.wait(timeout=300) == "succeeded", first.status.message
    second = tk.submit(BATCH_LOOP, workers=2, name="batch-second", setup_timeout=180)
    assert second.wait(timeout=300) == "succeeded", second.status.message
    assert {r.launch for r in second.status.replicas} == {"kept"}
    # the second run's patches are its own: its points go to its record, none to the first job's
    for job in (first, second):
        assert [p["step"] for p in job.metrics() if p["kind"] == "step"] == list(range(1, 26))
    assert "predict_on_batch (3, 1)" in second.logs("worker-1")
    assert stop_kept(tfk8s_home) == 2


# Keras's ModelCheckpoint as most notebooks write it: weights only, to a relative folder.
PS_CHECKPOINT = """\
import os
import numpy as np
import tensorflow as tf

x = np.random.rand(256, 4).astype("float32")
y = x.sum(axis=1, keepdims=True)
model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
model.compile("adam", "mse")
path = PATH
model.fit(x, y, epochs=2, batch_size=32, callbacks=[tf.keras.callbacks.ModelCheckpoint(path, save_weights_only=True)])
model.load_weights(path)
print("reloaded", path)
"""


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_a_relative_checkpoint_path_with_parameter_servers_is_one_sentence_and_its_fix_works():
    job = tk.submit(
        PS_CHECKPOINT.replace("PATH", "'ckpt/weights'"), ps=1, workers=1, name="ps-ckpt", setup_timeout=180
    )
    sentence, error = failure_sentence(job)
    assert sentence.startswith("NotFoundError: with parameter servers each ps saves and restores its own")
    assert "'ckpt/weights' is relative" in sentence  # the path the cell gave, not TensorFlow's temp name
    assert "os.path.join(os.environ['TFK8S_CHECKPOINT_DIR'], 'weights')" in sentence
    assert "notebook's folder" not in sentence and "Graph execution error" not in sentence
    assert error["line"] == 10 and all(r.restarts == 0 for r in job.status.replicas)

    fixed = PS_CHECKPOINT.replace("PATH", "os.path.join(os.environ['TFK8S_CHECKPOINT_DIR'], 'weights')")
    job = tk.submit(fixed, ps=1, workers=1, name="ps-ckpt-fixed", setup_timeout=180)
    assert job.wait(timeout=300) == "succeeded", job.status.message
    assert "reloaded " in job.logs("chief-0")
    assert [p["step"] for p in job.metrics() if p["kind"] == "epoch"] == [8, 16]


# A keras.utils.Sequence, as notebooks that read batches from disk write it.
SEQUENCE_FIT = """\
import math
import numpy as np
import tensorflow as tf


class Batches(tf.keras.utils.Sequence):
    def __init__(self, x, y, batch_size, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, i):
        part = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[part], self.y[part]


x = np.random.default_rng(0).random((320, 4)).astype("float32")
y = x.sum(axis=1, keepdims=True)
model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
model.compile("adam", "mse")
model.fit(x, y, epochs=1, batch_size=32, verbose=0)
print("predict", model.predict(Batches(x[:40], y[:40], 16), verbose=0).shape)
model.fit(Batches(x, y, 32), epochs=2, verbose=2)
"""


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_a_keras_sequence_with_parameter_servers_is_refused_in_one_sentence():
    job = tk.submit(SEQUENCE_FIT, ps=1, workers=1, name="sequence-ps", setup_timeout=180)
    sentence, error = failure_sentence(job)
    assert sentence.startswith(
        "InputNotReadable: fit() got a keras.utils.Sequence (Batches), which parameter"
    )
    assert "pass numpy arrays or a tf.data dataset" in sentence and "ps=0" in sentence
    assert "DatasetCreator" not in error["message"] and error["line"] == 25
    assert "predict (40, 1)" in job.logs("chief-0")  # predict reads a Sequence on the chief itself
    assert all(r.restarts == 0 for r in job.status.replicas)
