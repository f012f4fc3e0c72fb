"""Process-wide settings a cell may change that outlive it in a kept replica: Keras's dtype policy
(``mixed_float16``), floatx, epsilon, image data format and registry of custom objects (Keras 3 and
tf_keras), TensorFlow's eager functions, XLA and grappler options, op determinism, tf.data debug mode, the
global random generator, soft device placement, check numerics, TF32, NumPy behaviour of tensors, async
execution, traceback filtering, device placement logging, AutoGraph's verbosity and the TensorFlow 1
switches (tensor equality, v2 shapes, control flow v2, resource variables), numpy's error and print
options, Python's warning filters, logging (handlers, levels, ``logging.disable``,
``logging.captureWarnings``), ``sys.path``, exception hooks, umask, the default socket timeout, the garbage
collector, the switch interval, recursion limit, signal handlers and real-time timer, and the
``tensorflow`` logger's level.

:func:`snapshot` records them once per process, right before its first cell runs (what a cold start of any
run has); :func:`restore` puts them back between runs (:func:`.local_keep_process.reset_process`), so the
next run starts as a cold replica would, whatever the previous cell set. A cell that set
``mixed_float16`` would otherwise make every later parameter-server run on the same processes fail ("Mixed
precision is not supported with ParameterServerStrategyV2") and every all-reduce run train in float16.

Imported only in a replica process; every module is looked up in ``sys.modules`` (none is imported here).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
import threading
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
    registry = sys.modules.get("keras.src.saving.object_registration")
    if registry is not None:
        found.append(_registry("keras.saving.get_custom_objects", registry, ""))
    return found


def _registry(name: str, module, prefix: str) -> Setting:
    """Keras's registry of custom objects (``register_keras_serializable``, ``get_custom_objects()``): a
    class the cell registered would otherwise still load in the next run (a cold one says it is unknown)
    and keep the cell's namespace, its model and variables, alive through its methods."""
    tables = [
        getattr(module, f"{prefix}GLOBAL_CUSTOM_OBJECTS"),
        getattr(module, f"{prefix}GLOBAL_CUSTOM_NAMES"),
    ]

    def put(value) -> None:
        for table, saved in zip(tables, value, strict=True):
            table.clear()
            table.update(saved)

    return name, lambda: tuple(dict(t) for t in tables), put


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
    registry = sys.modules.get("tf_keras.src.saving.object_registration")
    if registry is not None:
        found.append(_registry("tf_keras.saving.get_custom_objects", registry, "_"))
    return found


def _tensorflow(tf) -> list[Setting]:
    from tensorflow.python.autograph.utils import ag_logging
    from tensorflow.python.data.ops import debug_mode
    from tensorflow.python.debug.lib import check_numerics_callback
    from tensorflow.python.eager import context
    from tensorflow.python.framework import config as framework_config
    from tensorflow.python.ops import stateful_random_ops

    def set_debug_mode(value) -> None:
        debug_mode.DEBUG_MODE = value

    def set_generator(value) -> None:
        stateful_random_ops.global_generator = value

    def set_ag(value) -> None:
        ag_logging.verbosity_level, ag_logging.echo_log_to_stdout = value

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
        (
            "tf.config.set_soft_device_placement",
            tf.config.get_soft_device_placement,
            tf.config.set_soft_device_placement,
        ),
        # the op callback that makes any NaN or Inf an error, in every later run otherwise
        (
            "tf.debugging.enable_check_numerics",
            *_flag(
                lambda: getattr(check_numerics_callback._state, "check_numerics_callback", None) is not None,
                tf.debugging.enable_check_numerics,
                tf.debugging.disable_check_numerics,
            ),
        ),
        (
            "tf.config.experimental.enable_tensor_float_32_execution",
            tf.config.experimental.tensor_float_32_execution_enabled,
            tf.config.experimental.enable_tensor_float_32_execution,
        ),
        ("tf.experimental.numpy.experimental_enable_numpy_behavior", _numpy_behavior, _set_numpy_behavior),
        (
            "tf.debugging.set_log_device_placement",
            lambda: context.context().log_device_placement,
            tf.debugging.set_log_device_placement,
        ),
        (
            "tf.config.experimental.set_synchronous_execution",
            tf.config.experimental.get_synchronous_execution,
            tf.config.experimental.set_synchronous_execution,
        ),
        (
            "tf.debugging.disable_traceback_filtering",
            *_flag(
                tf.debugging.is_traceback_filtering_enabled,
                tf.debugging.enable_traceback_filtering,
                tf.debugging.disable_traceback_filtering,
            ),
        ),
        (
            "tf.autograph.set_verbosity",
            lambda: (ag_logging.verbosity_level, ag_logging.echo_log_to_stdout),
            set_ag,
        ),
        # tf.random.get_global_generator(): made afresh (unseeded) by the next run, as at a cold start
        ("tf.random global generator", lambda: stateful_random_ops.global_generator, set_generator),
        *(_switch(module, path) for module, path in TF1_SWITCHES if module in sys.modules),
    ]


# TensorFlow 1 switches (tf.compat.v1.disable_tensor_equality, disable_v2_tensorshape, disable_control_flow_v2,
# disable_resource_variables): module or class attributes, put back as they were
TF1_SWITCHES = (
    ("tensorflow.python.framework.tensor", "Tensor._USE_EQUALITY"),
    ("tensorflow.python.framework.tensor_shape", "_TENSORSHAPE_V2_OVERRIDE"),
    ("tensorflow.python.ops.control_flow_util", "ENABLE_CONTROL_FLOW_V2"),
    ("tensorflow.python.ops.resource_variables_toggle", "_DEFAULT_USE_RESOURCE"),
)


def _switch(module_name: str, path: str) -> Setting:
    owner_path, _, attr = path.rpartition(".")

    def owner():
        obj = sys.modules[module_name]
        for part in owner_path.split(".") if owner_path else ():
            obj = getattr(obj, part)
        return obj

    return (
        f"{module_name}.{path}",
        lambda: getattr(owner(), attr),
        lambda value: setattr(owner(), attr, value),
    )


# what tf.experimental.numpy.experimental_enable_numpy_behavior() sets on tf.Tensor (np_math_ops)
NUMPY_METHODS = (
    "T", "ndim", "size", "__pos__", "tolist", "transpose", "flatten", "reshape", "ravel", "clip", "astype",
    "__round__", "max", "mean", "min", "data",
)  # fmt: skip


def _numpy_behavior() -> tuple:
    """NumPy behaviour of tensors: type promotion, slicing, float32 for Python floats, NumPy methods."""
    from tensorflow.python.framework import ops, tensor
    from tensorflow.python.ops.numpy_ops import np_dtypes

    methods = tuple(vars(tensor.Tensor).get(name) for name in NUMPY_METHODS)
    return ops.get_dtype_conversion_mode(), ops._numpy_style_slicing, np_dtypes.is_prefer_float32(), methods


def _set_numpy_behavior(value) -> None:
    from tensorflow.python.framework import ops, tensor
    from tensorflow.python.ops.numpy_ops import np_dtypes

    mode, slicing, prefer_float32, methods = value
    ops._dtype_conversion_mode = mode
    ops._numpy_style_slicing = slicing
    np_dtypes.set_prefer_float32(prefer_float32)
    for name, method in zip(NUMPY_METHODS, methods, strict=True):
        if method is not None:
            setattr(tensor.Tensor, name, method)
        elif name in vars(tensor.Tensor):
            delattr(tensor.Tensor, name)


def _python() -> list[Setting]:

    found: list[Setting] = [
        ("warnings.filters", lambda: list(warnings.filters), _set_warning_filters),
        # handlers a cell added (logging.basicConfig, logger.addHandler): each run would add its own again,
        # and the next run's basicConfig would do nothing
        ("logging loggers", _logging_state, _set_logging_state),
        ("logging.disable", lambda: logging.root.manager.disable, logging.disable),
        # logging.captureWarnings(True): warnings go to the py.warnings logger instead of stderr
        ("warnings.showwarning", _showwarning, _set_showwarning),
        ("logging tensorflow level", logging.getLogger("tensorflow").getEffectiveLevel, _set_tf_log_level),
        ("sys.path", _sys_path, _set_sys_path),
        ("sys.excepthook", lambda: sys.excepthook, lambda hook: setattr(sys, "excepthook", hook)),
        (
            "threading.excepthook",
            lambda: threading.excepthook,
            lambda hook: setattr(threading, "excepthook", hook),
        ),
        ("os.umask", _umask, os.umask),
        ("gc.disable", *_flag(gc.isenabled, gc.enable, gc.disable)),
        ("gc.set_threshold", gc.get_threshold, lambda value: gc.set_threshold(*value)),
        ("sys.setswitchinterval", sys.getswitchinterval, sys.setswitchinterval),
        ("socket.setdefaulttimeout", socket.getdefaulttimeout, socket.setdefaulttimeout),
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


def _showwarning() -> tuple:

    return warnings.showwarning, logging._warnings_showwarning


def _set_showwarning(value) -> None:

    warnings.showwarning, logging._warnings_showwarning = value


def _set_warning_filters(value) -> None:
    warnings.filters[:] = value
    mutated = getattr(warnings, "_filters_mutated", None)  # the module's cache of filter decisions
    if mutated is not None:
        mutated()


def _loggers() -> dict:

    found = {
        name: lg for name, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger)
    }
    return {"": logging.root, **found}


def _logging_state() -> dict:
    return {
        name: (lg.level, tuple(lg.handlers), lg.propagate, lg.disabled) for name, lg in _loggers().items()
    }


def _holds_file(handler) -> bool:
    """A handler writing into a file: left in place, so the file it holds open makes the process not kept
    (:mod:`.local_keep_hygiene`)."""

    name = getattr(getattr(handler, "stream", None), "name", None)
    return isinstance(handler, logging.FileHandler) or (isinstance(name, str) and not name.startswith("<"))


def _set_logging_state(value) -> None:
    """Loggers as recorded; a logger made since gets no level, propagates, and keeps only its null handlers
    (a library's) and the handlers holding a file."""

    for name, lg in _loggers().items():
        level, handlers, propagate, disabled = value.get(name, (logging.NOTSET, (), True, False))
        kept = [
            h
            for h in lg.handlers
            if h not in handlers and (isinstance(h, logging.NullHandler) or _holds_file(h))
        ]
        lg.handlers[:] = [*handlers, *kept]
        lg.setLevel(level)
        lg.propagate, lg.disabled = propagate, disabled


def _sys_path() -> list[str]:
    """``sys.path`` without the run's work dir in front (each run puts its own there, see
    :func:`.local_keep_process.become`)."""

    path = list(sys.path)
    if path and os.path.realpath(path[0]) == os.path.realpath(os.getcwd()):
        del path[0]
    return path


def _set_sys_path(value) -> None:
    sys.path[:] = value
    sys.path_importer_cache.clear()


def _umask() -> int:

    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _set_real_timer(value) -> None:

    signal.setitimer(signal.ITIMER_REAL, *value)


def _handler_of(sig):

    return lambda: signal.getsignal(sig)


def _set_handler(sig):

    def put(handler) -> None:
        if handler is not None:  # None: a handler not set from Python, which cannot be put back from it
            signal.signal(sig, handler)

    return put


def _set_tf_log_level(value) -> None:

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


LOGGING = ("logging loggers", "logging.disable", "warnings.showwarning")


def restore(names: tuple[str, ...] | None = None) -> list[str]:
    """Put back every recorded setting (or those ``names``) the previous cell changed; the names of those
    changed."""
    if _saved is None:
        return []
    changed = []
    for name, get, put in settings():
        if name not in _saved or (names is not None and name not in names):
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
