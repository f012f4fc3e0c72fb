"""Metric points from any cell: ``tf.summary.scalar`` and ``report()``, one throttled stream.

``fit`` has its own callback (``replica_callbacks.py``). A custom training loop reports through
:class:`CellMetrics`, fed by two sources on the reporting replica:

* ``tf.summary.scalar(name, value, step)``, called eagerly or inside a ``tf.function`` (the cell's
  TensorBoard scalars, still written to its own summary files, also in an image without the
  ``tensorboard`` package, which TensorFlow 2.21 no longer installs and without which
  ``tf.summary.scalar`` raises): :func:`patch_summary_scalar`; in a traced function an op beside the
  summary's write hands each run's value over; inside ``fit`` they are left to fit's callback (Keras's
  TensorBoard callback writes them too), so a metric is not drawn twice;
* ``report(step=..., **values)`` (``cell_report.py``).

With a job artifact directory, a ``tf.summary.scalar`` call outside ``fit`` made with no default writer is
also written to ``<artifacts>/tensorboard/cell`` (it would otherwise be written nowhere), and the folders of
the cell's own ``tf.summary.create_file_writer`` calls are recorded for ``artifacts.json``.

Values of one step are gathered into one point (a loop usually writes loss and accuracy in two calls);
a point is printed when the next step begins, throttled like fit's: the first ``dense`` points (the
runner's: :data:`DENSE_STEPS`) are all printed, so a short loop that reports once an epoch draws every
epoch, then points are at least ``min(metric_interval, time since the first point / DENSE_STEPS)``
apart (the steps in between are dropped). A step that stays the last one is flushed by a timer thread
after at most ``FLUSH_DELAY`` seconds, and at the cell's end. The points are ``metric`` protocol events through the
replica's :class:`Reporter`, so ``(run, seq)`` de-duplication and the monitor's per-series point cap hold
as for fit's.

Part of the runner (see ``runner.py``): ``tf`` is passed in. It travels with the runner in the job's
ConfigMap.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref

try:
    from tfk8s_jupyter.replica_output import Reporter, log
except ImportError:  # standalone: the shipped modules sit beside this file
    from replica_output import Reporter, log  # type: ignore[no-redef]

FLUSH_DELAY = 0.5  # seconds a step's values may wait for more values of the same step
# The first steps of each fit, and a cell's first points, are all reported: a short job draws a curve.
DENSE_STEPS = 50


def point_due(now: float, last: float | None, first: float | None, dense: bool, interval: float) -> bool:
    """fit's and a cell's reporting rule: every point while ``dense`` (a fit's first :data:`DENSE_STEPS`
    steps, a cell's first points) or before the first; then points at least ``min(interval, time since the
    first / DENSE_STEPS)`` apart, so the curve so far keeps about DENSE_STEPS points until ``interval``
    (``metric_interval``) takes over."""
    if dense or last is None:
        return True
    return now - last >= min(interval, (now - (first or now)) / DENSE_STEPS)


class CellMetrics:
    """The reporting replica's points from ``tf.summary.scalar`` and ``report()`` (see the module doc)."""

    def __init__(
        self, reporter: Reporter, interval: float, flush_delay: float = FLUSH_DELAY, dense: int = 0
    ) -> None:
        """``dense``: how many first points are never throttled (the runner passes :data:`DENSE_STEPS`)."""
        self.reporter = reporter
        self.interval = max(0.0, float(interval))
        self.dense = dense
        self.first_emit: float | None = None
        self.flush_delay = min(flush_delay, self.interval) if self.interval else flush_delay
        self.lock = threading.Lock()
        self.step: int | None = None  # the pending point's step
        self.values: dict[str, float] = {}
        self.since = 0.0  # when the pending point got its first value
        self.last_emit: float | None = None  # never yet: the first point is never throttled
        self.last_step = 0
        self.points = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> CellMetrics:
        self._thread = threading.Thread(target=self._flush_loop, name="tfk8s-cell-metrics", daemon=True)
        self._thread.start()
        return self

    def add(self, step: int | None, values: dict[str, float]) -> int:
        """Values of one step (``step`` None: one more than the last step seen); returns the step used."""
        with self.lock:
            if step is None:  # another series of the pending step, or the next step
                pending = self.values and not (set(values) & set(self.values))
                step = self.step if pending and self.step is not None else self.last_step + 1
            now = time.monotonic()
            if self.step is not None and step != self.step:
                if self._due(now):
                    self._emit_locked(now)
                else:
                    self.values = {}  # throttled: this step's point is dropped, like fit's
            if not self.values:
                self.since = now
            self.step = step
            self.last_step = step
            self.values.update(values)
            return step

    def flush(self) -> None:
        """Print the pending point now (the cell's end)."""
        with self.lock:
            if self.values:
                self._emit_locked(time.monotonic())

    def close(self) -> None:
        self._stop.set()
        self.flush()

    def _due(self, now: float) -> bool:
        if not self.dense:  # a flat throttle: at most one point every metric_interval
            return self.last_emit is None or now - self.last_emit >= self.interval
        return point_due(now, self.last_emit, self.first_emit, self.points < self.dense, self.interval)

    def _emit_locked(self, now: float) -> None:
        values, self.values = self.values, {}
        if not values:
            return
        self.last_emit = now
        if self.first_emit is None:
            self.first_emit = now
        self.points += 1
        self.reporter.emit("metric", step=int(self.step or 0), values=values, source="cell")

    def _flush_loop(self) -> None:
        tick = max(0.05, min(0.2, self.flush_delay / 2 or 0.05))
        while not self._stop.wait(tick):
            with self.lock:
                now = time.monotonic()
                if self.values and now - self.since >= self.flush_delay and self._due(now):
                    self._emit_locked(now)


def write_scalar_without_tensorboard(tf, name, data, step, description):
    """What ``tf.summary.scalar`` writes, without the ``tensorboard`` package (TensorBoard reads it)."""
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(
        summary_description=description or "",
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars", content=b""),
    )
    with tf.name_scope("scalar_summary"):
        return tf.summary.write(
            tag=name, tensor=tf.cast(data, tf.float32), step=step, metadata=metadata.SerializeToString()
        )


def has_default_writer(tf) -> bool:
    """Whether a ``tf.summary`` writer is the default here (the cell's ``with writer.as_default():``)."""
    import importlib

    try:
        return importlib.import_module("tensorflow.python.ops.summary_ops_v2").has_default_writer()
    except (ImportError, AttributeError):
        return True  # unknown: never write somewhere the cell did not ask


def _summary_modules(tf, name: str, original) -> list:
    """Every public module whose ``name`` is ``original``: tf.summary, tf.compat.v2.summary (what tf_keras's
    TensorBoard callback calls) and ``tensorflow.summary`` (Keras 3's). ``import tensorflow.summary`` made
    after a patch would replace ``tf.summary`` with a fresh, unpatched module: it is imported first."""
    import importlib

    try:
        importlib.import_module("tensorflow.summary")
    except ImportError:
        pass
    modules = [tf.summary]
    try:
        modules.append(tf.compat.v2.summary)
    except AttributeError:
        pass
    modules += [
        m for n, m in list(sys.modules.items()) if n.endswith(".summary") and n.startswith("tensorflow")
    ]
    return [m for m in dict.fromkeys(modules) if vars(m).get(name) is original]


def patch_summary_scalar(tf, metrics: CellMetrics | None, in_fit, artifacts=None) -> None:
    """Make ``tf.summary.scalar`` calls, eager or traced, also points of ``metrics`` (not while
    ``in_fit()``; never when ``metrics`` is None, a replica that does not report), and write without
    TensorBoard.

    With ``artifacts`` (the reporting replica's ``JobArtifacts``), an eager call outside ``fit`` made with
    no default writer is written to ``<artifacts>/tensorboard/cell`` (at the step it is reported with), and
    the folders of the cell's own ``tf.summary.create_file_writer`` are recorded in ``artifacts.json``.
    """
    summary = tf.summary
    original = summary.scalar
    if getattr(original, "_tfk8s", False):
        return
    modules = _summary_modules(tf, "scalar", original)

    def write(name, data, step, description):
        try:
            return original(name, data, step=step, description=description)
        except Exception as exc:  # TBNotInstalledError: TensorFlow 2.21 no longer pulls in TensorBoard
            if type(exc).__name__ != "TBNotInstalledError":
                raise
            return write_scalar_without_tensorboard(tf, name, data, step, description)

    def scalar(name, data, step=None, description=None):
        eager = tf.executing_eagerly()
        to_artifacts = (
            artifacts is not None
            and artifacts.enabled
            and eager
            and not in_fit()
            and not has_default_writer(tf)
        )
        if not to_artifacts:
            written = write(name, data, step, description)
            if metrics is None or in_fit():
                return written
            if not eager:  # traced in a tf.function: the point is taken when the graph runs
                _bridge_traced_scalar(tf, metrics, str(name), data, step)
                return written
        try:
            step_number = step if step is not None else tf.summary.experimental.get_step()
            number = data.numpy() if hasattr(data, "numpy") else data
            value = float(number)
            if step_number is not None:
                step_number = int(step_number.numpy() if hasattr(step_number, "numpy") else step_number)
        except (TypeError, ValueError) as exc:
            log(f"tf.summary.scalar({name!r}) is not a scalar number ({type(exc).__name__}); not reported")
            return write(name, data, step, description) if to_artifacts else written
        used = metrics.add(step_number, {str(name): value}) if metrics is not None else step_number
        if not to_artifacts:
            return written
        with artifacts.cell_writer().as_default():
            return write(name, data, used if used is not None else 0, description)

    _mark_scheduling(tf)
    scalar._tfk8s = True
    scalar.__wrapped__ = original
    scalar.__doc__ = original.__doc__
    for module in modules:
        module.scalar = scalar
    _record_file_writers(tf, artifacts if artifacts is not None and artifacts.enabled else None, in_fit)


_SCHEDULING = threading.local()  # set while ClusterCoordinator.schedule traces a function for a worker


def _bridge_traced_scalar(tf, metrics: CellMetrics, name: str, data, step) -> None:
    """In a function being traced (``@tf.function``, graph mode), add an op that hands the scalar's value
    and step to ``metrics`` each time the graph runs: a ``tf.numpy_function`` beside the summary's own
    write op. Left out where such an op cannot run: a function ``ClusterCoordinator.schedule`` sends to
    a parameter-server worker (another process), an XLA-compiled function, or a non-scalar value."""
    if getattr(_SCHEDULING, "depth", 0):
        return
    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util

        if control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()):
            return
    except (ImportError, AttributeError):
        pass
    try:
        value = tf.cast(data, tf.float64)
        if value.shape.rank not in (0, None):
            return
        if step is None:
            step = tf.summary.experimental.get_step()
        step_value = tf.constant(-1, tf.int64) if step is None else tf.cast(step, tf.int64)
    except (TypeError, ValueError):
        return

    def take(number, step_number):
        step_number = int(step_number)
        metrics.add(step_number if step_number >= 0 else None, {name: float(number)})
        return []

    tf.numpy_function(take, [value, step_value], Tout=[], stateful=True, name="tfk8s_metric")


def _mark_scheduling(tf) -> None:
    """Note when ``ClusterCoordinator.schedule`` runs (it traces the function it sends to a worker)."""
    try:
        cls = tf.distribute.coordinator.ClusterCoordinator
    except AttributeError:
        return
    original = cls.schedule
    if getattr(original, "_tfk8s", False):
        return

    def schedule(self, *args, **kwargs):
        _SCHEDULING.depth = getattr(_SCHEDULING, "depth", 0) + 1
        try:
            return original(self, *args, **kwargs)
        finally:
            _SCHEDULING.depth -= 1

    schedule._tfk8s = True
    schedule.__wrapped__ = original
    schedule.__doc__ = original.__doc__
    cls.schedule = schedule


_WRITERS: weakref.WeakSet = weakref.WeakSet()  # the cell's summary writers, flushed at its end


def _record_file_writers(tf, artifacts, in_fit) -> None:
    """Keep the cell's own ``tf.summary.create_file_writer`` writers (:func:`flush_summary_writers`) and,
    with ``artifacts``, record their folders in artifacts.json."""
    original = tf.summary.create_file_writer
    if getattr(original, "_tfk8s", False):
        return
    modules = _summary_modules(tf, "create_file_writer", original)

    def create_file_writer(logdir, *args, **kwargs):
        writer = original(logdir, *args, **kwargs)
        try:
            _WRITERS.add(writer)
        except TypeError:
            pass
        if artifacts is not None and not in_fit() and isinstance(logdir, (str, os.PathLike)):
            artifacts.record_tensorboard(os.fspath(logdir))
        return writer

    create_file_writer._tfk8s = True
    create_file_writer.__wrapped__ = original
    create_file_writer.__doc__ = original.__doc__
    for module in modules:
        module.create_file_writer = create_file_writer


def flush_summary_writers() -> None:
    """Write out what the cell's summary writers still hold (the replica leaves with ``os._exit``, which
    would drop the events a writer queues between its flushes: a loop's last steps)."""
    for writer in list(_WRITERS):
        try:
            writer.flush()
        except Exception as exc:  # a writer the cell closed, or whose folder went away: nothing to keep
            log(f"a summary writer could not be flushed at the cell's end ({type(exc).__name__})")
