"""Real TensorFlow through the magic: a cell that uses helpers from earlier cells trains on the local backend."""

from __future__ import annotations

import numpy as np
import pytest
from notebook_helpers import magics_of, run

pytestmark = pytest.mark.tf


EARLIER_CELLS = [
    "import numpy as np\nimport tensorflow as tf",
    "LR = 0.01\nEPOCHS, STEPS = 2, 10\nHIDDEN = {'units': 16, 'activation': 'relu'}",
    """
def make_xy(n=1024):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = (x @ np.linspace(-1, 1, 8, dtype="float32").reshape(8, 1)).astype("float32")
    return x, y

def train_ds():
    x, y = make_xy()
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(64)
""",
    """
def hidden_layer():
    return tf.keras.layers.Dense(**HIDDEN)

def build_model(lr):
    tf.keras.utils.set_random_seed(7)
    model = tf.keras.Sequential([tf.keras.Input(shape=(8,)), hidden_layer(), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.Adam(lr), loss="mse")
    return model
""",
]

TRAIN = """\
model = build_model(LR)
history = model.fit(train_ds(), epochs=EPOCHS, steps_per_epoch=STEPS)
print("trained on", model.distribute_strategy.__class__.__name__)
"""


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("flags", "strategy", "reporter"),
    [
        ("--ps 1 --workers 2", "ParameterServerStrategy", "chief-0"),
        ("--workers 2", "CollectiveAllReduceStrategy", "worker-0"),  # MultiWorkerMirrored,
    ],
)
def test_build_model_from_earlier_cells_trains_distributed(shell, capsys, flags, strategy, reporter):
    for cell in EARLIER_CELLS:
        run(shell, cell)
    run(shell, "%config TFK8s.frontend = 'widgets'")
    shell.run_cell_magic(
        "tfk8s_train", f"{flags} --name ctx-job --metric-interval 0 --wait --timeout 400", TRAIN
    )
    job = shell.user_ns["_tfk8s_job"]
    assert job.phase == "succeeded", job.logs(tail=40)
    log = job.logs(reporter)
    assert f"trained on {strategy}" in log
    epochs = job.state.series("epoch")
    assert epochs["loss"]["x"] == [0, 1]
    assert epochs["loss"]["y"][1] < epochs["loss"]["y"][0]
    (panel,) = magics_of(shell).panels["ctx-job"]
    assert panel.done and panel.badge.value == "succeeded"
    assert "loss" in list(panel.lines.labels) and len(panel.lines.x) >= 3
    assert np.isfinite(np.atleast_2d(panel.lines.y)).any()
    assert panel.table.value.count("data-replica=") == len(job.spec.replica_names)


SHORT = """\
model = build_model(LR)
model.fit(train_ds(), epochs=2, steps_per_epoch=20, verbose=2)
"""


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("flags", "reporter"), [("--ps 1 --workers 1", "chief-0"), ("--workers 2", "worker-0")]
)
def test_a_40_step_job_draws_a_curve_ending_at_its_last_step(shell, flags, reporter):
    """With the default metric interval the first steps are reported one by one (a 40-step job used to
    draw one point), the curve ends at the last step, epochs tick whole, and TensorFlow never calls our
    metrics callback slow."""
    for cell in EARLIER_CELLS:
        run(shell, cell)
    run(shell, "%config TFK8s.frontend = 'widgets'")
    shell.run_cell_magic("tfk8s_train", f"{flags} --name short-job --wait --timeout 400", SHORT)
    job = shell.user_ns["_tfk8s_job"]
    assert job.phase == "succeeded", job.logs(tail=40)
    steps = job.state.series("step")["loss"]["x"]
    assert len(steps) >= 10, steps
    assert steps == sorted(steps) and steps[-1] == job.state.step == 40
    (panel,) = magics_of(shell).panels["short-job"]
    assert panel.done and panel.lines.x[-1] == 40 and panel.lines.marker == "circle"
    panel.kind.value = "epoch"
    assert list(panel._xaxis.tick_values) == [1, 2]
    assert "is slow compared to the batch time" not in job.logs(reporter)
