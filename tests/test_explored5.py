"""Repeat runs on kept replicas, with real TensorFlow: a cell run twice on the same shape (the second run in
the first run's kept processes) finds the process as a cold replica would. What the first run changed
process-wide is put back: Keras's registry of custom objects, check numerics, soft device placement,
logging handlers, ``logging.captureWarnings``, ``sys.path`` and the modules imported through it, exception
hooks, umask, the default socket timeout, NumPy behaviour of tensors, TF32, the garbage collector, the
switch interval, async eager execution, traceback filtering, device placement logging, AutoGraph's
verbosity, TensorFlow 1 switches; and the kept run's own set-up leaves no logging handler behind that would
make the cell's ``logging.basicConfig`` do nothing."""

from __future__ import annotations

import textwrap

import pytest

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends.local_keep import stop_kept
from tfk8s_jupyter.config import TFK8s, set_current_config

pytestmark = pytest.mark.tf

# What the cell finds when it starts (printed first, so a cold run prints the cold view), then what a user
# does that changes the process.
PROBE = textwrap.dedent(
    """\
    import logging, os, socket, sys, threading
    import tensorflow as tf
    keras = tf.keras
    try:
        numerics = str(float(tf.math.log(tf.constant(-1.0))))
    except Exception as e:
        numerics = type(e).__name__
    old_umask = os.umask(0o022)
    os.umask(old_umask)
    print("found:", "Custom>Doubler" in keras.utils.get_custom_objects(), numerics,
          tf.config.get_soft_device_placement(), len(logging.root.handlers), logging.root.level,
          len(logging.getLogger("train").handlers), "/tmp/tfk8s-extra" in sys.path,
          sys.excepthook is sys.__excepthook__, threading.excepthook is threading.__excepthook__,
          oct(old_umask), socket.getdefaulttimeout())
    try:
        promoted = (tf.constant(1) + 2.5).dtype.name
    except Exception as e:
        promoted = type(e).__name__
    import gc
    from tensorflow.python.autograph.utils import ag_logging
    from tensorflow.python.eager import context
    print("found more:", promoted, hasattr(tf.constant([1.0]), "tolist"), gc.isenabled(), gc.get_threshold(),
          sys.getswitchinterval(), tf.config.experimental.tensor_float_32_execution_enabled(),
          tf.config.experimental.get_synchronous_execution(), tf.debugging.is_traceback_filtering_enabled(),
          context.context().log_device_placement, ag_logging.verbosity_level,
          type(tf.constant(1) == 1).__name__, type(tf.TensorShape([2])[0]).__name__,
          __import__("warnings").showwarning.__module__)
    """
)
CHANGES = textwrap.dedent(
    """\
    @keras.utils.register_keras_serializable(package="Custom")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0
    tf.debugging.enable_check_numerics()
    tf.config.set_soft_device_placement(False)
    logging.basicConfig(level=logging.INFO)
    logging.captureWarnings(True)
    logging.info("root info line")
    train_log = logging.getLogger("train")
    train_log.addHandler(logging.StreamHandler())
    train_log.warning("train line")
    sys.path.append("/tmp/tfk8s-extra")
    sys.excepthook = lambda *exc: None
    threading.excepthook = lambda args: None
    os.umask(0o077)
    socket.setdefaulttimeout(3)
    tf.experimental.numpy.experimental_enable_numpy_behavior()
    gc.disable()
    gc.set_threshold(100_000)
    sys.setswitchinterval(0.05)
    tf.config.experimental.enable_tensor_float_32_execution(False)
    tf.config.experimental.set_synchronous_execution(False)
    tf.debugging.disable_traceback_filtering()
    tf.debugging.set_log_device_placement(True)
    tf.autograph.set_verbosity(3)
    tf.compat.v1.disable_tensor_equality()
    tf.compat.v1.disable_v2_tensorshape()
    tf.compat.v1.disable_control_flow_v2()
    print("cell done", flush=True)
    """
)


def keep(seconds: float = 600.0) -> None:
    set_current_config(TFK8s(warm_pool=0, keep_warm=seconds))


def launches(job) -> set[str]:
    return {r.launch for r in job.status.replicas}


def line(text: str, prefix: str) -> str:
    return next(ln for ln in text.splitlines() if ln.startswith(prefix))


def run_twice(tfk8s_home, replica: str, **kwargs) -> tuple[str, str]:
    keep()
    logs = []
    try:
        for i in (1, 2):
            job = tk.submit(PROBE + CHANGES, workers=2, name=f"settings-{replica[:-2]}-{i}", **kwargs)
            assert job.wait(timeout=300) == "succeeded", job.status.message
            assert launches(job) == {"cold" if i == 1 else "kept"}
            logs.append(job.logs(replica))
    finally:
        stop_kept(tfk8s_home)
    return logs[0], logs[1]


def test_a_cell_run_again_on_kept_all_reduce_replicas_finds_the_process_as_a_cold_run_does(tfk8s_home):
    cold, kept = run_twice(tfk8s_home, "worker-0")
    assert line(cold, "found:").startswith("found: False nan True 0 30 0 False True True")
    assert line(kept, "found:") == line(cold, "found:")
    assert line(cold, "found more:").startswith("found more: InvalidArgumentError False True")
    assert line(kept, "found more:") == line(cold, "found more:")
    # the cell's basicConfig works (the kept run's set-up logged through absl, which set up logging itself)
    # and its logger's handler is its own only: each line once
    for log in (cold, kept):
        assert "INFO:root:root info line" in log
        assert log.count("train line") == 2  # its handler's line, and the root handler's
    assert "cell done" in kept


def test_a_cell_run_again_on_kept_parameter_server_replicas_finds_the_process_as_a_cold_run_does(tfk8s_home):
    cold, kept = run_twice(tfk8s_home, "chief-0", ps=1)
    assert line(cold, "found:").startswith("found: False nan True")
    assert line(kept, "found:") == line(cold, "found:")
    assert line(cold, "found more:").startswith("found more: InvalidArgumentError False True")
    assert line(kept, "found more:") == line(cold, "found more:")
    assert ("root info line" in kept) == ("root info line" in cold)
    assert kept.count("train line") == cold.count("train line")


def test_a_module_the_cell_imports_from_a_folder_it_put_on_sys_path_is_imported_afresh(tfk8s_home, tmp_path):
    """A notebook that puts its project's source folder on ``sys.path`` and imports from it: the user edits
    the module between runs, and the kept run imports the edited file, as a cold run does (it ran the
    previous run's module)."""
    keep()
    lib = tmp_path / "project-src"
    lib.mkdir()
    cell = f"import sys\nsys.path.insert(0, {str(lib)!r})\nimport shapes\nprint('units:', shapes.UNITS)\n"
    try:
        for i, units in ((1, 8), (2, 16)):
            (lib / "shapes.py").write_text(f"UNITS = {units}\n")
            job = tk.submit(cell, workers=2, name=f"project-src-{i}")
            assert job.wait(timeout=300) == "succeeded", job.status.message
            assert launches(job) == {"cold" if i == 1 else "kept"}
            assert line(job.logs("worker-0"), "units:") == f"units: {units}"
    finally:
        stop_kept(tfk8s_home)
