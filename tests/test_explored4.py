"""What a notebook user reads after four less common cells: a cell that raises ``KeyboardInterrupt`` itself,
a ``fit`` a callback stops in its first batch, a parameter-server cell saving by relative path with
``tf.saved_model.save``, and ``%tfk8s_model`` on a model whose custom class the kernel lacks. Each outcome
is checked as the user reads it (the job's one sentence, the refusal of the model)."""

from __future__ import annotations

import json
import linecache
import os
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tfk8s_jupyter as tk  # noqa: E402
from tfk8s_jupyter.backends.base import TFK8sError  # noqa: E402
from tfk8s_jupyter.replica_workdir import explain_ps_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# -- 1. KeyboardInterrupt ------------------------------------------------------------------------------
RAISES_INTERRUPT = """\
import tensorflow as tf
def give_up():
    raise KeyboardInterrupt
print("before", flush=True)
give_up()
"""

# The replica interrupted by a signal (as the kernel's interrupt reaches its process group).
SIGNALLED = """\
import os, signal, time
import tensorflow as tf
os.kill(os.getpid(), signal.SIGINT)
time.sleep(30)
"""


@pytest.mark.tf
@pytest.mark.timeout(300)
def test_a_keyboard_interrupt_the_cell_raises_names_its_line_and_a_signal_still_interrupts_the_replica():
    job = tk.submit(RAISES_INTERRUPT, workers=1, name="kbi-raised", max_restarts=0, setup_timeout=120)
    assert job.wait(timeout=120) == "failed"
    assert job.status.message == "worker-0 failed: KeyboardInterrupt (cell line 3)"

    job = tk.submit(SIGNALLED, workers=1, name="kbi-signal", max_restarts=0, setup_timeout=120)
    assert job.wait(timeout=120) == "failed"
    assert job.status.message == "worker-0 failed: KeyboardInterrupt: the replica was interrupted"


# -- 2. a fit stopped in its first epoch ---------------------------------------------------------------
class _Backend:
    """What ``results._fit_completed`` reads of a job: its checkpoint folder and its events."""

    def __init__(self, ckpt: Path, events: list[dict]):
        self.ckpt, self._events = ckpt, events

    def checkpoint_location(self, name):
        return str(self.ckpt)

    def events(self, name):
        return self._events


@pytest.mark.parametrize(("last_epoch", "completed"), [(True, True), (False, False)])
def test_a_fit_counts_as_finished_only_when_it_reached_its_last_epoch(tmp_path, last_epoch, completed):
    from tfk8s_jupyter.results import _fit_completed

    history = tmp_path / "fit-0" / "shared" / "history-worker-0.json"
    history.parent.mkdir(parents=True)
    history.write_text(json.dumps({"epoch": [0], "history": {"loss": [1.0]}}))
    events = [{"type": "epoch", "epoch": 0, "fit": 0, "last_epoch": last_epoch}]
    assert _fit_completed(_Backend(tmp_path, events), "j") is completed


STOPPED_IN_FIRST_BATCH = """\
import numpy as np
import tensorflow as tf
x = np.random.rand(64, 4).astype("float32")
y = x.sum(axis=1, keepdims=True)
model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
model.compile("adam", "mse")
class Stop(tf.keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        self.model.stop_training = True
model.fit(x, y, epochs=3, batch_size=8, callbacks=[Stop()], verbose=0)
raise RuntimeError("after fit")
"""


@pytest.mark.tf
@pytest.mark.timeout(300)
def test_a_fit_stopped_in_its_first_batch_is_not_told_to_resume_without_training_again():
    job = tk.submit(STOPPED_IN_FIRST_BATCH, workers=1, name="stop-first", max_restarts=0, setup_timeout=120)
    assert job.wait(timeout=120) == "failed"
    with pytest.raises(TFK8sError) as refused:
        job.model()
    sentence = str(refused.value)
    assert "finished training" not in sentence and "without training again" not in sentence, sentence
    assert sentence == "job 'stop-first' saved no model: the cell failed, so no model was saved."


# -- 3. a relative save path with parameter servers ----------------------------------------------------
def _ps_save_error(line: str) -> BaseException:
    """The NotFoundError a ps gives the chief's save through ``line``, raised from a cell's line."""

    class NotFoundError(Exception):
        pass

    source = (
        "def save(*args):\n"
        "    raise NotFoundError(MESSAGE)\n"
        "model.save = model.save_weights = tf.saved_model.save = save\n"
        f"{line}\n"
    )
    linecache.cache["<tfk8s-cell>"] = (len(source), None, source.splitlines(True), "<tfk8s-cell>")
    message = (
        "{{function_node __wrapped__SaveV2}} /job:ps/replica:0/task:0: exported/variables/variables_temp; "
        "No such file or directory [[{{node SaveV2}}]]"
    )
    names = {
        "NotFoundError": NotFoundError,
        "MESSAGE": message,
        "model": SimpleNamespace(),
        "tf": SimpleNamespace(saved_model=SimpleNamespace()),
    }
    try:
        exec(compile(source, "<tfk8s-cell>", "exec"), names)
    except NotFoundError as exc:
        return exc
    raise AssertionError("the cell did not fail")


@pytest.mark.parametrize(
    ("line", "call"),
    [
        ('tf.saved_model.save(model, "exported")', "tf.saved_model.save"),
        ('model.save("exported")', "model.save"),
        ('model.save_weights("exported")', "model.save_weights"),
    ],
)
def test_the_relative_path_refusal_with_parameter_servers_names_the_save_call_the_cell_used(line, call):
    try:
        sentence = explain_ps_checkpoint(_ps_save_error(line))
    finally:
        linecache.cache.pop("<tfk8s-cell>", None)
    assert sentence is not None
    assert f"give {call} an absolute path every replica reaches" in sentence, sentence
    assert "the checkpoint path 'exported' is relative" in sentence  # as the cell wrote it, not TF's temp


def test_the_refused_path_is_quoted_as_the_cell_wrote_it():
    from tfk8s_jupyter.replica_workdir import _as_written

    assert _as_written("exported/variables/variables_temp") == "exported"
    assert _as_written("w/ckpt_temp") == "w/ckpt"
    assert _as_written("w/ckpt_temp_0123456789abcdef0123456789abcdef/part-00000") == "w/ckpt"
    assert _as_written("plain/path") == "plain/path"


PS_SAVED_MODEL = """\
import numpy as np
import tensorflow as tf
x = np.random.rand(64, 4).astype("float32")
y = x.sum(axis=1, keepdims=True)
model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
model.compile("adam", "mse")
model.fit(x, y, epochs=1, batch_size=32, verbose=0)
tf.saved_model.save(model, "exported")
"""


@pytest.mark.tf
@pytest.mark.timeout(300)
def test_a_parameter_server_job_saving_a_saved_model_by_relative_path_is_told_to_fix_that_call():
    job = tk.submit(PS_SAVED_MODEL, ps=1, workers=1, name="ps-saved-model", max_restarts=0, setup_timeout=180)
    assert job.wait(timeout=180) == "failed"
    sentence = job.status.message
    assert "with parameter servers each ps saves and restores its own variables" in sentence, sentence
    assert "give tf.saved_model.save an absolute path every replica reaches" in sentence, sentence
    assert "(cell line 8)" in sentence


# -- 4. %tfk8s_model and a custom class ----------------------------------------------------------------
CUSTOM_LAYER = """\
import numpy as np
import keras
class Doubled(keras.layers.Layer):
    def call(self, x):
        return x * 2.0
x = np.random.rand(32, 4).astype("float32")
y = x.sum(axis=1, keepdims=True)
model = keras.Sequential([keras.Input((4,)), Doubled(), keras.layers.Dense(1)])
model.compile("adam", "mse")
model.fit(x, y, epochs=1, batch_size=16, verbose=0)
"""


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tfk8s_model_missing_a_custom_class_says_to_run_the_magic_again(tmp_path):
    from jupyter_client import KernelManager

    job = tk.submit(CUSTOM_LAYER, workers=1, name="custom-layer", max_restarts=0, setup_timeout=120)
    assert job.wait(timeout=180) == "succeeded", job.status.message

    work = tmp_path / "nb"
    work.mkdir()
    env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython"), "PYTHONPATH": str(REPO)}
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(work), env=env)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        text = []

        def hook(msg):
            if msg["msg_type"] == "stream":
                text.append(msg["content"]["text"])

        code = textwrap.dedent("%load_ext tfk8s_jupyter\n%tfk8s_model custom-layer net")
        kc.execute_interactive(code, timeout=300, output_hook=hook, allow_stdin=False)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    usage = [line for line in "".join(text).splitlines() if line.startswith("UsageError: ")]
    assert usage == [
        "UsageError: job 'custom-layer''s model uses the class 'Doubled', which its cell defined where the job "
        "ran and this kernel does not have; run its definition in a notebook cell (or import it) and run "
        "%tfk8s_model custom-layer net again."
    ], text
