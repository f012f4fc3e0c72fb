"""The Keras callbacks the runner adds to a replica's ``Model.fit`` (see ``replica_runtime.py``).

* :func:`metrics_callback`: the reporting replica's ``metric`` points (every one of a fit's first steps, then
  an adaptive interval up to ``metric_interval``) and every ``epoch`` end, as protocol lines; with
  parameter servers a point waits until its step has run, so fetching a metric never stalls the
  coordinator.
* :func:`job_backup`: ``BackupAndRestore`` in the job's checkpoint dir, saving the first epoch, then at
  most every interval or at the epoch end after a checkpoint request (a resize waiting for one), so a
  restarted job resumes from its last saved epoch.
* :func:`safe_terminate_on_nan`: ``TerminateOnNaN`` that works with parameter-server logs.
* :func:`job_tensorboard`: the reporting replica's ``TensorBoard`` in the job's artifacts (epoch summaries
  only).

The callback classes derive from the cell's Keras (Keras 3 or tf_keras), so each is built by a function
that takes the ``keras`` module. Part of the runner: it travels with it in the job's ConfigMap.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

try:
    from tfk8s_jupyter.replica_artifacts import explain_restore_failure
    from tfk8s_jupyter.replica_metrics import DENSE_STEPS, point_due
    from tfk8s_jupyter.replica_output import log
except ImportError:  # standalone: the shipped modules sit beside this file
    from replica_artifacts import explain_restore_failure  # type: ignore[no-redef]
    from replica_metrics import DENSE_STEPS, point_due  # type: ignore[no-redef]
    from replica_output import log  # type: ignore[no-redef]

if TYPE_CHECKING:
    from tfk8s_jupyter.replica_runtime import Runtime


def to_float(value) -> float | None:
    """One Keras log value (tensor, numpy, RemoteValue) as a Python float; None when it is not a scalar."""
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


def fetch_errors(tf):
    """The errors reading a log may raise while a replica restarts (parameter servers): skip, never fail."""
    return (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError)


def metrics_callback(keras, runtime: Runtime):
    """The reporting replica's metrics callback class for ``keras`` (Keras 3 or tf_keras).

    Adaptive reporting: every one of a fit's first ``DENSE_STEPS`` steps is a point, then points are at
    least ``min(metric_interval, time since the fit's first step / DENSE_STEPS)`` apart, so the curve so
    far always has about ``DENSE_STEPS`` points or more until the configured interval takes over (a
    40-step job draws 40 points, a 150-step job a curve rather than a line through two points). With
    parameter servers a batch's logs are a RemoteValue: points wait in a queue and are reported once their
    step has run (a non-blocking check at each batch end), so reporting never stalls the coordinator.
    """
    tf = runtime.tf

    def ready(remote) -> bool | None:
        """Whether a RemoteValue's step has run (None: this TensorFlow cannot say without blocking)."""
        event = getattr(remote, "_status_available_event", None)
        return event.is_set() if isinstance(event, threading.Event) else None

    class TFK8sMetrics(keras.callbacks.Callback):
        """Prints adaptive ``metric`` points and every ``epoch`` end (reporting replica only)."""

        def __init__(self, fit_index: int, initial_epoch: int, backup) -> None:
            super().__init__()
            self._supports_tf_logs = True
            self.fit_index = fit_index
            self.initial_epoch = initial_epoch
            self.backup = backup
            self.epoch = 0
            self.step = 0
            self.steps_per_epoch = None
            self.batches = 0  # batch ends seen in this fit
            self.fit_start: float | None = None
            self.last_point = 0.0
            self.first_epoch_seen = False
            self.interval = runtime.renv.metric_interval
            self.lock = threading.Lock()
            self.waiting: list = []  # parameter servers: (RemoteValue logs, step, epoch) until their step ran
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

        def _due(self, now: float) -> bool:
            return point_due(now, self.last_point, self.fit_start, self.batches <= DENSE_STEPS, self.interval)

        def on_train_batch_end(self, batch, logs=None):
            # Keras 3 may call this from its callback thread pool (async_safe): one batch at a time here,
            # points emitted under the lock so their steps stay in order.
            with self.lock:
                step = self._global_step(batch)
                self.step = max(self.step, step)
                now = time.monotonic()
                self.batches += 1
                if self.fit_start is None:
                    self.fit_start = now
                remote = hasattr(logs, "fetch")
                if remote and self.waiting:
                    self._emit_waiting(block=False)
                if not self._due(now):
                    return
                self.last_point = now
                epoch = self.epoch
                if not remote:
                    self._emit_point(logs, step, epoch)
                    return
                if ready(logs) is not None:
                    # Parameter servers: fetching this step's RemoteValue would stall the coordinator until
                    # the steps queued before it ran; it waits in the queue until it is ready.
                    self.waiting.append((logs, step, epoch))
                    self._emit_waiting(block=False)
                    return
                # A TensorFlow that cannot say whether a value is ready: report the one kept at the
                # previous tick, long done by now.
                previous, self.pending = self.pending, (logs, step, epoch)
                if previous is not None:
                    self._emit_point(*previous)

        def _emit_waiting(self, block: bool) -> None:
            """Report the queued parameter-server points whose steps have run (all of them when ``block``)."""
            while self.waiting and (block or ready(self.waiting[0][0])):
                self._emit_point(*self.waiting.pop(0))

        def _emit_point(self, logs, step: int, epoch: int) -> None:
            try:
                values = runtime.reported_values(logs, per_batch=True)
            except fetch_errors(tf) as exc:
                log(f"skipped a metric point ({type(exc).__name__}); a replica is restarting")
                return
            if values:
                runtime.reporter.emit("metric", epoch=epoch, step=step, values=values, fit=self.fit_index)

        def on_epoch_end(self, epoch, logs=None):
            with self.lock:
                # The points kept belong to this epoch: report them before the epoch's end (after it,
                # steps would go back), so short epochs still get their per-step points.
                self._emit_waiting(block=True)
                pending, self.pending = self.pending, None
                if pending is not None:
                    self._emit_point(*pending)
            if self.steps_per_epoch:
                self.step = (int(epoch) + 1) * int(self.steps_per_epoch)
            try:
                values = runtime.reported_values(logs)
            except fetch_errors(tf) as exc:
                log(f"epoch {epoch} metrics unavailable ({type(exc).__name__})")
                values = {}
            epochs = (getattr(self, "params", None) or {}).get("epochs")
            runtime.reporter.emit(
                "epoch",
                epoch=int(epoch),
                step=self.step,
                values=values,
                fit=self.fit_index,
                last_epoch=isinstance(epochs, int) and int(epoch) + 1 >= epochs,
            )
            if self.backup is not None and getattr(self.backup, "last_saved_epoch", epoch) == epoch:
                runtime.reporter.emit("checkpoint", action="saved", epoch=int(epoch), fit=self.fit_index)

    return TFK8sMetrics


def job_backup(keras):
    """The job's ``BackupAndRestore`` class for ``keras`` (Keras 3 or tf_keras)."""

    class JobBackupAndRestore(keras.callbacks.BackupAndRestore):
        """``BackupAndRestore`` that saves the first epoch, then at most every ``interval`` seconds or when a
        checkpoint is asked for, and keeps its last checkpoint when ``fit`` ends (a later job resumes from
        it, ``TFK8S_RESUME_FROM``).

        A save costs ~0.1 s with parameter servers (variables come from the ps) and a few percent of a short
        epoch with all-reduce: saving every epoch would cost several percent of the training time. A
        checkpoint asked for (``request``: the runner contract's ``checkpoint.request`` file, written by a
        resize that waits for one) is saved at the next epoch end. All-reduce workers restore and resume
        together, so they must save the same epochs: there the decision is agreed (a one-scalar all-reduce:
        a save is due when it is due on any worker's clock or any worker saw the request). A checkpoint that
        does not fit the cell's model (another shape) is one sentence (:class:`RestoreError`), not Keras's
        traceback.
        """

        def __init__(
            self,
            backup_dir: str,
            interval: float,
            resumed_from: str | None = None,
            request: str | None = None,
            request_check: float = 0.2,
        ) -> None:
            super().__init__(backup_dir, delete_checkpoint=False)
            self.interval = interval
            self.resumed_from = resumed_from
            self.request = request
            self.request_check = request_check
            self.last_look = 0.0  # monotonic time of the last stat of the request file
            self.last_save: float | None = None
            self.last_save_wall_ns = 0  # wall clock when the last save started: older requests are honoured
            self.last_saved_epoch: int | None = None
            self.last_epoch_end: int | None = None
            self.async_safe = True  # save_freq="epoch": its batch-end hook does nothing

        def on_train_begin(self, logs=None):
            try:
                super().on_train_begin(logs)
            except (ValueError, TypeError, KeyError, OSError) as exc:
                raise explain_restore_failure(exc, self.backup_dir, self.resumed_from) from None

        def _save_model(self):
            """Keras 3's save, written beside the backup and then renamed over it (weights, then the
            epoch they hold): a replica killed while it saves leaves its previous backup whole, where
            Keras 3 writes ``latest.weights.h5`` in place and a kill left a file no restore can open."""
            final = getattr(self, "_weights_path", None)
            if final is None:  # tf_keras: a TensorFlow checkpoint, written atomically already
                return super()._save_model()
            import tensorflow as tf

            metadata = self._training_metadata_path
            partial = os.path.join(self.backup_dir, f"partial-{os.getpid()}")
            self._weights_path = f"{partial}.weights.h5"
            self._training_metadata_path = f"{partial}.json"
            try:
                super()._save_model()
            finally:
                written = (self._weights_path, self._training_metadata_path)
                self._weights_path, self._training_metadata_path = final, metadata
            tf.io.gfile.rename(written[0], final, overwrite=True)
            tf.io.gfile.rename(written[1], metadata, overwrite=True)

        def on_train_end(self, logs=None):
            # The kept checkpoint is the fit's last epoch, even when the interval skipped its save.
            last = self.last_epoch_end
            if last is not None and self.last_saved_epoch != last:
                self.interval, interval = 0.0, self.interval
                try:
                    self.on_epoch_end(last, logs)
                finally:
                    self.interval = interval
            super().on_train_end(logs)

        def requested(self) -> bool:
            """Whether a checkpoint request newer than the last save is there (one stat, at most every
            ``request_check`` seconds)."""
            if not self.request:
                return False
            now = time.monotonic()
            if now - self.last_look < self.request_check:
                return False
            self.last_look = now
            try:
                return os.stat(self.request).st_mtime_ns >= self.last_save_wall_ns
            except OSError:
                return False

        def voters(self):
            """The all-reduce strategy whose workers vote on each epoch's save, or None (one worker, parameter
            servers where only the chief saves, or a save every epoch)."""
            strategy = getattr(self.model, "distribute_strategy", None)
            if self.interval <= 0 or getattr(getattr(strategy, "extended", None), "_num_workers", 1) <= 1:
                return None
            import tensorflow as tf

            return strategy if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) else None

        def save_due(self) -> bool:
            """Whether this epoch's save is due; the same answer on every worker of an all-reduce job."""
            if self.interval <= 0 or self.last_save is None:
                # Every worker saves its fit's first epoch: nothing to agree on, so the vote is traced at
                # the second epoch's end (~0.03 s once), not before the first batch.
                return True
            due = time.monotonic() - self.last_save >= self.interval or self.requested()
            strategy = self.voters()
            if strategy is None:
                return due
            import tensorflow as tf

            return float(save_vote(strategy)(tf.constant(1.0 if due else 0.0))) > 0

        def on_epoch_end(self, epoch, logs=None):
            self.last_epoch_end = int(epoch)
            if not self.save_due():
                if hasattr(self, "_current_epoch"):  # Keras 3 keeps its epoch count here
                    self._current_epoch = epoch + 1
                    self._last_batch_seen = 0
                return
            started = time.time_ns()
            super().on_epoch_end(epoch, logs)
            self.last_save = time.monotonic()
            self.last_save_wall_ns = started
            self.last_saved_epoch = int(epoch)

    return JobBackupAndRestore


def save_vote(strategy):
    """The all-reduce workers' vote on a save, one per strategy: a ``tf.function`` summing one scalar over the
    workers (~2 ms a call on this machine's two workers, against ~8 ms and spikes to ~200 ms for the same
    reduce run eagerly), traced at the first call."""
    vote = getattr(strategy, "_tfk8s_save_vote", None)
    if vote is None:
        import tensorflow as tf

        @tf.function
        def vote(flag):
            votes = strategy.run(tf.identity, args=(flag,))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None)

        strategy._tfk8s_save_vote = vote
    return vote


def safe_terminate_on_nan(keras, runtime: Runtime):
    """A ``TerminateOnNaN`` class for ``keras`` that reads parameter-server logs."""
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
                value = to_float(loss)
            except fetch_errors(tf):
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


def job_tensorboard(keras):
    """The job's ``TensorBoard`` callback class for ``keras``: epoch summaries only, nothing per batch.

    No histograms, graph, images or profiling, ``update_freq="epoch"``, its writer created at the first epoch
    end rather than before the first batch; with Keras 3 its batch hooks are
    dropped (they call ``tf.summary.scalar`` for every batch, to no writer) and it is marked async-safe,
    so adding it never makes Keras 3 give up dispatching batch callbacks in its thread pool.
    """

    class JobTensorBoard(keras.callbacks.TensorBoard):
        def __init__(self, log_dir: str) -> None:
            super().__init__(
                log_dir=log_dir,
                histogram_freq=0,
                write_graph=False,
                write_images=False,
                update_freq="epoch",
                profile_batch=0,
            )
            self.async_safe = True

        def on_train_begin(self, logs=None):
            # Epoch summaries only: no writer to make the default (Keras's would create the train writer
            # here, a file in the artifacts, before the first batch); the first epoch end creates it.
            self._global_train_batch = 0
            self._previous_epoch_iterations = 0

        def on_train_batch_begin(self, batch, logs=None):
            pass

        def on_train_batch_end(self, batch, logs=None):
            pass

    return JobTensorBoard
