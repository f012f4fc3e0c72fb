"""More cells as notebook users write them, run unchanged through ``tk.submit`` on real TensorFlow.

Each cell here runs in a plain notebook kernel; the job must run it with the same results, or refuse it in
one sentence that names the fix.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tfk8s_jupyter as tk  # noqa: E402

# The top of many notebooks: threading set first, as TensorFlow's docs say it must be (before any op runs).
THREADING_FIRST = """\
import numpy as np
import tensorflow as tf

tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.threading.set_intra_op_parallelism_threads(2)
tf.keras.utils.set_random_seed(0)
x = np.random.default_rng(0).random((128, 4)).astype("float32")
y = x.sum(axis=1, keepdims=True)
model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
model.compile("adam", "mse")
model.fit(x, y, epochs=1, batch_size=32, verbose=2)
print("trained on", tf.distribute.get_strategy().num_replicas_in_sync, "replicas")
"""


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_threading_set_at_the_top_of_a_cell_is_noted_and_the_cell_trains():
    job = tk.submit(THREADING_FIRST, workers=2, name="threads-first", setup_timeout=180)
    assert job.wait(timeout=300) == "succeeded", job.status.message
    log = job.logs("worker-0")
    assert "trained on 2 replicas" in log
    assert "set_inter_op_parallelism_threads(1) is ignored" in log
    assert "set_intra_op_parallelism_threads(2) is ignored" in log
    assert [p["step"] for p in job.metrics() if p["kind"] == "epoch"] == [
        4
    ]  # 128 rows / a global batch of 32


# A notebook's display(): a DataFrame, a handle updated later, and the cell's other output around them.
DISPLAYING = """\
import pandas as pd

df = pd.DataFrame({"a": [1, 2], "b": [3.5, 4.5]})
display(df)
handle = display("first", display_id=True)
handle.update("second")
print("after display")
"""


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_display_in_a_cell_prints_what_a_notebook_shows_as_text():
    job = tk.submit(DISPLAYING, workers=2, name="display", setup_timeout=180)
    assert job.wait(timeout=300) == "succeeded", job.status.message
    log = job.logs("worker-0")
    table = log.index("   a    b\n0  1  3.5\n1  2  4.5")
    assert table < log.index("'first'") < log.index("'second'") < log.index("after display")


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_input_in_a_cell_fails_in_one_sentence_that_names_the_fix():
    from test_cells_explored import failure_sentence

    cell = "import tensorflow as tf\nepochs = int(input('epochs? ') or 5)\nprint('epochs', epochs)\n"
    job = tk.submit(cell, workers=2, name="input", setup_timeout=180)
    sentence, error = failure_sentence(job)
    assert sentence == (
        "InputUnavailable: input('epochs? ') has no one to answer it in a job, whose replicas run without a "
        "terminal; set the value in the cell instead."
    )
    assert error["line"] == 2 and error["error_type"].endswith("InputUnavailable")
    # still an EOFError, so a cell that falls back on end of input keeps working
    fallback = "try:\n    epochs = int(input())\nexcept EOFError:\n    epochs = 3\nprint('epochs', epochs)\n"
    job = tk.submit(fallback, workers=1, name="input-fallback", setup_timeout=180)
    assert job.wait(timeout=300) == "succeeded", job.status.message
    assert "epochs 3" in job.logs("worker-0")


# A Keras 3 model with its own train_step, returning the results of a custom Metric whose
# result() is its variable, as Keras's "customizing fit" guide writes them.
CUSTOM_TRAIN_STEP = """\
import hashlib
import numpy as np
import keras
import tensorflow as tf
from keras import ops


class MaxError(keras.metrics.Metric):
    def __init__(self, name="max_error", **kwargs):
        super().__init__(name=name, **kwargs)
        self.value = self.add_weight(name="value", initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.value.assign(ops.maximum(self.value, ops.max(ops.abs(y_true - y_pred))))

    def result(self):
        return self.value


class Regressor(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(1)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.max_error = MaxError()

    def call(self, x):
        return self.dense(x)

    @property
    def metrics(self):
        return [self.loss_tracker, self.max_error]

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            pred = self(x, training=True)
            loss = ops.mean(ops.square(y - pred))
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        self.loss_tracker.update_state(loss)
        self.max_error.update_state(y, pred)
        return {m.name: m.result() for m in self.metrics}


keras.utils.set_random_seed(0)
x = np.random.default_rng(0).random((256, 4)).astype("float32")
y = x.sum(axis=1, keepdims=True)
model = Regressor()
model.compile(optimizer="adam")
history = model.fit(x, y, epochs=2, batch_size=32, verbose=2)
print("history", sorted(history.history))
digest = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()[:16]
print("weights", digest)
"""


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_a_keras3_train_step_returning_a_metric_variable_trains_with_all_reduce():
    job = tk.submit(CUSTOM_TRAIN_STEP, workers=2, name="train-step", setup_timeout=180)
    assert job.wait(timeout=300) == "succeeded", job.status.message
    logs = {name: job.logs(name) for name in ("worker-0", "worker-1")}
    assert "history ['loss', 'max_error']" in logs["worker-0"]
    digests = [log.split("weights ")[1].split()[0] for log in logs.values()]
    assert digests[0] == digests[1]  # trained in sync
    epochs = [p for p in job.metrics() if p["kind"] == "epoch"]
    assert [p["step"] for p in epochs] == [8, 16]  # 256 rows / a global batch of 32
    assert set(epochs[-1]["values"]) == {"loss", "max_error"}
    assert epochs[0]["values"]["loss"] > epochs[-1]["values"]["loss"]


# A dataset read through Python: Dataset.from_generator, a tf.py_function in map, as data-loading notebooks
# write them. All-reduce workers run it (each in its own process); parameter-server workers cannot.
PYTHON_PIPELINE = """\
import numpy as np
import tensorflow as tf

x = np.random.default_rng(0).random((256, 4)).astype("float32")
y = x.sum(axis=1, keepdims=True)


def rows():
    for i in range(len(x)):
        yield x[i], y[i]


def as_numpy(features, label):
    features = tf.py_function(lambda f: f.numpy() * 1.0, [features], tf.float32)
    features.set_shape([4])
    return features, label


signature = (tf.TensorSpec((4,), tf.float32), tf.TensorSpec((1,), tf.float32))
ds = tf.data.Dataset.from_generator(rows, output_signature=signature)
ds = ds.map(as_numpy, num_parallel_calls=tf.data.AUTOTUNE).batch(32).prefetch(tf.data.AUTOTUNE)
model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
model.compile("adam", "mse")
model.fit(ds.repeat(), epochs=2, steps_per_epoch=8, verbose=2)
print("trained")
"""


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_a_dataset_calling_python_with_parameter_servers_is_refused_in_one_sentence():
    from test_cells_explored import failure_sentence

    job = tk.submit(PYTHON_PIPELINE, ps=1, workers=1, name="python-pipeline-ps", setup_timeout=180)
    sentence, error = failure_sentence(job)
    assert sentence.startswith(
        "InputNotReadable: fit() got a tf.data dataset that calls Python code (Dataset.from_generator and "
        "tf.py_function), which parameter-server workers cannot run"
    )
    assert "ps=0, strategy='multi_worker_mirrored'" in sentence
    assert error["line"] == 24 and all(r.restarts == 0 for r in job.status.replicas)


# Per-batch callbacks as notebooks add them to fit (a progress bar such as tqdm's TqdmCallback is one too).
BATCH_CALLBACKS = """\
import numpy as np
import tensorflow as tf


class EveryBatch(tf.keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        pass


x = np.random.default_rng(0).random((128, 4)).astype("float32")
y = x.sum(axis=1, keepdims=True)
model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
model.compile("adam", "mse")
model.fit(x, y, epochs=1, verbose=0, callbacks=[tf.keras.callbacks.TerminateOnNaN(), tf.keras.callbacks.EarlyStopping("loss")])
model.fit(x, y, epochs=1, verbose=0, callbacks=[tf.keras.callbacks.LambdaCallback(on_batch_end=print), EveryBatch()])
"""


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_batch_level_callbacks_with_parameter_servers_are_refused_in_one_sentence():
    from test_cells_explored import failure_sentence

    job = tk.submit(BATCH_CALLBACKS, ps=1, workers=1, name="batch-callbacks-ps", setup_timeout=180)
    sentence, error = failure_sentence(job)
    assert sentence.startswith(
        "BatchCallbackUnsupported: fit() got callbacks with batch-level hooks (LambdaCallback, EveryBatch: "
        "on_train_batch_end and the like), which tf_keras cannot call with parameter servers"
    )
    assert "ps=0, strategy='multi_worker_mirrored'" in sentence and "object at 0x" not in error["message"]
    assert error["line"] == 15 and all(r.restarts == 0 for r in job.status.replicas)


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_splitting_the_cpu_into_logical_devices_is_refused_in_one_sentence():
    from test_cells_explored import failure_sentence

    cell = (
        "import tensorflow as tf\n"
        "cpus = tf.config.list_physical_devices('CPU')\n"
        "tf.config.set_visible_devices(cpus, 'CPU')  # as it is: no change, no error\n"
        "tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)\n"
    )
    job = tk.submit(cell, workers=2, name="logical-devices", setup_timeout=180)
    sentence, error = failure_sentence(job)
    assert sentence == (
        "LateDeviceSetting: tf.config.set_logical_device_configuration() cannot change this replica's "
        "devices, because its TensorFlow runtime started before the cell (the job's strategy needs it); "
        "remove the call and size the job instead (workers=..., cpu=..., gpus=...)."
    )
    assert error["line"] == 4


# What the parameter-server input check reads of a pipeline: the ops of its stages' functions, never the
# pipeline's serialized graph (which holds every array a from_tensor_slices was given).
CHECK_PIPELINES = """\
import json, resource, sys, time
import numpy as np
import tensorflow as tf
from tfk8s_jupyter.replica_inputs import _python_ops

found = {}
big = np.zeros((50_000_000,), dtype="float32")  # 200 MB of training data
pipeline = tf.data.Dataset.from_tensor_slices(big).shuffle(10).batch(32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
found["big array"] = _python_ops(pipeline)
grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
double = lambda v: v * 2
found["py_function in an interleave"] = _python_ops(
    tf.data.Dataset.range(4).interleave(
        lambda v: tf.data.Dataset.range(3).map(lambda a: tf.py_function(double, [a], tf.int64))
    ).batch(2)
)
found["numpy_function in a map"] = _python_ops(
    tf.data.Dataset.range(4).map(lambda v: tf.numpy_function(double, [v], tf.int64)).repeat()
)
found["from_generator"] = _python_ops(
    tf.data.Dataset.from_generator(lambda: iter(range(3)), output_signature=tf.TensorSpec((), tf.int64))
    .map(lambda v: v + 1).batch(2)
)
found["tensor ops only"] = _python_ops(tf.data.Dataset.range(9).map(lambda v: tf.cond(v > 3, lambda: v, lambda: -v)))
print(json.dumps({"found": found, "grew_mb": grew_mb}))
"""


@pytest.mark.tf
@pytest.mark.timeout(300)
def test_the_python_pipeline_check_finds_nested_python_and_never_copies_the_training_data():
    import json
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", CHECK_PIPELINES], capture_output=True, text=True, timeout=240, check=True
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["found"] == {
        "big array": [],
        "py_function in an interleave": ["tf.py_function"],
        "numpy_function in a map": ["tf.numpy_function"],
        "from_generator": ["Dataset.from_generator"],
        "tensor ops only": [],
    }
    # reading the serialized graph copied the 200 MB array almost three times (+572 MB)
    assert result["grew_mb"] < 100, result
