"""Process-wide settings a cell may change that outlive it in a kept replica: Keras's dtype policy
(``mixed_float16``), floatx, epsilon and image data format (Keras 3 and tf_keras), TensorFlow's eager
functions, XLA and grappler options, op determinism, tf.data debug mode and the global random generator,
numpy's error and print options, Python's warning filters, recursion limit, signal handlers and real-time
timer, and the ``tensorflow`` logger's level.

:func:`snapshot` records them once per process, right before its first cell runs (what a cold start of any
run has); :func:`restore` puts them back between runs (:func:`.local_keep_process.reset_process`), so the
next run starts as a cold replica would, whatever the previous cell set. A cell that set
``mixed_float16`` would otherwise make every later parameter-server run on the same processes fail ("Mixed
precision is not supported with ParameterServerStrategyV2") and every all-reduce run train in float16.

Imported only in a replica process; every module is looked up in ``sys.modules`` (none is imported here).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

Setting = tuple[str, Callable[[], object], Callable[[object], None]]

_saved: dict[str, object] | None = None


def _flag(is_on: Callable[[], bool], on: Callable[[], None], off: Callable[[], None]):
    return is_on, lambda value: on() if value else off()


def _keras3(keras) -> list[Setting]:
    cfg = keras.config
    found: list[Setting] = [
        ("keras.config.dtype_policy", cfg.dtype_policy, cfg.set_dtype_policy),
        ("keras.config.floatx", cfg.floatx, cfg.set_floatx),
        ("keras.config.epsilon", cfg.epsilon, cfg.set_epsilon),
        ("keras.config.image_data_format", cfg.image_data_format, cfg.set_image_data_format),
    ]
    for name in ("interactive_logging", "traceback_filtering", "flash_attention"):
        parts = [getattr(cfg, f, None) for f in (f"is_{name}_enabled", f"enable_{name}", f"disable_{name}")]
        if all(parts):
            found.append((f"keras.config.{name}", *_flag(*parts)))
    for name in ("max_epochs", "max_steps_per_epoch"):
        if hasattr(cfg, name) and hasattr(cfg, f"set_{name}"):
            found.append((f"keras.config.{name}", getattr(cfg, name), getattr(cfg, f"set_{name}")))
    return found


def _tf_keras(tfk) -> list[Setting]:
    backend, mp = tfk.backend, tfk.mixed_precision
    found: list[Setting] = [
        ("tf_keras.mixed_precision.global_policy", mp.global_policy, mp.set_global_policy),
        ("tf_keras.backend.floatx", backend.floatx, backend.set_floatx),
        ("tf_keras.backend.epsilon", backend.epsilon, backend.set_epsilon),
        ("tf_keras.backend.image_data_format", backend.image_data_format, backend.set_image_data_format),
    ]
    utils = tfk.utils
    names = ("is_interactive_logging_enabled", "enable_interactive_logging", "disable_interactive_logging")
    parts = [getattr(utils, f, None) for f in names]
    if all(parts):
        found.append(("tf_keras.utils.interactive_logging", *_flag(*parts)))
    return found


def _tensorflow(tf) -> list[Setting]:
    from tensorflow.python.data.ops import debug_mode
    from tensorflow.python.framework import config as framework_config
    from tensorflow.python.ops import stateful_random_ops

    def set_debug_mode(value) -> None:
        debug_mode.DEBUG_MODE = value

    def set_generator(value) -> None:
        stateful_random_ops.global_generator = value

    return [
        ("tf.config.run_functions_eagerly", tf.config.functions_run_eagerly, tf.config.run_functions_eagerly),
        ("tf.config.optimizer.jit", tf.config.optimizer.get_jit, tf.config.optimizer.set_jit),
        (
            "tf.config.optimizer.experimental_options",
            tf.config.optimizer.get_experimental_options,
            tf.config.optimizer.set_experimental_options,
        ),
        (
            "tf.config.experimental.enable_op_determinism",
            *_flag(
                framework_config.is_op_determinism_enabled,
                framework_config.enable_op_determinism,
                framework_config.disable_op_determinism,
            ),
        ),
        ("tf.data.experimental.enable_debug_mode", lambda: debug_mode.DEBUG_MODE, set_debug_mode),
        # tf.random.get_global_generator(): made afresh (unseeded) by the next run, as at a cold start
        ("tf.random global generator", lambda: stateful_random_ops.global_generator, set_generator),
    ]


def _python() -> list[Setting]:
    import logging
    import signal

    found: list[Setting] = [
        ("warnings.filters", lambda: list(warnings.filters), _set_warning_filters),
        ("logging tensorflow level", logging.getLogger("tensorflow").getEffectiveLevel, _set_tf_log_level),
        ("sys.setrecursionlimit", sys.getrecursionlimit, sys.setrecursionlimit),
        # a timer the cell armed would end the kept process (SIGALRM) while it waits for the next run
        ("signal.setitimer", lambda: signal.getitimer(signal.ITIMER_REAL), _set_real_timer),
    ]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM):
        found.append((f"signal.signal({sig.name})", _handler_of(sig), _set_handler(sig)))
    np = sys.modules.get("numpy")
    if np is not None:
        found += [
            ("numpy.seterr", np.geterr, lambda value: np.seterr(**value)),
            ("numpy.set_printoptions", np.get_printoptions, lambda value: np.set_printoptions(**value)),
        ]
    return found


def _set_warning_filters(value) -> None:
    warnings.filters[:] = value
    mutated = getattr(warnings, "_filters_mutated", None)  # the module's cache of filter decisions
    if mutated is not None:
        mutated()


def _set_real_timer(value) -> None:
    import signal

    signal.setitimer(signal.ITIMER_REAL, *value)


def _handler_of(sig):
    import signal

    return lambda: signal.getsignal(sig)


def _set_handler(sig):
    import signal

    def put(handler) -> None:
        if handler is not None:  # None: a handler not set from Python, which cannot be put back from it
            signal.signal(sig, handler)

    return put


def _set_tf_log_level(value) -> None:
    import logging

    logging.getLogger("tensorflow").setLevel(value)


def settings() -> list[Setting]:
    """The settings of the modules this process has imported."""
    found = _python()
    keras, tfk, tf = (sys.modules.get(n) for n in ("keras", "tf_keras", "tensorflow"))
    for module, table in ((keras, _keras3), (tfk, _tf_keras), (tf, _tensorflow)):
        if module is None:
            continue
        try:
            found += table(module)
        except (AttributeError, ImportError):  # another version's API: what it lacks is not reset
            pass
    return found


def snapshot() -> None:
    """Record the settings before this process's first cell (later calls keep that first record)."""
    global _saved
    if _saved is not None:
        return
    _saved = {}
    for name, get, _set in settings():
        try:
            _saved[name] = get()
        except Exception:  # noqa: BLE001 (a setting this version cannot read is left alone)
            pass


def restore() -> list[str]:
    """Put back every recorded setting the previous cell changed; the names of those changed."""
    if _saved is None:
        return []
    changed = []
    for name, get, put in settings():
        if name not in _saved:
            continue
        try:
            if _same(get(), _saved[name]):
                continue
            put(_saved[name])
            changed.append(name)
        except Exception:  # noqa: BLE001 (one setting that cannot be put back does not stop the others)
            pass
    return changed


def _same(a, b) -> bool:
    """Equal values; objects without their own ``==`` (dtype policies, made anew on each read) by repr."""
    if type(a) is not type(b):
        return False
    try:
        return repr(a) == repr(b) if type(a).__eq__ is object.__eq__ else bool(a == b)
    except Exception:  # noqa: BLE001 (an object that cannot be compared: put it back)
        return False
