"""Which Keras a replica's cell runs on, and the patches that make it train under the job's strategy.

* Parameter-server jobs run the cell on tf_keras: :func:`install_keras_alias` makes ``import keras`` (and
  ``from keras.layers import ...``) give tf_keras; a Keras-3-only API or module raises
  :class:`KerasAPIUnavailable` / :class:`KerasModuleUnavailable`, naming the API and pointing to all-reduce.
* All-reduce jobs on Keras 3: :func:`patch_keras3_multi_worker` fixes ``fit`` under
  MultiWorkerMirroredStrategy (keras-team/keras#20585).
* Both: :func:`patch_clear_session` re-applies the job's default strategy after ``clear_session()``, which
  drops it with the graph; :func:`defer_iterator_teardown` tears tf.data iterators down off the cell's
  thread (:class:`IteratorReaper`), so ``fit`` returns right after its last epoch.

Part of the runner (see ``runner.py``): TensorFlow and Keras are imported only inside these functions, and
``tf`` is passed in. It travels with the runner in the job's ConfigMap.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
import time
import types
from collections.abc import Callable

try:
    from tfk8s_jupyter.replica_output import log
except ImportError:  # standalone: the shipped modules sit beside this file
    from replica_output import log  # type: ignore[no-redef]

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


def patch_keras3_multi_worker(tf) -> None:
    """Keras 3 ``fit`` under MultiWorkerMirroredStrategy (keras-team/keras#20585)."""
    from keras.src.backend.tensorflow import trainer as tft

    if getattr(tft, "_tfk8s_patched", False):
        return
    original_reduce = tft.reduce_per_replica

    def mean(value, strategy):
        """The mean over every worker's replicas (with one device per worker a replica's value is a plain
        tensor, not a PerReplica: it is reduced too). A value that has no device, as a metric's variable a
        ``train_step`` returns (read in sync), cannot be reduced and is one value already: as is, as Keras
        does on one worker."""
        try:
            return strategy.reduce("MEAN", value, axis=None)
        except ValueError as exc:
            if tft._is_per_replica_instance(value) or "device set" not in str(exc):
                raise
            return value

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tft._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(lambda v: mean(v, strategy), values)
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


def clear_session_modules(uses_tf_keras: bool) -> list[str]:
    """The modules whose ``clear_session`` :func:`patch_clear_session` wraps (imported there when installed;
    a warm pool process imports them ahead, ``backends/local_pool_preload.py``)."""
    names = ["tf_keras.backend", "tf_keras.utils", "tf_keras.src.backend"]
    if not uses_tf_keras:
        names += [
            "keras.backend",
            "keras.utils",
            "keras.src.backend.common.global_state",
            "keras.src.utils",
            "keras._tf_keras.keras.backend",
            "keras._tf_keras.keras.utils",
        ]
    return names


def patch_clear_session(uses_tf_keras: bool, reapply_strategy: Callable[[], None]) -> None:
    """Make every public ``clear_session`` call ``reapply_strategy()`` after resetting the graph.

    ``clear_session()`` (common at the top of a cell) drops the default strategy with the graph: training
    would then run locally on each replica and look like success. tf_keras is always patched, Keras 3
    unless ``uses_tf_keras``.
    """
    originals = []
    modules = []
    for name in clear_session_modules(uses_tf_keras):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            continue
    for m in modules:
        fn = getattr(m, "clear_session", None)
        if fn is not None and not getattr(fn, "_tfk8s", False) and fn not in originals:
            originals.append(fn)

    def wrap(original):
        def clear_session(*args, **kwargs):
            result = original(*args, **kwargs)
            try:
                reapply_strategy()
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
        if not name.startswith(("keras", "tf_keras", "tensorflow")) or not isinstance(m, types.ModuleType):
            continue
        fn = vars(m).get("clear_session")
        if fn is not None and id(fn) in wrapped:
            try:
                m.clear_session = wrapped[id(fn)]
            except (AttributeError, TypeError):
                pass


# tf.data iterators torn down off the cell's thread


class IteratorReaper:
    """Holds every tf.data iterator the replica creates and drops it, once nothing else refers to it, in
    its own daemon thread (``tfk8s-iterator-reaper``).

    Why: tearing a tf.data iterator down (``~IteratorResource``) joins the iterator's autotuning thread,
    which sleeps between optimization rounds for up to 60 s (the period doubles while the iterator lives)
    and is often not woken by the teardown. Under a distribution strategy every ``fit`` iterates through a
    ``MultiDeviceIterator`` whose per-device datasets autotune whatever the cell's dataset options say, so
    ``fit`` returned 5-100 s after its last epoch in about half the jobs, its last reference to the
    iterator dropped in the cell's thread. Here that wait happens in the reaper (TensorFlow releases the
    GIL while it deletes a tensor handle), and the process exits without waiting for it.
    """

    def __init__(self, period: float = 0.5) -> None:
        self.period = period
        self.released = 0
        self._held: list = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def keep(self, iterator) -> None:
        with self._lock:
            self._held.append(iterator)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="tfk8s-iterator-reaper", daemon=True)
                self._thread.start()

    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def release_unreferenced(self) -> int:
        """Drop (here, in the calling thread) the iterators only this reaper refers to; returns how many."""
        with self._lock:
            held = self._held
            # 2 = the list's reference + getrefcount's argument: nobody else can reach the iterator.
            free = [i for i in range(len(held)) if sys.getrefcount(held[i]) <= 2]
            done = [held[i] for i in free]
            for i in reversed(free):
                del held[i]
        count = len(done)
        done.clear()  # the iterators' teardown (and its wait) happens here, outside the lock
        self.released += count
        return count

    def _loop(self) -> None:
        while True:
            time.sleep(self.period)
            try:
                self.release_unreferenced()
            except Exception as exc:  # never let a teardown error end the reaper
                log(f"a tf.data iterator's teardown failed: {type(exc).__name__}: {exc}")


def defer_iterator_teardown() -> IteratorReaper | None:
    """Make every tf.data iterator (``OwnedIterator``, which strategies' distributed iterators are made
    of) be torn down by an :class:`IteratorReaper` instead of the thread that drops it last. Idempotent;
    returns the reaper (None when this TensorFlow has no ``OwnedIterator``)."""
    try:
        from tensorflow.python.data.ops import iterator_ops
    except ImportError:
        return None
    cls = getattr(iterator_ops, "OwnedIterator", None)
    if cls is None:
        return None
    reaper = getattr(cls, "_tfk8s_reaper", None)
    if reaper is not None:
        return reaper
    reaper = IteratorReaper()
    original_init = cls.__init__

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        reaper.keep(self)

    __init__.__wrapped__ = original_init
    __init__.__doc__ = original_init.__doc__
    cls.__init__ = __init__
    cls._tfk8s_reaper = reaper
    return reaper
