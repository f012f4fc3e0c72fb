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
