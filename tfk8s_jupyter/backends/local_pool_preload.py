"""What a warm pool process loads ahead, after TensorFlow and its Keras, before it waits for an assignment.

A claimed pool process still has to import what every replica imports after TensorFlow: the runner's own
modules, tf_keras (``replica_keras.patch_clear_session`` wraps its ``clear_session`` in Keras 3 jobs too),
``tf.keras`` and the Keras modules the cell reaches through it, the summary modules the metrics and
TensorBoard callbacks write with, the modules the claim itself uses. Measured on a quiet 2-core machine:
about 0.5 s of CPU per Keras 3 replica (tf_keras 0.35 s, the runner 0.08 s, TensorBoard's summary API
0.08 s), paid while the replicas of a job contend for the cores. :func:`preload` imports them while idle,
then freezes the garbage collector's view of what is loaded (``gc.freeze``: undone by ``gc.unfreeze``).

Only Python modules: nothing here creates a TensorFlow context, a server or a collective configuration,
none of which can be undone in a process (``local_pool.py``). :func:`untouched` checks that after the
imports; a process that fails the check exits before it publishes its idle marker, so it is never claimed.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import threading

from .local_processes import listening_ports

PRELOAD_FAILED = 3  # exit code of a pool process whose imports touched TensorFlow's runtime

# Imported by every replica (or the claim) right after it is claimed, whatever its Keras.
COMMON = (
    "tfk8s_jupyter.runner",  # and the replica_* modules, the protocol, the payload format
    "tfk8s_jupyter.backends.local_pool",  # the claim's import-key check
    "tensorboard.summary.v2",  # tf.summary.scalar: the metrics and TensorBoard callbacks
    "tensorflow.summary",
    "tensorflow.compat.v1",
    "tensorflow.compat.v2",
    "tensorflow.python.data.ops.from_tensors_op",  # tf.data's lazily loaded dataset kinds
    "tensorflow.python.data.ops.range_op",
    "tensorflow.python.data.ops.rebatch_op",
    "tensorflow.python.data.ops.from_generator_op",
    "tensorflow.python.data.ops.from_sparse_tensor_slices_op",
    "multiprocessing.queues",
    "multiprocessing.synchronize",
)
# tf.keras's submodules a cell reaches (attributes of TensorFlow's lazy Keras loader)
TF_KERAS_ATTRIBUTES = ("layers", "models", "optimizers", "losses", "metrics", "callbacks", "utils", "backend")


def preload(flavour: str) -> list[str]:
    """Import what a replica of ``flavour`` (``"keras3"`` or ``"tf_keras"``) imports once claimed; returns
    the modules that are not installed. Exits the process with :data:`PRELOAD_FAILED` (one line on stderr,
    i.e. the slot's ``pool.log``) when the imports touched TensorFlow's runtime."""
    from tfk8s_jupyter.replica_keras import clear_session_modules

    missing = []
    for name in (*COMMON, *clear_session_modules(flavour == "tf_keras")):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    import tensorflow as tf

    keras = tf.keras  # TensorFlow's lazy loader: tf_keras's API or Keras 3's tf_keras face
    for attribute in TF_KERAS_ATTRIBUTES:
        getattr(keras, attribute, None)
    problem = untouched()
    if problem:
        print(f"tfk8s warm pool: {problem}; this process exits unused.", file=sys.stderr, flush=True)
        os._exit(PRELOAD_FAILED)
    # What is loaded now stays for the process's life: move it out of the collector's sight, so the
    # replica's first full collection (while it builds and traces the cell's model) does not walk the
    # ~340,000 objects TensorFlow and Keras left (measured: 0.2 s of CPU saved before the first batch).
    gc.collect()
    gc.freeze()
    return missing


def untouched() -> str | None:
    """None when this process has imported TensorFlow and touched nothing else that a replica could not
    undo; else what it touched (a TensorFlow context, a listening server, a running thread, TF_CONFIG)."""
    context = sys.modules.get("tensorflow.python.eager.context")
    ctx = getattr(context, "_context", None)
    if ctx is not None and (
        getattr(ctx, "_context_handle", None) is not None or getattr(ctx, "_initialized", False)
    ):
        return "TensorFlow's eager context was initialized while loading"
    ports = listening_ports(os.getpid())
    if ports:
        return f"it listens on port(s) {', '.join(map(str, sorted(ports)))} (a server was started)"
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if others:
        return f"threads were started while loading ({', '.join(others)})"
    if "TF_CONFIG" in os.environ:
        return "TF_CONFIG is set before any assignment"
    return None
