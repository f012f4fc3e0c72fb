"""What the runner hooks into one replica's Keras: the job's strategy as the default, and ``Model.fit``.

:class:`Runtime` makes the job's strategy the default strategy (and keeps it across ``clear_session()``)
and patches ``Model.fit`` on every replica: it refuses a model not built under the job's strategy
(:class:`DistributionError`: never a silent single-process run), coerces ``verbose`` where a progress bar
cannot work or would be duplicated, and adds the callbacks of ``replica_callbacks.py`` (job backup,
metrics and a TensorBoard in the job's artifacts on the reporting replica, a TerminateOnNaN that reads
parameter-server logs). After ``fit`` it logs a digest of the weights, which the replicas of an all-reduce
job must agree on, and keeps the model (``trained_model``: the runner saves it into the artifacts).
``train_on_batch`` is checked the same way under all-reduce, each call's logs a metric point; with
parameter servers, where tf_keras cannot run it, it and ``test_on_batch`` are refused in one sentence, and
``predict_on_batch`` computes on the replica itself on every shape. Settings TensorFlow takes only before its
runtime starts (threading, GPU memory growth), which a notebook's first cell often makes, are kept as they
were with a line in the log (:func:`tolerate_late_settings`): the replica's runtime started before the cell;
device settings of that kind (logical devices, visible devices), which would change what the cell computes
on, fail in one sentence naming the fix.

Part of the runner (see ``runner.py``): ``tf`` is passed in, Keras is imported only inside methods. It
travels with the runner in the job's ConfigMap.
"""

from __future__ import annotations

import hashlib
import os

try:
    from tfk8s_jupyter.replica_artifacts import backup_subdir, keep_fit_history
    from tfk8s_jupyter.replica_callbacks import (
        job_backup,
        job_tensorboard,
        metrics_callback,
        safe_terminate_on_nan,
        to_float,
    )
    from tfk8s_jupyter.replica_env import REQUEST_CHECK, ReplicaEnv
    from tfk8s_jupyter.replica_inputs import (
        adapt_evaluate_arguments,
        adapt_fit_arguments,
        predict_on_coordinator,
    )
    from tfk8s_jupyter.replica_keras import patch_clear_session
    from tfk8s_jupyter.replica_output import Reporter, log
except ImportError:  # standalone: the shipped modules sit beside this file
    from replica_artifacts import backup_subdir, keep_fit_history  # type: ignore[no-redef]
    from replica_callbacks import (  # type: ignore[no-redef]
        job_backup,
        job_tensorboard,
        metrics_callback,
        safe_terminate_on_nan,
        to_float,
    )
    from replica_env import REQUEST_CHECK, ReplicaEnv  # type: ignore[no-redef]
    from replica_inputs import (  # type: ignore[no-redef]
        adapt_evaluate_arguments,
        adapt_fit_arguments,
        predict_on_coordinator,
    )
    from replica_keras import patch_clear_session  # type: ignore[no-redef]
    from replica_output import Reporter, log  # type: ignore[no-redef]

STRATEGY_CLASSES = {
    "parameter_server": "ParameterServerStrategy",
    "multi_worker_mirrored": "MultiWorkerMirroredStrategy",
    "mirrored": "MirroredStrategy",
}


class DistributionError(RuntimeError):
    """The cell would train outside the job's strategy (a silent single-process run)."""


class BatchCallbackUnsupported(ValueError):
    """A callback of the cell with batch-level hooks, which tf_keras cannot call with parameter servers."""


def refuse_batch_callbacks(callbacks) -> None:
    """Raise :class:`BatchCallbackUnsupported` for the callbacks tf_keras would refuse with parameter servers
    (batch-level hooks, no ``_supports_tf_logs``), in one sentence naming the fix instead of its list of
    objects (the built-in ``TerminateOnNaN`` is replaced before; the runner's own callbacks come after)."""
    refused = []
    for cb in callbacks:
        if getattr(cb, "_supports_tf_logs", False) or not hasattr(cb, "_implements_train_batch_hooks"):
            continue
        if (
            cb._implements_train_batch_hooks()
            or cb._implements_test_batch_hooks()
            or cb._implements_predict_batch_hooks()
        ):
            refused.append(type(cb).__name__)
    if not refused:
        return
    names = ", ".join(dict.fromkeys(refused))
    raise BatchCallbackUnsupported(
        f"fit() got callbacks with batch-level hooks ({names}: on_train_batch_end and the like), which "
        "tf_keras cannot call with parameter servers; keep only epoch-level hooks (on_epoch_end), or train "
        "with all-reduce (workers only: ps=0, strategy='multi_worker_mirrored'), which calls them."
    )


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


def _patched(wrapper, original):
    """``wrapper`` marked as the runner's patch of ``original``: ``__wrapped__`` is what a kept replica's
    reset puts back (``backends/local_keep_process.py``)."""
    wrapper._tfk8s = True
    wrapper.__wrapped__ = original
    wrapper.__doc__ = original.__doc__
    return wrapper


class Runtime:
    """Everything the runner patches in for one replica: strategy, keras flavor, fit/clear_session hooks."""

    def __init__(self, tf, renv: ReplicaEnv, strategy, reporter: Reporter) -> None:
        self.tf = tf
        self.renv = renv
        self.strategy = strategy
        self.reporter = reporter
        self.fit_count = 0
        self.fitting = 0  # fit calls running (nested: fit's own evaluate)
        self.last_model: dict = {}
        self.trained_model = None  # the model of the last successful fit (saved into the artifacts)
        self.artifacts = (
            None  # replica_artifacts.JobArtifacts on the reporting replica of a job with artifacts
        )
        self.replicas = int(getattr(strategy, "num_replicas_in_sync", 1) or 1)
        self.cell_metrics = None  # replica_metrics.CellMetrics on the reporting replica (set by the runner)
        self.batch_steps = 0  # train_on_batch calls: the step of their metric points

    # --- the default strategy
    def set_default_strategy(self) -> None:
        tf = self.tf
        if tf.distribute.get_strategy() is not self.strategy:
            set_strategy = (
                getattr(self, "original_set_strategy", None) or tf.distribute.experimental_set_strategy
            )
            set_strategy(self.strategy)

    def in_fit(self) -> bool:
        return self.fitting > 0

    def patch_clear_session(self) -> None:
        patch_clear_session(self.renv.uses_tf_keras, self.set_default_strategy)

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
            if runtime.renv.strategy == "parameter_server":
                adapt_fit_arguments(runtime.tf, bound.arguments)
            runtime.fitting += 1
            try:
                history = original(*bound.args, **bound.kwargs)
            finally:
                runtime.fitting -= 1
            runtime.after_fit(model)
            return keep_fit_history(runtime.tf, runtime.renv, runtime.fit_count - 1, history)

        model_cls.fit = _patched(fit, original)
        if self.renv.strategy == "parameter_server":
            self._patch_evaluate(model_cls)
            self._refuse_batch_training(model_cls)
        else:
            self._patch_train_on_batch(model_cls)
        self._patch_predict_on_batch(model_cls)

    def _patch_train_on_batch(self, model_cls) -> None:
        """``train_on_batch`` loops (GANs, hand-made epochs) train under the job's strategy too: the model is
        checked as ``fit``'s is, and each call's logs are a metric point on the reporting replica."""
        original = model_cls.train_on_batch
        if getattr(original, "_tfk8s", False):
            return
        import inspect
        import sys

        signature = inspect.signature(original)
        flatten_module = sys.modules[original.__module__]
        runtime = self

        def train_on_batch(model, *args, **kwargs):
            bound = signature.bind(model, *args, **kwargs)
            runtime.check_model_strategy(model, "train_on_batch()")
            wants_dict = bool(bound.arguments.get("return_dict", False))
            bound.arguments["return_dict"] = True
            logs = original(*bound.args, **bound.kwargs)
            if runtime.cell_metrics is not None and not runtime.in_fit():
                values = runtime.reported_values(logs)
                if values:
                    runtime.batch_steps += 1
                    runtime.cell_metrics.add(runtime.batch_steps, values)
            if wants_dict:
                return logs
            if hasattr(model, "_flatten_metrics_in_order"):  # Keras 3
                return model._flatten_metrics_in_order(logs)
            return flatten_module.flatten_metrics_in_order(logs, model.metrics_names)  # tf_keras

        model_cls.train_on_batch = _patched(train_on_batch, original)

    def _refuse_batch_training(self, model_cls) -> None:
        """With parameter servers tf_keras runs steps only through ``fit``/``evaluate`` (or a coordinator
        loop): ``train_on_batch`` and ``test_on_batch`` would fail with a message about
        ``create_per_worker_dataset`` the cell never called. They are refused in one sentence naming the
        way out."""

        def refusal(name: str, instead: str):
            original = getattr(model_cls, name)
            if getattr(original, "_tfk8s", False):
                return original

            def refuse(model, *args, **kwargs):
                raise DistributionError(
                    f"{name}() cannot run with parameter servers, where tf_keras runs a model's steps only "
                    f"through fit() and evaluate() (or a ClusterCoordinator loop); call {instead} instead, or "
                    "train with all-reduce (workers only: ps=0, strategy='multi_worker_mirrored'), where "
                    f"{name}() works."
                )

            return _patched(refuse, original)

        model_cls.train_on_batch = refusal("train_on_batch", "model.fit(x, y, batch_size=..., epochs=...)")
        model_cls.test_on_batch = refusal("test_on_batch", "model.evaluate(x, y)")

    def _patch_predict_on_batch(self, model_cls) -> None:
        """``predict_on_batch(x)`` computes ``x``'s outputs on this replica, from its copy of the weights (the
        ps's with parameter servers), as one machine would: through the strategy, tf_keras with parameter
        servers fails (``create_per_worker_dataset``) and Keras 3 under all-reduce returns every worker's
        copy of the batch (measured: 6 rows for 3 inputs with 2 workers)."""
        original = model_cls.predict_on_batch
        if getattr(original, "_tfk8s", False):
            return
        tf = self.tf

        def predict_on_batch(model, x):
            import numpy as np

            return tf.nest.map_structure(lambda t: np.asarray(t), model(x, training=False))

        model_cls.predict_on_batch = _patched(predict_on_batch, original)

    def _patch_evaluate(self, model_cls) -> None:
        original = model_cls.evaluate
        if getattr(original, "_tfk8s", False):
            return
        import inspect

        signature = inspect.signature(original)
        tf = self.tf

        def evaluate(model, *args, **kwargs):
            bound = signature.bind(model, *args, **kwargs)
            adapt_evaluate_arguments(tf, bound.arguments)
            return original(*bound.args, **bound.kwargs)

        model_cls.evaluate = _patched(evaluate, original)

        original_predict = model_cls.predict
        predict_signature = inspect.signature(original_predict)

        def predict(model, *args, **kwargs):
            bound = predict_signature.bind(model, *args, **kwargs)
            return predict_on_coordinator(tf, model, bound.arguments)

        model_cls.predict = _patched(predict, original_predict)

    def _model_strategy(self, model):
        attr = "_distribution_strategy" if self.renv.uses_tf_keras else "_distribute_strategy"
        return getattr(model, attr, None)

    def check_model_strategy(self, model, call: str) -> None:
        """Refuse (:class:`DistributionError`) a model not built under the job's strategy."""
        got = self._model_strategy(model)
        if got is not self.strategy:
            kind = STRATEGY_CLASSES[self.renv.strategy]
            where = "with no strategy" if got is None else f"under another strategy ({type(got).__name__})"
            raise DistributionError(
                f"this model was built {where}, not under the job's {kind}, so {call} would train it on one "
                "replica only; build the model in the cell's main thread and do not enter another strategy "
                "scope (the runner makes the job's strategy the default)."
            )

    def before_fit(self, model, arguments: dict) -> None:
        self.check_model_strategy(model, "fit()")
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
                safe_terminate_on_nan(keras, self)() if type(cb) is keras.callbacks.TerminateOnNaN else cb
                for cb in callbacks
            ]
            refuse_batch_callbacks(callbacks)
        backup = next((cb for cb in callbacks if isinstance(cb, keras.callbacks.BackupAndRestore)), None)
        if (
            backup is not None
            and self.renv.strategy == "multi_worker_mirrored"
            and not self.renv.uses_tf_keras
        ):
            self.separate_backup_dir(backup)
        if backup is None and self.renv.checkpoint_dir:
            # At most every TFK8S_CHECKPOINT_INTERVAL s, or at the epoch end after a checkpoint request;
            # all-reduce workers agree on the epochs they save.
            interval = self.renv.checkpoint_interval
            resumed = getattr(self.artifacts, "resumed", None) or {}
            backup = job_backup(keras)(
                self.backup_dir(fit_index),
                interval,
                resumed.get("from"),
                request=self.renv.checkpoint_request,
                request_check=REQUEST_CHECK,
            )
            callbacks.append(backup)
        if self.artifacts is not None and self.artifacts.enabled:
            own = [cb for cb in callbacks if isinstance(cb, keras.callbacks.TensorBoard)]
            for cb in own:  # the cell's own TensorBoard keeps its folder, recorded in artifacts.json
                self.artifacts.record_tensorboard(str(cb.log_dir))
            if not own:
                callbacks.append(job_tensorboard(keras)(self.artifacts.fit_log_dir(fit_index)))
        if self.renv.reporting:
            initial_epoch = int(arguments.get("initial_epoch", 0) or 0)
            callbacks.append(metrics_callback(keras, self)(fit_index, initial_epoch, backup))
        arguments["callbacks"] = callbacks

    def separate_backup_dir(self, backup) -> None:
        """The cell's own Keras 3 ``BackupAndRestore(backup_dir=...)`` under all-reduce: one subdirectory per
        worker, since Keras 3 locks its backup file (a dir shared by the workers, as TensorFlow's
        ``multi_worker_with_keras`` tutorial writes it, ends in ``BlockingIOError: unable to lock file``).
        Each worker restores its own copy; they are identical, all workers saving the same epochs."""
        if getattr(backup, "_tfk8s_separated", False) or not hasattr(backup, "_weights_path"):
            return
        path = os.path.join(str(backup.backup_dir), self.renv.name)
        backup.backup_dir = path
        backup._weights_path = os.path.join(path, "latest.weights.h5")
        backup._training_metadata_path = os.path.join(path, "training_metadata.json")
        backup._prev_weights_path = f"{backup._weights_path}.bkp"
        backup._prev_training_metadata_path = f"{backup._training_metadata_path}.bkp"
        backup._tfk8s_separated = True
        log(f"the cell's BackupAndRestore saves {self.renv.name}'s backup in {path}")

    def backup_dir(self, fit_index: int) -> str | None:
        """``$TFK8S_CHECKPOINT_DIR/fit-<i>/<chief|worker-<n>|shared>`` (see ``backup_subdir``); a path or URI."""
        path = os.path.join(self.renv.checkpoint_dir, f"fit-{fit_index}", backup_subdir(self.renv))
        self.tf.io.gfile.makedirs(path)
        return path

    def after_fit(self, model) -> None:
        try:
            info = {"weights_sha256": weights_digest(model), "variable_device": variable_device(model)}
        except Exception as exc:  # reading weights from a ps that is gone
            info = {"weights_sha256": None, "variable_device": None, "note": f"{type(exc).__name__}"}
        self.last_model = info
        self.trained_model = model
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
            number = to_float(value)
            if number is not None:
                values[str(key)] = number / scale
        return values


# Settings TensorFlow takes only before its runtime starts: a notebook's first cell often sets them, and there
# they work; in a replica the runtime started before the cell (the job's strategy needs it). Each is kept as
# it was, with a line in the log, instead of failing the cell.
LATE_SETTINGS = {
    "inter_op_parallelism_threads": "tf.config.threading.set_inter_op_parallelism_threads",
    "intra_op_parallelism_threads": "tf.config.threading.set_intra_op_parallelism_threads",
    "set_memory_growth": "tf.config.experimental.set_memory_growth",
}


# Device settings of the same kind change what the cell computes on: refused in one sentence naming the fix
# instead of TensorFlow's "cannot be modified after being initialized".
LATE_DEVICE_SETTINGS = {
    "set_logical_device_configuration": "tf.config.set_logical_device_configuration",
    "set_visible_devices": "tf.config.set_visible_devices",
}


class LateDeviceSetting(RuntimeError):
    """A device setting the cell makes after the replica's TensorFlow runtime started."""


def tolerate_late_settings(tf) -> None:
    """Make the settings of :data:`LATE_SETTINGS` a logged no-op once the replica's runtime has started
    (TensorFlow raises ``RuntimeError: ... cannot be modified after initialization``), and those of
    :data:`LATE_DEVICE_SETTINGS` a :class:`LateDeviceSetting` in one sentence; idempotent."""
    try:
        from tensorflow.python.eager import context
    except ImportError:  # a TensorFlow laid out otherwise: its own errors stand
        return
    cls = context.Context

    def when_late(original, api: str, late):
        """``original`` with TensorFlow's "cannot be modified after initialization" (the runtime running)
        answered by ``late(api, args)``; any other error stands."""

        def setter(ctx, *args, **kwargs):
            try:
                return original(ctx, *args, **kwargs)
            except RuntimeError as exc:
                if ctx._context_handle is None or "after" not in str(exc) or "initializ" not in str(exc):
                    raise
                return late(api, args)

        return _patched(setter, original)

    def ignore(api: str, args: tuple) -> None:
        shown = ", ".join(repr(a) for a in args)
        log(
            f"{api}({shown}) is ignored: this replica's TensorFlow runtime started before the cell "
            "(the job's strategy needs it), so it keeps its own setting"
        )

    def refuse(api: str, args: tuple) -> None:
        raise LateDeviceSetting(
            f"{api}() cannot change this replica's devices, because its TensorFlow runtime started "
            "before the cell (the job's strategy needs it); remove the call and size the job instead "
            "(workers=..., cpu=..., gpus=...)."
        ) from None

    for name, api in LATE_DEVICE_SETTINGS.items():
        attribute = vars(cls).get(name)
        if callable(attribute) and not getattr(attribute, "_tfk8s", False):
            setattr(cls, name, when_late(attribute, api, refuse))
    for name, api in LATE_SETTINGS.items():
        attribute = vars(cls).get(name)
        if isinstance(attribute, property):
            if attribute.fset is not None and not getattr(attribute.fset, "_tfk8s", False):
                setter = when_late(attribute.fset, api, ignore)
                setattr(cls, name, property(attribute.fget, setter, attribute.fdel, attribute.__doc__))
        elif callable(attribute) and not getattr(attribute, "_tfk8s", False):
            setattr(cls, name, when_late(attribute, api, ignore))
