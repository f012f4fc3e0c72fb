"""``fit`` / ``evaluate`` inputs as people pass them, made trainable with parameter servers.

tf_keras under ParameterServerStrategy trains only on a dataset the workers repeat forever, with explicit
steps: numpy arrays end in ``When using a DatasetCreator, steps_per_epoch ... must be provided``, a finite
dataset runs dry. :func:`adapt_fit_arguments` rewrites the arguments of one ``fit`` call the way one
machine would read them:

* arrays and tensors (``x``, ``y``, ``sample_weight``; ``class_weight`` folded into per-sample weights;
  ``validation_split`` taking the last fraction as Keras does; ``shuffle`` every epoch) become a repeated
  ``tf.data`` dataset batched by ``batch_size`` (default 32) with ``steps_per_epoch`` = ceil(samples /
  batch size), so an epoch covers the data once;
* a finite dataset without ``steps_per_epoch`` is repeated, with its cardinality as the steps;
* ``validation_data`` (arrays or a finite dataset) alike, with ``validation_steps``.

Where the size cannot be known (an infinite or unknown-cardinality dataset without ``steps_per_epoch``),
:class:`InputSizeUnknown` asks for it in one sentence. Inputs that are Python objects of the chief's process
(a ``keras.utils.Sequence``, a generator), which the workers cannot read, are refused in one sentence
(:class:`InputNotReadable`) instead of tf_keras's list of supported types; so is a dataset that calls Python
(``Dataset.from_generator``, ``tf.py_function``, ``tf.numpy_function``), on which the workers would crash. All-reduce jobs never come here.

Part of the runner (see ``runner.py``): ``tf`` is passed in. It travels with the runner in the job's
ConfigMap.
"""

from __future__ import annotations

import math

DEFAULT_BATCH_SIZE = 32
SHUFFLE_BUFFER = 100_000


class InputSizeUnknown(ValueError):
    """A dataset of unknown size without the steps that parameter-server training needs."""


class InputNotReadable(TypeError):
    """An input the parameter-server workers cannot read: a Python object of the chief's process."""


def _python_batches(value) -> str | None:
    """What ``value`` is when it yields batches from Python code (a Keras ``Sequence``/``PyDataset``, a
    generator or iterator), else None."""
    import types

    if isinstance(value, types.GeneratorType):
        return "a Python generator"
    for cls in type(value).__mro__:
        if cls.__name__ in ("Sequence", "PyDataset") and "keras" in cls.__module__:
            return f"a keras.utils.{cls.__name__} ({type(value).__name__})"
    return None


def refuse_python_batches(value, what: str) -> None:
    """Raise :class:`InputNotReadable` when ``value`` yields its batches from Python code."""
    kind = _python_batches(value)
    if kind is None:
        return
    raise InputNotReadable(
        f"{what} got {kind}, which parameter-server workers cannot read (they run the input pipeline "
        "as a tf.data graph, without the notebook's Python objects); pass numpy arrays or a tf.data "
        "dataset (tf.data.Dataset.from_tensor_slices(...)), or train with all-reduce (workers only: ps=0, "
        "strategy='multi_worker_mirrored'), which reads it."
    )


# Dataset ops that call back into the Python process that built the dataset: the chief's, which a worker is not.
PYTHON_DATASET_OPS = {
    "GeneratorDataset": "Dataset.from_generator",
    "PyFunc": "tf.numpy_function",
    "PyFuncStateless": "tf.numpy_function",
    "EagerPyFunc": "tf.py_function",
}


def _python_ops(dataset) -> list[str]:
    """The Python-calling functions in ``dataset``'s pipeline (see :data:`PYTHON_DATASET_OPS`), by name;
    empty when there are none. Reads the ops of each stage's traced function (``map``, ``flat_map``,
    ``interleave``, ...) and the functions nested in them, never the pipeline's serialized graph, which holds
    every array a ``from_tensor_slices`` was given (a copy of the training data, seconds and GBs)."""
    ops: set[str] = set()
    seen: set[int] = set()
    stack = [dataset]
    while stack:
        stage = stack.pop()
        if id(stage) in seen:
            continue
        seen.add(id(stage))
        for value in vars(stage).values():
            graph = getattr(getattr(value, "function", None), "graph", None)
            if graph is None:
                continue
            ops |= {op.type for op in graph.get_operations()}
            for nested in getattr(graph, "_functions", {}).values():
                definition = getattr(nested, "definition", None) or getattr(nested, "cached_definition", None)
                if definition is not None:
                    ops |= {node.op for node in definition.node_def}
        try:
            stack.extend(stage._inputs())
        except Exception:  # noqa: BLE001 (a stage whose inputs cannot be read is left to tf_keras)
            continue
    if "GeneratorDataset" in ops:  # from_generator calls the generator through a numpy_function of its own
        ops -= {"PyFunc", "PyFuncStateless"}
    return sorted({PYTHON_DATASET_OPS[op] for op in ops if op in PYTHON_DATASET_OPS})


def refuse_python_pipeline(tf, value, what: str) -> None:
    """Raise :class:`InputNotReadable` when ``value`` is a dataset that calls Python functions: the workers
    would run its graph without them (they crash and restart, and training never ends)."""
    if not _is_dataset(tf, value):
        return
    names = _python_ops(value)
    if not names:
        return
    raise InputNotReadable(
        f"{what} got a tf.data dataset that calls Python code ({' and '.join(names)}), which parameter-server "
        "workers cannot run (the Python functions live in the chief's process); build the dataset from "
        "tensors (tf.data.Dataset.from_tensor_slices(...), map with TensorFlow ops), or train with "
        "all-reduce (workers only: ps=0, strategy='multi_worker_mirrored'), which runs it."
    )


def _is_arrays(tf, value) -> bool:
    if value is None:
        return False
    leaves = tf.nest.flatten(value)
    return bool(leaves) and all(
        hasattr(leaf, "shape") and len(getattr(leaf, "shape", ())) > 0 for leaf in leaves
    )


def _num_samples(tf, value) -> int:
    return int(tf.nest.flatten(value)[0].shape[0])


def _slice(tf, value, start, stop):
    return None if value is None else tf.nest.map_structure(lambda a: a[start:stop], value)


def _class_weights(value, y, class_weight: dict):
    import numpy as np

    labels = np.asarray(y)
    if labels.ndim > 1 and labels.shape[-1] > 1:
        classes = labels.argmax(axis=-1)
    else:
        classes = labels.reshape(len(labels), -1)[:, 0].astype("int64")
    weights = np.array([float(class_weight.get(int(c), 1.0)) for c in classes], dtype="float32")
    if value is not None:
        weights = weights * np.asarray(value, dtype="float32").reshape(len(weights))
    return weights


def _dataset_of(tf, x, y, sample_weight, batch_size: int, shuffle: bool):
    parts = (x,) if y is None else ((x, y) if sample_weight is None else (x, y, sample_weight))
    ds = tf.data.Dataset.from_tensor_slices(parts)
    n = _num_samples(tf, x)
    if shuffle:
        ds = ds.shuffle(min(n, SHUFFLE_BUFFER), seed=None, reshuffle_each_iteration=True)
    return ds.repeat().batch(batch_size), math.ceil(n / batch_size)


def _steps_of(tf, dataset, what: str, steps_name: str, example: str) -> int:
    cardinality = int(dataset.cardinality())
    if cardinality > 0:
        return cardinality
    size = "infinite" if cardinality == int(tf.data.INFINITE_CARDINALITY) else "of unknown size"
    raise InputSizeUnknown(
        f"{what} got a tf.data dataset {size} without {steps_name}, and parameter-server training needs to "
        f"know how many batches an epoch has; pass {steps_name}, e.g. {example}."
    )


def _is_dataset(tf, value) -> bool:
    return isinstance(value, tf.data.Dataset)


def adapt_validation(tf, arguments: dict, validation_data) -> None:
    steps = arguments.get("validation_steps")
    if _is_dataset(tf, validation_data):
        if steps is None:
            steps = _steps_of(
                tf, validation_data, "fit(validation_data=...)", "validation_steps", "validation_steps=10"
            )
        arguments["validation_data"] = validation_data.repeat()
        arguments["validation_steps"] = steps
        return
    if isinstance(validation_data, (tuple, list)) and 2 <= len(validation_data) <= 3:
        vx, vy = validation_data[0], validation_data[1]
        vw = validation_data[2] if len(validation_data) == 3 else None
        if _is_arrays(tf, vx) and _is_arrays(tf, vy):
            batch = int(
                arguments.get("validation_batch_size") or arguments.get("batch_size") or DEFAULT_BATCH_SIZE
            )
            ds, n_steps = _dataset_of(tf, vx, vy, vw, batch, shuffle=False)
            arguments["validation_data"] = ds
            arguments["validation_steps"] = steps or n_steps
            arguments.pop("validation_batch_size", None)


def adapt_fit_arguments(tf, arguments: dict) -> None:
    """Rewrite one ``fit`` call's bound ``arguments`` for parameter-server training (see the module doc)."""
    x = arguments.get("x")
    refuse_python_batches(x, "fit()")
    refuse_python_batches(arguments.get("validation_data"), "fit(validation_data=...)")
    refuse_python_pipeline(tf, x, "fit()")
    refuse_python_pipeline(tf, arguments.get("validation_data"), "fit(validation_data=...)")
    if _is_dataset(tf, x):
        if arguments.get("steps_per_epoch") is None:
            arguments["steps_per_epoch"] = _steps_of(
                tf, x, "fit()", "steps_per_epoch", "fit(ds, epochs=5, steps_per_epoch=100)"
            )
            arguments["x"] = x.repeat()
    elif _is_arrays(tf, x) and (arguments.get("y") is None or _is_arrays(tf, arguments.get("y"))):
        y = arguments.get("y")
        sample_weight = arguments.pop("sample_weight", None)
        class_weight = arguments.pop("class_weight", None)
        if class_weight and y is not None:
            sample_weight = _class_weights(sample_weight, y, class_weight)
        split = float(arguments.pop("validation_split", 0.0) or 0.0)
        n = _num_samples(tf, x)
        if split and arguments.get("validation_data") is None:
            at = int(n * (1.0 - split))
            val = (_slice(tf, x, at, None), _slice(tf, y, at, None))
            if sample_weight is not None:
                val += (_slice(tf, sample_weight, at, None),)
            x, y, sample_weight = _slice(tf, x, 0, at), _slice(tf, y, 0, at), _slice(tf, sample_weight, 0, at)
            arguments["validation_data"] = val
        batch = int(arguments.get("batch_size") or DEFAULT_BATCH_SIZE)
        shuffle = arguments.get("shuffle", True)
        ds, steps = _dataset_of(tf, x, y, sample_weight, batch, shuffle=bool(shuffle) and shuffle != "batch")
        arguments["x"] = ds
        arguments.pop("y", None)
        arguments.pop("batch_size", None)
        arguments["steps_per_epoch"] = arguments.get("steps_per_epoch") or steps
        if arguments.get("validation_batch_size") is None:
            arguments["validation_batch_size"] = batch
    validation_data = arguments.get("validation_data")
    if validation_data is not None:
        adapt_validation(tf, arguments, validation_data)
    arguments.pop("validation_batch_size", None)


def adapt_evaluate_arguments(tf, arguments: dict) -> None:
    """Rewrite one ``evaluate`` call's bound ``arguments`` for parameter-server training."""
    x = arguments.get("x")
    refuse_python_batches(x, "evaluate()")
    refuse_python_pipeline(tf, x, "evaluate()")
    if _is_dataset(tf, x):
        if arguments.get("steps") is None:
            arguments["steps"] = _steps_of(tf, x, "evaluate()", "steps", "evaluate(ds, steps=50)")
            arguments["x"] = x.repeat()
    elif _is_arrays(tf, x) and (arguments.get("y") is None or _is_arrays(tf, arguments.get("y"))):
        batch = int(arguments.get("batch_size") or DEFAULT_BATCH_SIZE)
        ds, steps = _dataset_of(
            tf, x, arguments.get("y"), arguments.pop("sample_weight", None), batch, shuffle=False
        )
        arguments["x"] = ds
        arguments.pop("y", None)
        arguments.pop("batch_size", None)
        arguments["steps"] = arguments.get("steps") or steps


def predict_on_coordinator(tf, model, arguments: dict):
    """``predict`` with parameter servers, run by the coordinator (the chief) itself, batch by batch.

    tf_keras cannot predict through ParameterServerStrategy's datasets (``To use this dataset, you need to
    pass this dataset to ClusterCoordinator.create_per_worker_dataset``); the chief reads the variables from
    the ps and computes the outputs eagerly, the way one machine would.
    """
    import itertools

    import numpy as np

    x = arguments.get("x")
    steps = arguments.get("steps")
    if _is_dataset(tf, x):
        batches = x if steps is None else x.take(int(steps))
    elif _python_batches(x):  # the chief reads a Sequence or generator itself
        every = x if hasattr(x, "__next__") else (x[i] for i in range(len(x)))
        batches = every if steps is None else itertools.islice(every, int(steps))
    else:
        batch = int(arguments.get("batch_size") or DEFAULT_BATCH_SIZE)
        batches = tf.data.Dataset.from_tensor_slices(x).batch(batch)
    outputs = []
    for element in batches:
        inputs = element[0] if isinstance(element, tuple) else element
        outputs.append(tf.nest.map_structure(lambda t: np.asarray(t), model(inputs, training=False)))
    if not outputs:
        raise ValueError("predict() got no data (an empty dataset or no samples); pass at least one sample.")
    return tf.nest.map_structure(lambda *parts: np.concatenate(parts, axis=0), *outputs)
