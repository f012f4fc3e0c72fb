"""The in-replica bootstrap: every replica of a job runs ``python -m tfk8s_jupyter.runner``.

This is the only module of the package that imports TensorFlow. It also works as a standalone file
(``python runner.py`` with ``protocol.py`` and ``payload.py`` beside it), which is how container images
without the package run it.

Environment (the runner contract, shared by the local and Kubernetes backends):
    TFK8S_JOB, TFK8S_ROLE (chief|worker|ps), TFK8S_INDEX (fallback JOB_COMPLETION_INDEX),
    TFK8S_CLUSTER (JSON ``{"chief": [...], "worker": [...], "ps": [...]}``; TF_CONFIG is built from it
    unless TF_CONFIG is already set), TFK8S_STRATEGY (parameter_server|multi_worker_mirrored|mirrored),
    TFK8S_PAYLOAD (path of payload.json), TFK8S_CHECKPOINT_DIR (job-scoped base dir),
    TFK8S_METRIC_INTERVAL (seconds), optional TFK8S_WORKDIR, TFK8S_SETUP_TIMEOUT (seconds a serving
    replica waits to see the chief, default 600), TFK8S_CHECKPOINT_INTERVAL (seconds between the
    chief's checkpoints with parameter servers, default 10; 0 = every epoch) and TFK8S_KERAS
    (``legacy`` runs all-reduce jobs on tf_keras).

How an unchanged cell trains distributed (the rule):

* **Parameter servers** (``ps > 0``; ParameterServerStrategy): the chief is the coordinator and runs the
  cell; ps and the other workers only serve (``tf.distribute.Server(...).join()``). Keras 3 cannot train
  with this strategy, so the cell runs on **tf_keras** (legacy Keras 2): ``TF_USE_LEGACY_KERAS=1`` makes
  ``tf.keras`` tf_keras, and ``import keras`` is aliased to tf_keras too. Common Keras code works either
  way (layers, Sequential/functional models, optimizers and losses by name or object, callbacks, save and
  load). Keras-3-only APIs (``keras.ops``, ``keras.config``, ``keras.random``, ``keras.Variable``, ...)
  raise a clear error naming the API and pointing to all-reduce (workers only), where Keras 3 is real.
* **All-reduce** (workers only; MultiWorkerMirroredStrategy, or ``mirrored`` for one worker): every worker
  runs the whole cell on **Keras 3** (``tf.keras`` and ``import keras`` alike), with two fixes for Keras 3
  under MultiWorkerMirroredStrategy (keras-team/keras#20585): the symbolic build takes the local batch of a
  distributed batch, and per-replica scalars are averaged with ``axis=None``. ``TFK8S_KERAS=legacy`` runs
  these jobs on tf_keras instead (its per-batch logs, summed over replicas, are divided back to means).
  Every worker must see the same data: seed the data generation and shuffles.
* In both, the job's strategy is made the **default strategy** before the cell runs
  (``tf.distribute.experimental_set_strategy``), so models, optimizers and metrics the cell builds land in
  it with no edit. ``clear_session()`` (which drops the default strategy with the graph) is patched to
  re-apply it. ``Model.fit`` refuses to train a model that was not built under the job's strategy (for
  example one built in a thread the cell started): a cell the runner cannot distribute gets a clear error,
  never a silent single-process run.
* ``Model.fit`` is patched on every replica: ``verbose`` becomes 2 where a progress bar cannot work or
  would be duplicated (non-reporting replicas, tf_keras with parameter servers); the reporting replica
  (chief-0 with parameter servers, worker-0 otherwise) gets a callback that prints protocol lines; a
  ``BackupAndRestore`` in ``$TFK8S_CHECKPOINT_DIR`` lets a restarted job resume from its last saved
  epoch (one shared dir for tf_keras all-reduce, one per worker for Keras 3, every epoch; with parameter
  servers the chief's only, after the first epoch and then at most every TFK8S_CHECKPOINT_INTERVAL s);
  ``TerminateOnNaN`` is replaced by a version that works with parameter-server logs.

Output: protocol lines (``@tfk8s {json}``, see ``protocol.py``) and the cell's own prints go to stdout;
TensorFlow's logs and the runner's diagnostics go to stderr. Exit status 0 means the cell finished; 1 means
the cell raised (an ``error`` event names the exception and the cell line); 2 means the replica could not be
set up (bad environment, image without TensorFlow, chief never seen).
"""

from __future__ import annotations

import builtins
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import linecache
import os
import pickle
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import types
from pathlib import Path

try:
    from tfk8s_jupyter import payload as payload_mod
    from tfk8s_jupyter import protocol
    from tfk8s_jupyter.replica_env import (
        ReplicaEnv,
        SetupError,
        add_no_proxy,
        read_env,
    )
except ImportError:  # standalone: the shipped modules sit beside this file
    import payload as payload_mod  # type: ignore[no-redef]
    import protocol  # type: ignore[no-redef]
    from replica_env import (  # type: ignore[no-redef]
        ReplicaEnv,
        SetupError,
        add_no_proxy,
        read_env,
    )

STRATEGY_CLASSES = {
    "parameter_server": "ParameterServerStrategy",
    "multi_worker_mirrored": "MultiWorkerMirroredStrategy",
    "mirrored": "MirroredStrategy",
}
CELL_FILENAME = "<tfk8s-cell>"
PRELUDE_FILENAME = "<tfk8s-prelude>"
MIN_TF_VERSION = (2, 16)
WATCHDOG_MISSES = 3
EXIT_CELL_ERROR = 1
EXIT_SETUP_ERROR = 2

# Keras 3 names with a tf_keras home elsewhere: `keras.Layer` is `tf_keras.layers.Layer`.
_KERAS3_TOPLEVEL_IN_TF_KERAS = {
    "Layer": ("layers", "Layer"),
    "InputSpec": ("layers", "InputSpec"),
    "Loss": ("losses", "Loss"),
    "Metric": ("metrics", "Metric"),
    "Optimizer": ("optimizers", "Optimizer"),
    "Initializer": ("initializers", "Initializer"),
    "Regularizer": ("regularizers", "Regularizer"),
}


class DistributionError(RuntimeError):
    """The cell would train outside the job's strategy (a silent single-process run)."""


class KerasAPIUnavailable(AttributeError):
    """A Keras 3 API used in a parameter-server job, which runs on tf_keras."""


class KerasModuleUnavailable(ImportError):
    """A Keras 3 module imported in a parameter-server job, which runs on tf_keras."""


def _keras3_only_message(api: str) -> str:
    return (
        f"{api} is a Keras 3 API, but parameter-server jobs run the cell on tf_keras (Keras 2), which has "
        f"no {api}; use a tf.* equivalent, or train with all-reduce (workers only: ps=0, "
        "strategy='multi_worker_mirrored'), where Keras 3 is fully available."
    )


def prepare_process_env(renv: ReplicaEnv, environ: dict[str, str] | None = None) -> None:
    """Set what must be in the environment before TensorFlow is imported."""
    env = os.environ if environ is None else environ
    hosts = sorted({a.rsplit(":", 1)[0] for addrs in renv.cluster.values() for a in addrs})
    add_no_proxy(env, hosts)
    if renv.tf_config is not None:
        env["TF_CONFIG"] = json.dumps(renv.tf_config)
    else:
        env.pop("TF_CONFIG", None)
    if renv.strategy == "parameter_server":
        env["GRPC_FAIL_FAST"] = "use_caller"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if renv.uses_tf_keras:
        env["TF_USE_LEGACY_KERAS"] = "1"
    else:
        env.pop("TF_USE_LEGACY_KERAS", None)
        env["KERAS_BACKEND"] = "tensorflow"


# ----------------------------------------------------------------------------------------------------
# Output: whole protocol lines on stdout, whatever the cell's progress bars write


class _LineTrackingStdout:
    """Wraps ``sys.stdout``: remembers whether the last write ended a line, serialises writers."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.lock = threading.RLock()
        self.at_line_start = True

    def write(self, text: str) -> int:
        with self.lock:
            n = self._stream.write(text)
            if text:
                self.at_line_start = text.endswith("\n")
            return n

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class Reporter:
    """Prints protocol events; only the reporting replica prints all of them, every replica prints errors."""

    def __init__(self, out: _LineTrackingStdout | None, enabled: bool) -> None:
        self.out = out
        self.enabled = enabled
        self.run = secrets.token_hex(4)
        self.seq = 0

    def emit(self, event_type: str, *, always: bool = False, **fields) -> None:
        if not (self.enabled or always) or self.out is None:
            return
        with self.out.lock:
            self.seq += 1
            line = protocol.encode(event_type, run=self.run, seq=self.seq, t=round(time.time(), 3), **fields)
            self.out.write(("" if self.out.at_line_start else "\n") + line + "\n")
            self.out.flush()


def log(message: str) -> None:
    """A runner diagnostic on stderr."""
    sys.stderr.write(f"tfk8s: {message}\n")
    sys.stderr.flush()


# ----------------------------------------------------------------------------------------------------
# The keras -> tf_keras alias for parameter-server jobs


class _KerasAlias(types.ModuleType):
    """``keras`` (or ``keras.<sub>``) standing for the matching tf_keras module."""

    def __init__(self, name: str, target: types.ModuleType) -> None:
        super().__init__(name, getattr(target, "__doc__", None))
        self.__dict__["_tfk8s_target"] = target

    def __getattr__(self, attr: str):
        target = self.__dict__["_tfk8s_target"]
        if attr.startswith("__") and attr.endswith("__"):
            return getattr(target, attr)
        try:
            return getattr(target, attr)
        except AttributeError:
            pass
        if self.__name__ == "keras" and attr in _KERAS3_TOPLEVEL_IN_TF_KERAS:
            module, name = _KERAS3_TOPLEVEL_IN_TF_KERAS[attr]
            return getattr(getattr(target, module), name)
        if self.__name__ == "keras" and attr == "version":
            return lambda: target.__version__
        raise KerasAPIUnavailable(_keras3_only_message(f"{self.__name__}.{attr}"))

    def __dir__(self):
        return dir(self.__dict__["_tfk8s_target"])


class _KerasAliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``import keras.x.y`` to ``tf_keras.x.y`` (wrapped), or a clear error for Keras-3-only modules."""

    def find_spec(self, fullname, path, target=None):
        if not fullname.startswith("keras."):
            return None
        rest = fullname[len("keras.") :]
        try:
            module = importlib.import_module("tf_keras." + rest)
        except ImportError:
            raise KerasModuleUnavailable(_keras3_only_message(fullname)) from None
        spec = importlib.machinery.ModuleSpec(fullname, self, is_package=hasattr(module, "__path__"))
        spec.loader_state = module
        return spec

    def create_module(self, spec):
        return _KerasAlias(spec.name, spec.loader_state)

    def exec_module(self, module) -> None:
        return None


def install_keras_alias() -> None:
    """Make ``import keras`` (and ``from keras.layers import ...``) give tf_keras."""
    import tf_keras

    for name in [n for n in sys.modules if n == "keras" or n.startswith("keras.")]:
        del sys.modules[name]
    alias = _KerasAlias("keras", tf_keras)
    alias.__dict__["__path__"] = []
    alias.__dict__["__spec__"] = importlib.machinery.ModuleSpec("keras", None, is_package=True)
    sys.modules["keras"] = alias
    sys.meta_path.insert(0, _KerasAliasFinder())


# ----------------------------------------------------------------------------------------------------
# TensorFlow side


def check_image(renv: ReplicaEnv):
    """Import TensorFlow (and tf_keras when needed) or raise one clear sentence. Returns the tf module."""
    if importlib.util.find_spec("tensorflow") is None:
        raise SetupError(
            "TensorFlow is not installed in this image; install tensorflow==2.21.* (and tf-keras==2.21.* for "
            "parameter-server jobs), e.g. pip install 'tfk8s-jupyter[tensorflow]'."
        )
    try:
        import tensorflow as tf
    except Exception as exc:
        raise SetupError(
            f"TensorFlow is installed but does not import ({type(exc).__name__}: {exc}); "
            "reinstall tensorflow==2.21.* in the image."
        ) from exc
    version = tuple(int(p) for p in tf.__version__.split(".")[:2] if p.isdigit())
    if version < MIN_TF_VERSION:
        raise SetupError(
            f"this image has TensorFlow {tf.__version__}, but tfk8s needs 2.16 or newer (tested with 2.21); "
            "upgrade tensorflow in the image."
        )
    if renv.uses_tf_keras and not renv.serves_only:  # ps and serving workers never run Keras
        if importlib.util.find_spec("tf_keras") is None:
            what = "parameter-server jobs" if renv.strategy == "parameter_server" else "TFK8S_KERAS=legacy"
            raise SetupError(
                f"this image has no tf_keras, which {what} need; install tf-keras matching TensorFlow "
                f"(pip install 'tf-keras=={tf.__version__.rsplit('.', 1)[0]}.*')."
            )
        import tf_keras

        if tf_keras.__version__.split(".")[:2] != tf.__version__.split(".")[:2]:
            raise SetupError(
                f"this image has tf_keras {tf_keras.__version__} with TensorFlow {tf.__version__}; install "
                f"tf-keras=={tf.__version__.rsplit('.', 1)[0]}.* to match."
            )
    return tf


def make_strategy(tf, renv: ReplicaEnv):
    if renv.strategy == "parameter_server":
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        return tf.distribute.experimental.ParameterServerStrategy(resolver)
    if renv.strategy == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.MirroredStrategy()


def _patch_keras3_multi_worker(tf) -> None:
    """Keras 3 ``fit`` under MultiWorkerMirroredStrategy (keras-team/keras#20585)."""
    from keras.src.backend.tensorflow import trainer as tft

    if getattr(tft, "_tfk8s_patched", False):
        return
    original_reduce = tft.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tft._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    def _local(value, strategy):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    original_build = tft.TensorFlowTrainer._maybe_symbolic_build

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None or iterator is None:
            return original_build(self, iterator=iterator, data_batch=data_batch)
        strategy = self.distribute_strategy
        for _, _, it in iterator:
            data_batch = tf.nest.map_structure(lambda v: _local(v, strategy), next(it))
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tft.reduce_per_replica = reduce_per_replica
    tft.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    tft._tfk8s_patched = True


def _to_float(value) -> float | None:
    if hasattr(value, "fetch"):  # a parameter-server RemoteValue
        value = value.fetch()
    if hasattr(value, "numpy"):
        value = value.numpy()
    try:
        import numpy as np

        arr = np.asarray(value)
        if arr.size != 1:
            return None
        return float(arr.reshape(()))
    except (TypeError, ValueError):
        return None


def weights_digest(model, max_params: int = 10_000_000) -> str | None:
    """A short hash of the model's weights (replicas of an all-reduce job must agree); None for big models."""
    if model.count_params() > max_params:
        return None
    digest = hashlib.sha256()
    for w in model.get_weights():
        import numpy as np

        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()[:16]


def variable_device(model) -> str:
    variables = getattr(model, "trainable_variables", None) or []
    if not variables:
        return ""
    v = variables[0]
    for candidate in (v, getattr(v, "value", None), getattr(v, "_value", None)):
        device = getattr(candidate, "device", None)
        if isinstance(device, str) and device:
            return device
    return ""


class Runtime:
    """Everything the runner patches in for one replica: strategy, keras flavor, fit/clear_session hooks."""

    def __init__(self, tf, renv: ReplicaEnv, strategy, reporter: Reporter) -> None:
        self.tf = tf
        self.renv = renv
        self.strategy = strategy
        self.reporter = reporter
        self.fit_count = 0
        self.last_model: dict = {}
        self.replicas = int(getattr(strategy, "num_replicas_in_sync", 1) or 1)

    # --- the default strategy
    def set_default_strategy(self) -> None:
        tf = self.tf
        if tf.distribute.get_strategy() is not self.strategy:
            tf.distribute.experimental_set_strategy(self.strategy)

    def patch_clear_session(self) -> None:
        originals = []
        modules = []
        names = ["tf_keras.backend", "tf_keras.utils", "tf_keras.src.backend"]
        if not self.renv.uses_tf_keras:
            names += [
                "keras.backend",
                "keras.utils",
                "keras.src.backend.common.global_state",
                "keras.src.utils",
                "keras._tf_keras.keras.backend",
                "keras._tf_keras.keras.utils",
            ]
        for name in names:
            try:
                modules.append(importlib.import_module(name))
            except ImportError:
                continue
        for m in modules:
            fn = getattr(m, "clear_session", None)
            if fn is not None and not getattr(fn, "_tfk8s", False) and fn not in originals:
                originals.append(fn)
        runtime = self

        def wrap(original):
            def clear_session(*args, **kwargs):
                result = original(*args, **kwargs)
                try:
                    runtime.set_default_strategy()
                except RuntimeError as exc:  # called inside another strategy's scope: fit will refuse
                    log(f"could not re-apply the job's strategy after clear_session(): {exc}")
                return result

            clear_session._tfk8s = True
            clear_session.__wrapped__ = original
            clear_session.__doc__ = original.__doc__
            return clear_session

        wrapped = {id(fn): wrap(fn) for fn in originals}
        # Every public alias (keras.backend, keras.utils, tf.keras.backend, ...). vars(), not getattr():
        # getattr on TensorFlow's lazy modules would import them.
        for name, m in list(sys.modules.items()):
            if not name.startswith(("keras", "tf_keras", "tensorflow")) or not isinstance(
                m, types.ModuleType
            ):
                continue
            fn = vars(m).get("clear_session")
            if fn is not None and id(fn) in wrapped:
                try:
                    m.clear_session = wrapped[id(fn)]
                except (AttributeError, TypeError):
                    pass

    # --- fit
    def keras_modules(self):
        if self.renv.uses_tf_keras:
            import tf_keras

            return tf_keras
        import keras

        return keras

    def patch_fit(self) -> None:
        keras = self.keras_modules()
        model_cls = keras.Model
        original = model_cls.fit
        if getattr(original, "_tfk8s", False):
            return
        import inspect

        signature = inspect.signature(original)
        runtime = self

        def fit(model, *args, **kwargs):
            bound = signature.bind(model, *args, **kwargs)
            runtime.before_fit(model, bound.arguments)
            history = original(*bound.args, **bound.kwargs)
            runtime.after_fit(model)
            return history

        fit._tfk8s = True
        fit.__wrapped__ = original
        fit.__doc__ = original.__doc__
        model_cls.fit = fit

    def _model_strategy(self, model):
        attr = "_distribution_strategy" if self.renv.uses_tf_keras else "_distribute_strategy"
        return getattr(model, attr, None)

    def before_fit(self, model, arguments: dict) -> None:
        got = self._model_strategy(model)
        if got is not self.strategy:
            kind = STRATEGY_CLASSES[self.renv.strategy]
            where = "with no strategy" if got is None else f"under another strategy ({type(got).__name__})"
            raise DistributionError(
                f"this model was built {where}, not under the job's {kind}, so fit() would train it on one "
                "replica only; build the model in the cell's main thread and do not enter another strategy "
                "scope (the runner makes the job's strategy the default)."
            )
        fit_index = self.fit_count
        self.fit_count += 1
        keras = self.keras_modules()
        verbose = arguments.get("verbose", "auto")
        if verbose in (1, "auto", True) and (
            not self.renv.reporting or self.renv.strategy == "parameter_server"
        ):
            arguments["verbose"] = 2
        callbacks = arguments.get("callbacks")
        if callbacks is None:
            callbacks = []
        if not isinstance(callbacks, (list, tuple)):
            log("fit(callbacks=...) is not a list; metrics and checkpoints are not injected")
            return
        callbacks = list(callbacks)
        if self.renv.strategy == "parameter_server":
            callbacks = [
                _safe_terminate_on_nan(keras, self)() if type(cb) is keras.callbacks.TerminateOnNaN else cb
                for cb in callbacks
            ]
        backup = next((cb for cb in callbacks if isinstance(cb, keras.callbacks.BackupAndRestore)), None)
        if backup is None and self.renv.checkpoint_dir:
            # Only the chief saves with parameter servers, so it may skip epochs; all-reduce workers must
            # all save the same epochs (they restore and resume together), so they save every epoch.
            interval = self.renv.checkpoint_interval if self.renv.strategy == "parameter_server" else 0.0
            backup = _job_backup(keras)(self.backup_dir(fit_index), interval)
            callbacks.append(backup)
        if self.renv.reporting:
            initial_epoch = int(arguments.get("initial_epoch", 0) or 0)
            callbacks.append(_metrics_callback(keras, self)(fit_index, initial_epoch, backup))
        arguments["callbacks"] = callbacks

    def backup_dir(self, fit_index: int) -> str | None:
        base = Path(self.renv.checkpoint_dir) / f"fit-{fit_index}"
        if self.renv.strategy == "parameter_server":
            path = base / "chief"
        elif self.renv.strategy == "multi_worker_mirrored" and not self.renv.uses_tf_keras:
            path = base / self.renv.name  # Keras 3 locks its backup file: one dir per worker
        else:
            path = base / "shared"  # tf_keras all-reduce needs the same dir on every worker
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def after_fit(self, model) -> None:
        try:
            info = {"weights_sha256": weights_digest(model), "variable_device": variable_device(model)}
        except Exception as exc:  # reading weights from a ps that is gone
            info = {"weights_sha256": None, "variable_device": None, "note": f"{type(exc).__name__}"}
        self.last_model = info
        log(
            f"fit {self.fit_count - 1} finished on {self.renv.name}: weights_sha256={info['weights_sha256']} "
            f"variable_device={info['variable_device']}"
        )

    def reported_values(self, logs, per_batch: bool = False) -> dict[str, float]:
        """Python floats from Keras logs.

        tf_keras under all-reduce sums each batch's per-replica results (its epoch logs are right), so
        batch values are divided back to means.
        """
        values: dict[str, float] = {}
        if hasattr(logs, "fetch"):  # parameter servers: the whole logs dict is one RemoteValue
            logs = logs.fetch()
        if not logs:
            return values
        scale = self.replicas if per_batch and self.renv.uses_tf_keras and self.replicas > 1 else 1
        for key, value in dict(logs).items():
            number = _to_float(value)
            if number is not None:
                values[str(key)] = number / scale
        return values


def _fetch_errors(tf):
    return (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError)


def _metrics_callback(keras, runtime: Runtime):
    tf = runtime.tf

    class TFK8sMetrics(keras.callbacks.Callback):
        """Prints throttled ``metric`` points and every ``epoch`` end (reporting replica only)."""

        def __init__(self, fit_index: int, initial_epoch: int, backup) -> None:
            super().__init__()
            self._supports_tf_logs = True
            self.fit_index = fit_index
            self.initial_epoch = initial_epoch
            self.backup = backup
            self.epoch = 0
            self.step = 0
            self.steps_per_epoch = None
            self.last_point = 0.0
            self.first_epoch_seen = False
            self.interval = runtime.renv.metric_interval
            self.lock = threading.Lock()
            self.pending = None  # (RemoteValue logs, step, epoch) kept for the next tick
            # Keras 3 runs batch-end callbacks in a thread pool only when every one says it is safe; a
            # plain cell would otherwise lose that overlap just because the runner added a callback.
            self.async_safe = True

        def on_train_begin(self, logs=None):
            self.steps_per_epoch = (self.params or {}).get("steps")

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = int(epoch)
            if not self.first_epoch_seen:
                self.first_epoch_seen = True
                if self.backup and epoch > self.initial_epoch:
                    runtime.reporter.emit(
                        "checkpoint", action="restored", epoch=int(epoch), fit=self.fit_index
                    )

        def _global_step(self, batch: int) -> int:
            if self.steps_per_epoch:
                return self.epoch * int(self.steps_per_epoch) + int(batch) + 1
            return self.step + 1

        def on_train_batch_end(self, batch, logs=None):
            # Keras 3 may call this from its callback thread pool (async_safe): one batch at a time here.
            with self.lock:
                step = self._global_step(batch)
                self.step = max(self.step, step)
                now = time.monotonic()
                if self.last_point and now - self.last_point < self.interval:
                    return
                first = not self.last_point
                self.last_point = now
                epoch = self.epoch
                if hasattr(logs, "fetch") and not first:
                    # Parameter servers: fetching this step's RemoteValue would stall the coordinator
                    # until the step ran; report the one kept at the previous tick, long done by now.
                    previous, self.pending = self.pending, (logs, step, epoch)
                    if previous is None:
                        return
                    logs, step, epoch = previous
            self._emit_point(logs, step, epoch)

        def _emit_point(self, logs, step: int, epoch: int) -> None:
            try:
                values = runtime.reported_values(logs, per_batch=True)
            except _fetch_errors(tf) as exc:
                log(f"skipped a metric point ({type(exc).__name__}); a replica is restarting")
                return
            if values:
                runtime.reporter.emit("metric", epoch=epoch, step=step, values=values, fit=self.fit_index)

        def on_epoch_end(self, epoch, logs=None):
            with self.lock:
                pending, self.pending = self.pending, None
            if pending is not None:
                # The point kept at the last tick belongs to this epoch: report it before the epoch's end
                # (after it, steps would go back), so short epochs still get their per-step points.
                self._emit_point(*pending)
            if self.steps_per_epoch:
                self.step = (int(epoch) + 1) * int(self.steps_per_epoch)
            try:
                values = runtime.reported_values(logs)
            except _fetch_errors(tf) as exc:
                log(f"epoch {epoch} metrics unavailable ({type(exc).__name__})")
                values = {}
            runtime.reporter.emit(
                "epoch", epoch=int(epoch), step=self.step, values=values, fit=self.fit_index
            )
            if self.backup is not None and getattr(self.backup, "last_saved_epoch", epoch) == epoch:
                runtime.reporter.emit("checkpoint", action="saved", epoch=int(epoch), fit=self.fit_index)

    return TFK8sMetrics


def _job_backup(keras):
    class JobBackupAndRestore(keras.callbacks.BackupAndRestore):
        """``BackupAndRestore`` that saves the first epoch, then at most every ``interval`` seconds.

        A save costs ~0.1 s with parameter servers (variables come from the ps): with short epochs,
        saving every one of them would cost several percent of the training time.
        """

        def __init__(self, backup_dir: str, interval: float) -> None:
            super().__init__(backup_dir)
            self.interval = interval
            self.last_save: float | None = None
            self.last_saved_epoch: int | None = None
            self.async_safe = True  # save_freq="epoch": its batch-end hook does nothing

        def on_epoch_end(self, epoch, logs=None):
            now = time.monotonic()
            if self.interval > 0 and self.last_save is not None and now - self.last_save < self.interval:
                if hasattr(self, "_current_epoch"):  # Keras 3 keeps its epoch count here
                    self._current_epoch = epoch + 1
                    self._last_batch_seen = 0
                return
            super().on_epoch_end(epoch, logs)
            self.last_save = time.monotonic()
            self.last_saved_epoch = int(epoch)

    return JobBackupAndRestore


def _safe_terminate_on_nan(keras, runtime: Runtime):
    tf = runtime.tf

    class SafeTerminateOnNaN(keras.callbacks.Callback):
        """``TerminateOnNaN`` that reads parameter-server RemoteValue logs (fetched at most every interval)."""

        def __init__(self) -> None:
            super().__init__()
            self._supports_tf_logs = True
            self.last = 0.0

        def _check(self, logs) -> None:
            try:
                if hasattr(logs, "fetch"):
                    logs = logs.fetch()
                loss = (logs or {}).get("loss")
                if loss is None:
                    return
                value = _to_float(loss)
            except _fetch_errors(tf):
                return
            if value is not None and (value != value or value in (float("inf"), float("-inf"))):
                log("invalid loss, terminating training")
                self.model.stop_training = True

        def on_train_batch_end(self, batch, logs=None):
            now = time.monotonic()
            if now - self.last >= max(runtime.renv.metric_interval, 1.0):
                self.last = now
                self._check(logs)

        def on_epoch_end(self, epoch, logs=None):
            self._check(logs)

    return SafeTerminateOnNaN


# ----------------------------------------------------------------------------------------------------
# Serving replicas (ps and non-chief workers in parameter-server jobs)


def chief_address(renv: ReplicaEnv) -> tuple[str, int]:
    host, port = renv.cluster["chief"][0].rsplit(":", 1)
    return host.strip("[]"), int(port)


def watch_chief(
    address: tuple[str, int],
    setup_timeout: float,
    exit_fn=os._exit,
    period: float = 1.0,
    misses_allowed: int = WATCHDOG_MISSES,
) -> None:
    """Exit 0 once the chief was reachable and then missed ``misses_allowed`` times in a row; exit 2 when
    it is never reachable within ``setup_timeout``. Runs forever otherwise (meant for a daemon thread)."""
    started = time.monotonic()
    seen = False
    misses = 0
    while True:
        try:
            with socket.create_connection(address, timeout=min(1.0, period)):
                seen = True
                misses = 0
        except OSError:
            if seen:
                misses += 1
                if misses >= misses_allowed:
                    log(f"chief at {address[0]}:{address[1]} is gone; this replica exits")
                    exit_fn(0)
                    return
            elif time.monotonic() - started > setup_timeout:
                log(
                    f"the chief at {address[0]}:{address[1]} did not come up within {setup_timeout:.0f} s; "
                    "this replica gives up (check the chief's log)"
                )
                exit_fn(EXIT_SETUP_ERROR)
                return
        time.sleep(period)


def serve(tf, renv: ReplicaEnv) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a Python handler never runs while join() blocks
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(
        resolver.cluster_spec(),
        job_name=renv.role,
        task_index=renv.index,
        protocol=resolver.rpc_layer or "grpc",
        start=True,
    )
    thread = threading.Thread(
        target=watch_chief, args=(chief_address(renv), renv.setup_timeout), name="tfk8s-watchdog", daemon=True
    )
    thread.start()
    log(f"{renv.name} serving on {renv.cluster[renv.role][renv.index]}")
    server.join()
    return 0


# ----------------------------------------------------------------------------------------------------
# The cell


def _safe_relpath(rel: str) -> Path:
    path = Path(rel)
    if path.is_absolute() or ".." in path.parts:
        raise SetupError(f"payload file {rel!r} is not a relative path inside the work dir; rename it.")
    return path


def prepare_workdir(renv: ReplicaEnv, payload) -> Path:
    """Write the payload's files into the work dir, make it the cwd and put it on ``sys.path``."""
    if renv.workdir:
        workdir = Path(renv.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix=f"tfk8s-{renv.job}-{renv.name}-"))
    for rel, text in payload.files.items():
        target = workdir / _safe_relpath(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    os.chdir(workdir)
    sys.path.insert(0, str(workdir))
    return workdir


def load_payload(renv: ReplicaEnv):
    if not renv.payload_path:
        raise SetupError("TFK8S_PAYLOAD is not set; point it at the job's payload.json.")
    try:
        text = Path(renv.payload_path).read_text()
    except OSError as exc:
        raise SetupError(
            f"cannot read the payload {renv.payload_path!r} ({exc.strerror}); check TFK8S_PAYLOAD."
        ) from None
    try:
        return payload_mod.Payload.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise SetupError(f"the payload {renv.payload_path!r} is not a valid payload.json ({exc}).") from None


def _register_source(filename: str, source: str) -> None:
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


def run_cell(payload) -> None:
    """Rebuild the cell's namespace (prelude, values) and run the cell as ``__main__``."""
    module = types.ModuleType("__main__")
    module.__dict__.update({"__builtins__": builtins, "__file__": CELL_FILENAME})
    sys.modules["__main__"] = module
    namespace = module.__dict__
    if payload.prelude.strip():
        _register_source(PRELUDE_FILENAME, payload.prelude)
        exec(compile(payload.prelude, PRELUDE_FILENAME, "exec"), namespace)
    for name, blob in payload.values.items():
        namespace[name] = pickle.loads(blob)
    _register_source(CELL_FILENAME, payload.code)
    exec(compile(payload.code, CELL_FILENAME, "exec"), namespace)


def summarize_exception(exc: BaseException) -> tuple[str, str, int | None]:
    """(message, short traceback, cell line) for an exception raised by the cell."""
    message = f"{type(exc).__name__}: {exc}".strip()
    frames = traceback.extract_tb(exc.__traceback__)
    cell_frames = [f for f in frames if f.filename in (CELL_FILENAME, PRELUDE_FILENAME)]
    lines = []
    for f in cell_frames:
        where = "cell" if f.filename == CELL_FILENAME else "prelude"
        lines.append(f"{where} line {f.lineno}: {(f.line or '').strip()}")
    if frames and frames[-1] not in cell_frames and Path(frames[-1].filename).name != Path(__file__).name:
        last = frames[-1]
        lines.append(f"in {Path(last.filename).name}:{last.lineno} ({last.name})")
    lines.append(message)
    cell_line = next((f.lineno for f in reversed(cell_frames) if f.filename == CELL_FILENAME), None)
    if cell_line is not None:
        message = f"{message} (cell line {cell_line})"
    return message[:4000], "\n".join(lines)[-4000:], cell_line


# ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run this replica per the runner contract; returns the process exit status."""
    out = _LineTrackingStdout(sys.stdout)
    sys.stdout = out
    try:
        out.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):
        pass
    reporter = Reporter(out, enabled=False)
    try:
        renv = read_env()
    except SetupError as exc:
        log(str(exc))
        reporter.emit("error", always=True, message=str(exc), traceback="")
        return EXIT_SETUP_ERROR
    reporter.enabled = renv.reporting
    started = time.time()
    try:
        prepare_process_env(renv)
        payload = None if renv.serves_only else load_payload(renv)
        tf = check_image(renv)
    except SetupError as exc:
        log(str(exc))
        reporter.emit("error", always=True, message=str(exc), traceback="")
        return EXIT_SETUP_ERROR

    if renv.serves_only:
        return serve(tf, renv)

    phase = "setup"
    try:
        strategy = make_strategy(tf, renv)
        if not renv.uses_tf_keras:
            import keras  # noqa: F401  (Keras 3 must exist before the patches)

            if renv.strategy == "multi_worker_mirrored":
                _patch_keras3_multi_worker(tf)
        else:
            import tf_keras  # noqa: F401

            if renv.strategy == "parameter_server":
                install_keras_alias()
        runtime = Runtime(tf, renv, strategy, reporter)
        runtime.patch_fit()
        runtime.patch_clear_session()
        runtime.set_default_strategy()
        reporter.emit(
            "start",
            job=renv.job,
            role=renv.role,
            index=renv.index,
            strategy=renv.strategy,
            keras="tf_keras" if renv.uses_tf_keras else "keras3",
            tensorflow=tf.__version__,
            replicas=runtime.replicas,
            workers=len(renv.cluster.get("worker", [])),
            ps=len(renv.cluster.get("ps", [])),
            pid=os.getpid(),
            setup_seconds=round(time.time() - started, 3),
        )
        prepare_workdir(renv, payload)
        phase = "cell"
        run_cell(payload)
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (None, 0):
            pass
        else:
            if isinstance(exc, KeyboardInterrupt):
                message, summary, line = "KeyboardInterrupt: the replica was interrupted", "", None
            elif phase == "setup":
                message, summary, line = f"{type(exc).__name__}: {exc}", "", None
            else:
                message, summary, line = summarize_exception(exc)
            traceback.print_exc()
            reporter.emit("error", always=True, message=message, traceback=summary, line=line, phase=phase)
            sys.stdout.flush()
            return EXIT_CELL_ERROR if phase == "cell" else EXIT_SETUP_ERROR
    reporter.emit(
        "end", status="succeeded", seconds=round(time.time() - started, 3), model=runtime.last_model
    )
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # TensorFlow's gRPC threads can keep a finished process alive; leave now.
    os._exit(code)
