"""Metric points from any cell: ``tf.summary.scalar`` and ``report()``, one throttled stream.

``fit`` has its own callback (``replica_callbacks.py``). A custom training loop reports through
:class:`CellMetrics`, fed by two sources on the reporting replica:

* ``tf.summary.scalar(name, value, step)`` called eagerly (the cell's TensorBoard scalars, still written to
  its own summary files, also in an image without the ``tensorboard`` package, which TensorFlow 2.21 no
  longer installs and without which ``tf.summary.scalar`` raises): :func:`patch_summary_scalar`; inside ``fit`` they are left to fit's callback
  (Keras's TensorBoard callback writes them too), so a metric is not drawn twice;
* ``report(step=..., **values)`` (``cell_report.py``).

With a job artifact directory, a ``tf.summary.scalar`` call outside ``fit`` made with no default writer is
also written to ``<artifacts>/tensorboard/cell`` (it would otherwise be written nowhere), and the folders of
the cell's own ``tf.summary.create_file_writer`` calls are recorded for ``artifacts.json``.

Values of one step are gathered into one point (a loop usually writes loss and accuracy in two calls);
a point is printed when the next step begins, at most every ``metric_interval`` seconds (the steps in
between are dropped, like fit's), and a step that stays the last one is flushed by a timer thread after at
most ``FLUSH_DELAY`` seconds, and at the cell's end. The points are ``metric`` protocol events through the
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

try:
    from tfk8s_jupyter.replica_output import Reporter, log
except ImportError:  # standalone: the shipped modules sit beside this file
    from replica_output import Reporter, log  # type: ignore[no-redef]

FLUSH_DELAY = 0.5  # seconds a step's values may wait for more values of the same step


class CellMetrics:
    """The reporting replica's points from ``tf.summary.scalar`` and ``report()`` (see the module doc)."""

    def __init__(self, reporter: Reporter, interval: float, flush_delay: float = FLUSH_DELAY) -> None:
        self.reporter = reporter
        self.interval = max(0.0, float(interval))
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
        return self.last_emit is None or now - self.last_emit >= self.interval

    def _emit_locked(self, now: float) -> None:
        values, self.values = self.values, {}
        if not values:
            return
        self.last_emit = now
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
    """Make eager ``tf.summary.scalar`` calls also points of ``metrics`` (not while ``in_fit()``; never
    when ``metrics`` is None, a replica that does not report), and write without TensorBoard.

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
            if metrics is None or in_fit() or not eager:
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

    scalar._tfk8s = True
    scalar.__wrapped__ = original
    scalar.__doc__ = original.__doc__
    for module in modules:
        module.scalar = scalar
    if artifacts is not None and artifacts.enabled:
        _record_file_writers(tf, artifacts, in_fit)


def _record_file_writers(tf, artifacts, in_fit) -> None:
    """The folders of the cell's own ``tf.summary.create_file_writer`` calls, recorded in artifacts.json."""
    original = tf.summary.create_file_writer
    if getattr(original, "_tfk8s", False):
        return
    modules = _summary_modules(tf, "create_file_writer", original)

    def create_file_writer(logdir, *args, **kwargs):
        writer = original(logdir, *args, **kwargs)
        if not in_fit() and isinstance(logdir, (str, os.PathLike)):
            artifacts.record_tensorboard(os.fspath(logdir))
        return writer

    create_file_writer._tfk8s = True
    create_file_writer.__wrapped__ = original
    create_file_writer.__doc__ = original.__doc__
    for module in modules:
        module.create_file_writer = create_file_writer
