"""Results back and data in, with cells as Keras and TensorFlow tutorials write them, trained unchanged
through ``tk.submit`` on real TensorFlow: what comes back (the model, its weights, the files the cell
wrote) is checked, not only that the job succeeded; what cannot come back is one sentence naming the fix.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tfk8s_jupyter as tk  # noqa: E402
from tfk8s_jupyter.results import ResultsError  # noqa: E402

# A subclassed model holding a custom layer registered with Keras, both defined in the trained cell, as
# Keras's "making new layers and models via subclassing" and serialization guides write them.
DEFINITIONS = """\
import keras


@keras.saving.register_keras_serializable(package="explored")
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


class Net(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.scale = Scale(3.0)
        self.out = keras.layers.Dense(1)

    def call(self, x):
        return self.out(self.scale(self.hidden(x)))
"""

SUBCLASSED = (
    DEFINITIONS
    + """
import numpy as np

keras.utils.set_random_seed(1)
x = np.random.default_rng(0).random((256, 4)).astype("float32")
y = x.sum(axis=1, keepdims=True)
net = Net()
net.compile("adam", "mse")
net.fit(x, y, epochs=2, batch_size=32, verbose=2)
print("predicted", net.predict(x[:4], verbose=0).ravel().tolist())
"""
)


@pytest.mark.tf
@pytest.mark.timeout(300)
def test_a_subclassed_model_defined_in_the_cell_comes_back_once_the_notebook_defines_its_classes(
    monkeypatch,
):
    job = tk.submit(SUBCLASSED, workers=2, name="subclassed", setup_timeout=180)
    assert job.wait(timeout=240) == "succeeded", job.status.message
    predicted = re.search(r"predicted (\[.*\])", job.logs("worker-0")).group(1)

    # The cell ran in the job's replicas: this kernel has no Net, so Keras cannot rebuild the model.
    with pytest.raises(ResultsError) as refused:
        job.model()
    assert str(refused.value) == (
        "job 'subclassed''s model uses the class 'Net', which its cell defined where the job ran and this "
        "kernel does not have; run its definition in a notebook cell (or import it) and call job.model() "
        "again, or pass custom_objects={'Net': Net}."
    )

    # A notebook cell runs the definitions: the model comes back with the weights the job trained.
    main = sys.modules["__main__"]
    defined: dict = {}
    exec(compile(DEFINITIONS, "<notebook cell>", "exec"), defined)  # noqa: S102
    monkeypatch.setattr(main, "Net", defined["Net"], raising=False)
    model = job.model()
    assert type(model).__name__ == "Net" and type(model.scale).__name__ == "Scale"
    assert model.scale.factor == 3.0
    x = np.random.default_rng(0).random((256, 4)).astype("float32")
    np.testing.assert_allclose(model.predict(x[:4], verbose=0).ravel(), eval(predicted), rtol=1e-5)


# A cell that saves its own model, weights and SavedModel by relative path, as Keras's save-and-load guide
# writes them, after training two models (the one that comes back is the last fit's, named ``clf``).
SAVES_ITS_OWN = """\
import numpy as np
import tensorflow as tf

tf.keras.utils.set_random_seed(1)
x = np.random.default_rng(0).random((256, 4)).astype("float32")
y = x.sum(axis=1, keepdims=True)
encoder = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3)])
encoder.compile("adam", "mse")
encoder.fit(x, np.repeat(y, 3, axis=1), epochs=1, batch_size=32, verbose=2)
clf = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(8, activation="relu"),
                           tf.keras.layers.Dense(1)])
clf.compile("adam", "mse")
clf.fit(x, y, epochs=2, batch_size=32, verbose=2)
clf.save("saved/clf.keras")
clf.save_weights("clf.weights.h5")
tf.saved_model.save(clf, "exported")
print("predicted", clf.predict(x[:4], verbose=0).ravel().tolist())
"""


@pytest.mark.tf
@pytest.mark.timeout(300)
def test_files_the_cell_saves_by_relative_path_are_listed_and_downloaded(tmp_path, monkeypatch):
    import keras

    notebook = tmp_path / "nb"
    notebook.mkdir()
    (notebook / "notes.txt").write_text("the notebook's own file, presented to the replicas")
    monkeypatch.chdir(notebook)
    job = tk.submit(SAVES_ITS_OWN, workers=2, name="own-saves", setup_timeout=180)
    assert job.wait(timeout=240) == "succeeded", job.status.message
    predicted = eval(re.search(r"predicted (\[.*\])", job.logs("worker-0")).group(1))

    cell_files = {a.path for a in job.artifacts() if a.kind == "cell"}
    assert {"saved/clf.keras", "clf.weights.h5", "exported/saved_model.pb"} <= cell_files, cell_files
    assert "notes.txt" not in cell_files  # the notebook's files it was given are not what it wrote
    dest = tmp_path / "here"
    dest.mkdir()
    copy = job.download("saved/clf.keras", dest=dest)
    assert copy == dest / "clf.keras"
    x = np.random.default_rng(0).random((256, 4)).astype("float32")
    mine = keras.models.load_model(copy)
    np.testing.assert_allclose(mine.predict(x[:4], verbose=0).ravel(), predicted, rtol=1e-5)
    assert (job.download("exported", dest=dest) / "saved_model.pb").is_file()
    # the model that comes back is the last fit's, whatever its variable is called
    np.testing.assert_allclose(job.model().predict(x[:4], verbose=0).ravel(), predicted, rtol=1e-5)


# Training finishes, then a later line of the cell fails: a metric the model was not compiled with, as
# plotting code copied from a tutorial often reads it.
FAILS_AFTER_FIT = """\
import numpy as np
import tensorflow as tf

tf.keras.utils.set_random_seed(1)
x = np.random.default_rng(0).random((256, 4)).astype("float32")
y = x.sum(axis=1, keepdims=True)
model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(8, activation="relu"),
                             tf.keras.layers.Dense(1)])
model.compile("adam", "mse")
history = model.fit(x, y, epochs=3, batch_size=32, verbose=2)
print("predicted", model.predict(x[:4], verbose=0).ravel().tolist())
print("best", max(history.history["accuracy"]))
"""


@pytest.mark.tf
@pytest.mark.timeout(300)
def test_a_cell_failing_after_its_fit_says_how_to_get_the_trained_model_and_that_way_works():
    job = tk.submit(FAILS_AFTER_FIT, workers=2, name="after-fit", setup_timeout=180)
    assert job.wait(timeout=240) == "failed", job.status.message
    assert "KeyError: 'accuracy'" in job.status.message
    predicted = eval(re.search(r"predicted (\[.*\])", job.logs("worker-0")).group(1))
    with pytest.raises(ResultsError) as refused:
        job.model()
    assert str(refused.value) == (
        "job 'after-fit' failed after its fit finished training, so no model was saved; its checkpoints "
        "hold the trained weights, so fix the cell and run it again with --resume-from after-fit "
        "(resume_from='after-fit'), which restores them without training again."
    )

    fixed = FAILS_AFTER_FIT.replace('history.history["accuracy"]', 'history.history["loss"]')
    again = tk.submit(fixed, workers=2, name="fixed", setup_timeout=180, resume_from="after-fit")
    assert again.wait(timeout=240) == "succeeded", again.status.message
    assert "trained no epoch" in again.logs("worker-0")
    x = np.random.default_rng(0).random((256, 4)).astype("float32")
    np.testing.assert_allclose(again.model().predict(x[:4], verbose=0).ravel(), predicted, rtol=1e-5)


@pytest.mark.tf
@pytest.mark.timeout(300)
def test_a_job_stopped_during_its_second_fit_is_not_taken_for_finished_training():
    from local_helpers import wait_for

    cell = FAILS_AFTER_FIT.replace(
        'print("best", max(history.history["accuracy"]))',
        "import time\n"
        "slow = tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: time.sleep(3))\n"
        "model.fit(x, y, epochs=20, batch_size=32, verbose=2, callbacks=[slow])\n",
    )
    job = tk.submit(cell, workers=2, name="stopped", setup_timeout=180)
    wait_for(
        lambda: any(e.get("type") == "epoch" and e.get("fit") == 1 for e in job.events()),
        200,
        "the second fit's first epoch",
    )
    job.stop()
    with pytest.raises(ResultsError, match=r"^job 'stopped' stopped before saving a model; see job.logs"):
        job.model()


@pytest.mark.tf
@pytest.mark.timeout(300)
def test_a_parameter_server_subclassed_model_needs_its_classes_on_tf_keras_and_then_comes_back(monkeypatch):
    job = tk.submit(SUBCLASSED, workers=2, ps=1, name="ps-subclassed", setup_timeout=180)
    assert job.wait(timeout=240) == "succeeded", job.status.message
    predicted = eval(re.search(r"predicted (\[.*\])", job.logs("chief-0")).group(1))
    main = sys.modules["__main__"]

    # The notebook defines the classes with Keras 3, as the cell reads: the job trained them on tf_keras.
    keras3: dict = {}
    exec(compile(DEFINITIONS, "<notebook cell>", "exec"), keras3)  # noqa: S102
    monkeypatch.setattr(main, "Net", keras3["Net"], raising=False)
    with pytest.raises(ResultsError) as refused:
        job.model()
    assert str(refused.value) == (
        "job 'ps-subclassed''s model was trained with tf_keras (import tf_keras as keras) and uses the class "
        "'Net', but this notebook's Net is built on Keras 3 (import keras); define it with tf_keras (import "
        "tf_keras as keras) in a notebook cell and call job.model() again."
    )

    legacy: dict = {}
    source = DEFINITIONS.replace("import keras\n", "import tf_keras as keras\n").replace(
        'package="explored"', 'package="explored-legacy"'
    )
    exec(compile(source, "<notebook cell>", "exec"), legacy)  # noqa: S102
    monkeypatch.setattr(main, "Net", legacy["Net"])
    model = job.model()
    assert type(model).__module__ != "keras" and model.scale.factor == 3.0
    x = np.random.default_rng(0).random((256, 4)).astype("float32")
    np.testing.assert_allclose(model.predict(x[:4], verbose=0).ravel(), predicted, rtol=1e-5)
