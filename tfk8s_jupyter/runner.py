"""The in-replica bootstrap: every replica of a job runs ``python -m tfk8s_jupyter.runner``.

The runner is the only part of the package that imports TensorFlow, and only once the replica is set up
(``import tfk8s_jupyter.runner`` imports no TensorFlow). Its modules:

* ``runner.py`` (this file): the bootstrap (environment before TensorFlow, image check, strategy),
  serving replicas, the payload and the cell, ``main``;
* ``replica_env.py``: the runner contract, i.e. the environment every replica gets (``TFK8S_*`` variables,
  TF_CONFIG, ``no_proxy``): see its docstring for the variables;
* ``replica_runtime.py``: the default strategy and the ``Model.fit`` hooks;
* ``replica_callbacks.py``: the callbacks ``fit`` gets (metrics, job backup, TensorBoard, TerminateOnNaN);
* ``replica_artifacts.py``: the job's artifact directory (``TFK8S_ARTIFACTS``): checked at start, an
  earlier job's checkpoints copied in (``TFK8S_RESUME_FROM``), the trained model and ``artifacts.json``
  written at the end (its docstring has the layout and the format);
* ``replica_keras.py``: Keras 3 or tf_keras, the ``keras`` alias and the Keras patches;
* ``replica_output.py``: protocol lines on stdout, diagnostics on stderr;
* ``replica_strategy.py``: a strategy the cell constructs is the job's (or one clear refusal);
* ``replica_inputs.py``: ``fit``/``evaluate``/``predict`` inputs made trainable with parameter servers;
* ``replica_metrics.py`` and ``cell_report.py``: ``tf.summary.scalar`` and ``report()`` as metric points;
* ``replica_workdir.py``: the working directory (payload files, the notebook's folder or the shipped input
  files, writes kept the replica's own, a missing input file explained);
* ``protocol.py`` and ``payload.py``: the line protocol and the payload format.

They also work as standalone files (``python runner.py`` with the others beside it), which is how
container images without the package run them: the Kubernetes backend ships them in the job's ConfigMap
(``RUNNER_FILES`` in ``backends/kubernetes/manifests.py``). So each imports the others with a fallback to
a plain ``import``, and none imports anything else from the package.

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
* A cell that builds its own MultiWorkerMirroredStrategy / ParameterServerStrategy (as TensorFlow's
  tutorials do) gets the job's, with its ``variable_partitioner`` or communication options; one that asks
  for a strategy the job is not is refused at that line (``replica_strategy.py``).
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
  epoch (one shared dir for tf_keras all-reduce, one per worker for Keras 3; with parameter servers the
  chief's only): the first epoch, then at most every TFK8S_CHECKPOINT_INTERVAL s (all-reduce workers agree
  on the epochs they save), and the last epoch when fit ends; the backup is kept after a successful fit, so a later job can continue from
  it; ``TerminateOnNaN`` is replaced by a version that works with parameter-server logs.

Results (``replica_artifacts.py``), when the job has an artifact directory (``TFK8S_ARTIFACTS``, a path or a
URI: everything written there goes through ``tf.io.gfile``):

* At start the reporting replica creates it and proves it writable, or the job fails with one sentence
  (exit 2). With ``TFK8S_RESUME_FROM`` (an earlier job's checkpoint dir) each replica that owns a backup dir
  copies the earlier job's backups in, once per job; the cell's ``fit`` calls restore them as after a
  restart, so epochs and the global step of metric points continue. No checkpoint there, or one written by
  the other Keras, fails at start in one sentence; one that does not fit the cell's model fails its ``fit``
  with one sentence (``RestoreError``).
* Every ``fit`` on the reporting replica gets a ``TensorBoard`` callback writing epoch summaries to
  ``tensorboard/fit-<i>`` unless the cell passed its own (whose folder is recorded); ``tf.summary.scalar``
  calls of a custom loop with no default writer are written to ``tensorboard/cell``, and the folders of the
  cell's own ``tf.summary.create_file_writer`` are recorded.
* When the cell succeeded, the model of the last successful ``fit`` is saved as ``model/model.keras``
  (unless ``TFK8S_SAVE_MODEL=0``; every all-reduce worker takes part, since Keras's save runs collectives
  there), and ``artifacts.json`` is written; its content is the ``artifacts`` field of the ``end`` event. A
  failed save is a ``note`` event (``about="save"``) and the job still succeeds (exit 0).

Output: protocol lines (``@tfk8s {json}``, see ``protocol.py``) and the cell's own prints go to stdout;
TensorFlow's logs and the runner's diagnostics go to stderr. Exit status 0 means the cell finished; 1 means
the cell raised (an ``error`` event names the exception and the cell line); 2 means the replica could not be
set up (bad environment, image without TensorFlow, chief never seen).
"""

from __future__ import annotations

import builtins
import importlib.util
import json
import linecache
import os
import pickle
import re
import signal
import socket
import sys
import threading
import time
import traceback
import types
from pathlib import Path

try:
    from tfk8s_jupyter import (
        cell_report,
        replica_artifacts,
        replica_callbacks,
        replica_inputs,
        replica_keras,
        replica_metrics,
        replica_output,
        replica_runtime,
        replica_strategy,
        replica_workdir,
    )
    from tfk8s_jupyter import payload as payload_mod
    from tfk8s_jupyter.replica_env import (
        ReplicaEnv,
        SetupError,
        add_no_proxy,
        adopt_orphans,
        descendants,
        end_processes,
        read_env,
    )
    from tfk8s_jupyter.replica_keras import install_keras_alias, patch_keras3_multi_worker
    from tfk8s_jupyter.replica_metrics import DENSE_STEPS, CellMetrics, patch_summary_scalar
    from tfk8s_jupyter.replica_output import LineTrackingStdout, Reporter, log
    from tfk8s_jupyter.replica_runtime import Runtime
    from tfk8s_jupyter.replica_strategy import StrategyAdoption
    from tfk8s_jupyter.replica_workdir import (
        explain_collective_mismatch,
        explain_missing_file,
        explain_ps_checkpoint,
        prepare_workdir,
    )
except ImportError:  # standalone: the shipped modules sit beside this file
    import cell_report  # type: ignore[no-redef]
    import payload as payload_mod  # type: ignore[no-redef]
    import replica_artifacts  # type: ignore[no-redef]
    import replica_callbacks  # type: ignore[no-redef]
    import replica_inputs  # type: ignore[no-redef]
    import replica_keras  # type: ignore[no-redef]
    import replica_metrics  # type: ignore[no-redef]
    import replica_output  # type: ignore[no-redef]
    import replica_runtime  # type: ignore[no-redef]
    import replica_strategy  # type: ignore[no-redef]
    import replica_workdir  # type: ignore[no-redef]
    from replica_env import (  # type: ignore[no-redef]
        ReplicaEnv,
        SetupError,
        add_no_proxy,
        adopt_orphans,
        descendants,
        end_processes,
        read_env,
    )
    from replica_keras import install_keras_alias, patch_keras3_multi_worker  # type: ignore[no-redef]
    from replica_metrics import DENSE_STEPS, CellMetrics, patch_summary_scalar  # type: ignore[no-redef]
    from replica_output import LineTrackingStdout, Reporter, log  # type: ignore[no-redef]
    from replica_runtime import Runtime  # type: ignore[no-redef]
    from replica_strategy import StrategyAdoption  # type: ignore[no-redef]
    from replica_workdir import (  # type: ignore[no-redef]
        explain_collective_mismatch,
        explain_missing_file,
        explain_ps_checkpoint,
        prepare_workdir,
    )

CELL_FILENAME = "<tfk8s-cell>"
PRELUDE_FILENAME = "<tfk8s-prelude>"
MIN_TF_VERSION = (2, 16)
WATCHDOG_MISSES = 3
EXIT_CELL_ERROR = 1
EXIT_SETUP_ERROR = 2
# The runner's own files: a traceback's last frame in one of them is not worth naming in an error summary.
RUNNER_SOURCE_NAMES = frozenset(
    Path(f).name
    for f in (
        __file__,
        *(
            m.__file__
            for m in (
                cell_report,
                replica_artifacts,
                replica_callbacks,
                replica_inputs,
                replica_keras,
                replica_metrics,
                replica_output,
                replica_runtime,
                replica_strategy,
                replica_workdir,
            )
        ),
    )
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


# ----------------------------------------------------------------------------------------------------
# Serving replicas (ps and non-chief workers in parameter-server jobs)


def chief_address(renv: ReplicaEnv) -> tuple[str, int]:
    host, port = renv.cluster["chief"][0].rsplit(":", 1)
    return host.strip("[]"), int(port)


def inbound_connections(port: int) -> int:
    """How many established TCP connections this machine (or pod) has to local ``port`` (Linux
    ``/proc/net/tcp*``; 0 where it cannot tell)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        count += 1
        except (OSError, ValueError, IndexError):
            continue
    return count


def watch_chief(
    address: tuple[str, int],
    setup_timeout: float,
    exit_fn=os._exit,
    period: float = 1.0,
    misses_allowed: int = WATCHDOG_MISSES,
    own_port: int | None = None,
) -> None:
    """Exit 0 once the chief was reachable and then missed ``misses_allowed`` times in a row; exit 2 when
    it is never reachable within ``setup_timeout``. Runs forever otherwise (meant for a daemon thread).

    A peer connected to ``own_port`` (this replica's server) also counts as having seen the chief: the
    cluster only talks to a serving replica once the chief started it, and a short job's chief may come and
    go between two probes. Until the chief is seen, probes come four times as often."""
    started = time.monotonic()
    seen = False
    misses = 0
    while True:
        try:
            with socket.create_connection(address, timeout=min(1.0, period)):
                seen = True
                misses = 0
        except OSError:
            if not seen and own_port is not None and inbound_connections(own_port):
                seen = True
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
        time.sleep(period if seen else period / 4)


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
    own_port = int(renv.cluster[renv.role][renv.index].rsplit(":", 1)[1])
    thread = threading.Thread(
        target=watch_chief,
        args=(chief_address(renv), renv.setup_timeout),
        kwargs={"own_port": own_port},
        name="tfk8s-watchdog",
        daemon=True,
    )
    thread.start()
    log(f"{renv.name} serving on {renv.cluster[renv.role][renv.index]}")
    if os.environ.get("TFK8S_KEEP"):  # local backend: the server stays for the next run of the same shape
        from tfk8s_jupyter.backends.local_keep_process import keep_serving

        keep_serving(log)
    server.join()
    return 0


# ----------------------------------------------------------------------------------------------------
# The cell


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
    # no ``__file__`` (a notebook's namespace has none): TensorFlow's AutoGraph re-reads the source of a module
    # whose ``__file__`` is the function's file, and a cell's is no file on disk, so it would run every
    # ``tf.function`` of the cell unconverted (a tensor in an ``if`` or ``while`` would fail)
    module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = module
    namespace = module.__dict__
    if payload.prelude.strip():
        _register_source(PRELUDE_FILENAME, payload.prelude)
        exec(compile(payload.prelude, PRELUDE_FILENAME, "exec"), namespace)
    for name, blob in payload.values.items():
        namespace[name] = pickle.loads(blob)
    _register_source(CELL_FILENAME, payload.code)
    exec(compile(payload.code, CELL_FILENAME, "exec"), namespace)


def expose_report() -> None:
    """Make ``from tfk8s_jupyter import report`` work in the cell even where the package is not installed
    (an image running the shipped runner files): a ``tfk8s_jupyter`` module carrying only ``report``."""
    if importlib.util.find_spec("tfk8s_jupyter") is not None:
        return
    package = types.ModuleType("tfk8s_jupyter", "tfk8s-jupyter's in-replica face: report() only.")
    package.__path__ = []
    package.report = cell_report.report
    package.cell_report = cell_report
    sys.modules["tfk8s_jupyter"] = package
    sys.modules["tfk8s_jupyter.cell_report"] = cell_report


def keep_process_temp_dir(renv: ReplicaEnv) -> str | None:
    """Make ``multiprocessing.util.get_temp_dir()`` a job-scoped directory, the same across restarts.

    TensorFlow's ``multi_worker_with_ctl`` tutorial keeps its checkpoints in
    ``os.path.join(multiprocessing.util.get_temp_dir(), "ckpt")``, a fresh ``pymp-*`` directory per process
    that Python removes at exit: a restarted replica would never find them. Here it is
    ``$TFK8S_CHECKPOINT_DIR/tmp``, kept, and shared by the job's replicas (the tutorial's other workers write
    into ``workertemp_<id>`` beside the chief's, and all of them restore from the chief's).
    """
    if not renv.checkpoint_dir:
        return None
    if replica_artifacts.is_uri(renv.checkpoint_dir):
        log(
            f"the checkpoint dir {renv.checkpoint_dir} is a URI; multiprocessing's temp dir stays per process"
        )
        return None
    import multiprocessing.process

    path = Path(renv.checkpoint_dir) / "tmp"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log(f"cannot create {path} ({exc.strerror}); multiprocessing's temp dir stays per process")
        return None
    multiprocessing.process.current_process()._config["tempdir"] = str(path)
    return str(path)


def start_cell_metrics(tf, renv: ReplicaEnv, runtime, reporter: Reporter):
    """``tf.summary.scalar`` and ``report()`` as metric points on the reporting replica (returned; None
    elsewhere). ``tf.summary.scalar`` is patched on every replica: it writes even without TensorBoard."""
    expose_report()
    metrics = (
        CellMetrics(reporter, renv.metric_interval, dense=DENSE_STEPS).start() if renv.reporting else None
    )
    patch_summary_scalar(tf, metrics, runtime.in_fit, runtime.artifacts)
    if metrics is not None:
        cell_report._sink = metrics.add
        runtime.cell_metrics = metrics
    return metrics


def raised_in_cell(exc: BaseException) -> bool:
    """Whether the exception was raised by the cell's own code (its innermost frame is the cell's or the
    prelude's), not by TensorFlow or a library the cell called."""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and frames[-1].filename in (CELL_FILENAME, PRELUDE_FILENAME)


# Keras 3 writes parts of its error messages in bold (``\x1b[1m``): terminal codes, which a notebook's panel,
# the REST API and the job list would show as stray ``[1m`` text.
_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain_text(text: str) -> str:
    """``text`` without terminal control sequences (colours, bold)."""
    return _TERMINAL_CODES.sub("", text)


def summarize_exception(exc: BaseException) -> tuple[str, str, int | None]:
    """(message, short traceback, cell line) for an exception raised by the cell, in plain text."""
    explained = explain_ps_checkpoint(exc) or explain_collective_mismatch(exc) or explain_missing_file(exc)
    said = str(exc).strip()  # ``raise KeyboardInterrupt``: no words, so none after the name
    message = plain_text(explained or (f"{type(exc).__name__}: {said}" if said else type(exc).__name__))
    frames = traceback.extract_tb(exc.__traceback__)
    cell_frames = [f for f in frames if f.filename in (CELL_FILENAME, PRELUDE_FILENAME)]
    lines = []
    for f in cell_frames:
        where = "cell" if f.filename == CELL_FILENAME else "prelude"
        lines.append(f"{where} line {f.lineno}: {(f.line or '').strip()}")
    if frames and frames[-1] not in cell_frames and Path(frames[-1].filename).name not in RUNNER_SOURCE_NAMES:
        last = frames[-1]
        lines.append(f"in {Path(last.filename).name}:{last.lineno} ({last.name})")
    lines.append(message)
    cell_line = next((f.lineno for f in reversed(cell_frames) if f.filename == CELL_FILENAME), None)
    if cell_line is not None:
        message = f"{message} (cell line {cell_line})"
    return message[:4000], "\n".join(lines)[-4000:], cell_line


# ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run this replica per the runner contract; returns the process exit status. Processes the cell
    started and left running are ended with the run: nothing would stop them once the job has ended."""
    adopt_orphans()
    before = {pid for pid, _ in descendants(os.getpid())}
    try:
        return run_replica()
    finally:
        left = end_processes(p for p in descendants(os.getpid()) if p[0] not in before)
        if left:
            log(
                f"the cell left {len(left)} process(es) running ({', '.join(left[:4])}"
                + (f" and {len(left) - 4} more" if len(left) > 4 else "")
                + "), ended with the replica; stop what the cell starts before it ends"
            )


# SIGINTs this process received during the run: a KeyboardInterrupt then is the replica interrupted (as
# the kernel's interrupt reaches its process group), not one the cell's own code raised.
_interrupts: list[int] = []


def _on_interrupt(signum, frame) -> None:
    """Python's default SIGINT handling (a ``KeyboardInterrupt``), noting that a signal raised it."""
    _interrupts.append(signum)
    raise KeyboardInterrupt


def note_interrupts() -> None:
    """Take SIGINT with :func:`_on_interrupt` where Python would raise ``KeyboardInterrupt`` for it (the
    main thread, SIGINT not ignored nor handled by something else); forget earlier runs' interrupts."""
    _interrupts.clear()
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) in (
        signal.default_int_handler,
        _on_interrupt,
    ):
        signal.signal(signal.SIGINT, _on_interrupt)


def run_replica() -> int:
    """:func:`main` up to the end of the cell."""
    note_interrupts()
    out = LineTrackingStdout(sys.stdout)
    sys.stdout = out
    try:
        out.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):
        pass
    # the job's protocol key authenticates our lines; out of the environment before the cell can see it
    reporter = Reporter(out, enabled=False, key=replica_output.take_protocol_key())
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
        artifacts = None if renv.serves_only else replica_artifacts.open_artifacts(tf, renv)
    except SetupError as exc:
        log(str(exc))
        reporter.emit("error", always=True, message=str(exc), traceback="")
        return EXIT_SETUP_ERROR

    if renv.serves_only:
        return serve(tf, renv)

    phase = "setup"
    cell_metrics = None
    try:
        strategy = make_strategy(tf, renv)
        replica_runtime.tolerate_late_settings(tf)
        if os.environ.get("TFK8S_KEEP"):  # local kept replicas: every peer's strategy is set up again first
            from tfk8s_jupyter.backends.local_keep_process import strategy_barrier

            strategy_barrier(tf)
        if not renv.uses_tf_keras:
            import keras  # noqa: F401  (Keras 3 must exist before the patches)

            if renv.strategy == "multi_worker_mirrored":
                patch_keras3_multi_worker(tf)
        else:
            import tf_keras  # noqa: F401

            if renv.strategy == "parameter_server":
                install_keras_alias()
        runtime = Runtime(tf, renv, strategy, reporter)
        runtime.artifacts = artifacts
        runtime.patch_fit()
        runtime.patch_clear_session()
        replica_keras.defer_iterator_teardown()  # fit returns right after its last epoch
        runtime.set_default_strategy()
        adoption = StrategyAdoption(tf, renv, strategy, runtime.set_default_strategy)
        runtime.original_set_strategy = adoption.original_set_strategy
        adoption.install()
        cell_metrics = start_cell_metrics(tf, renv, runtime, reporter)
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
            resumed_from=(artifacts.resumed or {}).get("from"),
        )
        prepare_workdir(renv, payload)
        keep_process_temp_dir(renv)
        if os.environ.get("TFK8S_KEEP"):  # local kept replicas: what the cell leaves is measured from here
            from tfk8s_jupyter.backends.local_keep_process import before_cell

            before_cell()
        phase = "cell"
        replica_output.install_notebook_builtins()
        run_cell(payload)
    except BaseException as exc:
        replica_metrics.flush_summary_writers()
        if cell_metrics is not None:
            cell_metrics.close()
        if isinstance(exc, SystemExit) and exc.code in (None, 0):
            pass
        else:
            if isinstance(exc, KeyboardInterrupt) and (_interrupts or phase == "setup"):
                message, summary, line = "KeyboardInterrupt: the replica was interrupted", "", None
            elif phase == "setup":
                message, summary, line = plain_text(f"{type(exc).__name__}: {exc}"), "", None
            else:
                message, summary, line = summarize_exception(exc)
            traceback.print_exc()
            error = {
                "message": message,
                "traceback": summary,
                "line": line,
                "phase": phase,
                "error_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
                "raised_in_cell": raised_in_cell(exc),
            }
            reporter.emit("error", always=True, **error)
            if phase == "cell":
                artifacts.finish(None, "", succeeded=False)
                # local kept replicas: whether the error left this process fit (the fits begun: a fit's
                # first step traced before any batch ended keeps it)
                if os.environ.get("TFK8S_KEEP"):
                    from tfk8s_jupyter.backends.local_keep_process import note_failure

                    note_failure(exc, error, fits=runtime.fit_count)
            sys.stdout.flush()
            return EXIT_CELL_ERROR if phase == "cell" else EXIT_SETUP_ERROR
    replica_metrics.flush_summary_writers()
    if cell_metrics is not None:
        cell_metrics.close()
    flavour = "tf_keras" if renv.uses_tf_keras else "keras3"
    index = artifacts.finish(runtime.trained_model, flavour, succeeded=True, reporter=reporter)
    reporter.emit(
        "end",
        status="succeeded",
        seconds=round(time.time() - started, 3),
        model=runtime.last_model,
        artifacts=index,
    )
    sys.stdout.flush()
    return 0


def keep_after(code: int) -> int:
    """Local backend: a replica of a job that keeps its replicas (``TFK8S_KEEP``) stays for the next run
    of the same shape (``backends/local_keep_process.py``) after a success, or after an error of the cell
    that left the process fit to run again; returns the exit code to leave with."""
    if code not in (0, EXIT_CELL_ERROR) or not os.environ.get("TFK8S_KEEP"):
        return code
    import gc

    from tfk8s_jupyter.backends.local_keep_process import after_run

    def kept_run() -> int:
        # The garbage collector's full collections during a kept run skip what the process held before it
        # (TensorFlow, Keras, the runner: ~0.3 M objects, measured 30-250 ms per full collection, growing
        # run after run, several of them before the first batch); the reset after the run walks all again.
        gc.freeze()
        try:
            return main()
        finally:
            gc.unfreeze()

    return after_run(code, kept_run)


if __name__ == "__main__":
    code = keep_after(main())
    sys.stdout.flush()
    sys.stderr.flush()
    # TensorFlow's gRPC threads can keep a finished process alive; leave now.
    os._exit(code)
