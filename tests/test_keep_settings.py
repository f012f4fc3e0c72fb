"""What a kept replica puts back between runs (``backends/local_keep_settings.py``), in a fresh Python: every
setting a cell changed after the snapshot is restored to the snapshot's value, and nothing is reported
changed when the cell changed nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.tf

SCRIPT = textwrap.dedent(
    """\
    import json, signal, sys, warnings
    import numpy as np, tensorflow as tf, keras, tf_keras
    from tensorflow.python.framework import config as framework_config
    from tensorflow.python.ops import stateful_random_ops
    from tfk8s_jupyter.backends import local_keep_settings as ks

    def read():
        return {
            "keras policy": keras.config.dtype_policy().name,
            "keras floatx": keras.config.floatx(),
            "keras epsilon": keras.config.epsilon(),
            "keras logging": keras.config.is_interactive_logging_enabled(),
            "tf_keras policy": tf_keras.mixed_precision.global_policy().name,
            "tf_keras format": tf_keras.backend.image_data_format(),
            "eager": tf.config.functions_run_eagerly(),
            "jit": bool(tf.config.optimizer.get_jit()),
            "determinism": framework_config.is_op_determinism_enabled(),
            "numpy divide": np.geterr()["divide"],
            "numpy precision": np.get_printoptions()["precision"],
            "filters": len(warnings.filters),
            "recursion": sys.getrecursionlimit(),
            "usr1": str(signal.getsignal(signal.SIGUSR1)),
            "timer": signal.getitimer(signal.ITIMER_REAL)[0] > 0,
            "generator": stateful_random_ops.global_generator is not None,
        }

    ks.snapshot()
    cold = read()
    unchanged = ks.restore()
    tf.random.get_global_generator().normal([1])  # before determinism, which refuses a new one
    keras.config.set_dtype_policy("mixed_bfloat16")
    keras.config.set_floatx("float64")
    keras.config.set_epsilon(1e-3)
    keras.config.disable_interactive_logging()
    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    tf_keras.backend.set_image_data_format("channels_first")
    tf.config.run_functions_eagerly(True)
    tf.config.optimizer.set_jit(True)
    tf.config.experimental.enable_op_determinism()
    np.seterr(all="raise")
    np.set_printoptions(precision=2)
    warnings.simplefilter("ignore")
    sys.setrecursionlimit(50_000)
    signal.signal(signal.SIGUSR1, lambda *a: None)
    signal.setitimer(signal.ITIMER_REAL, 100.0)
    changed = read()
    ks.snapshot()  # a later snapshot keeps the first
    restored = ks.restore()
    print(json.dumps({"cold": cold, "changed": changed, "after": read(), "unchanged": unchanged,
                      "restored": sorted(restored), "again": ks.restore()}))
    """
)


def test_every_setting_a_cell_changed_is_put_back_and_nothing_else():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["unchanged"] == [] and got["again"] == []
    assert all(got["changed"][k] != got["cold"][k] for k in got["cold"]), got["changed"]
    assert got["after"] == got["cold"]
    assert "tf_keras.mixed_precision.global_policy" in got["restored"]
    assert "keras.config.dtype_policy" in got["restored"] and "warnings.filters" in got["restored"]
