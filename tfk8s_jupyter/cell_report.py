"""``report()``: a cell's own metric points, for custom training loops.

::

    from tfk8s_jupyter import report

    for step in range(steps):
        loss = train_step(...)
        report(step=step, loss=loss, accuracy=acc)

On the job's reporting replica (the chief with parameter servers, worker 0 otherwise) each call becomes a
metric point of the job's curve, through the same stream, throttling and de-duplication as ``fit``'s
points; on the other replicas and in a plain kernel it only checks its values and does nothing else, so a
cell runs unchanged in both places. Values may be Python numbers, numpy scalars, scalar tensors or
parameter-server ``RemoteValue`` results; anything else is one clear ``TypeError``.

Stdlib only (numpy and TensorFlow values are read through their own methods): it travels with the runner
in the job's ConfigMap, and the runner makes ``from tfk8s_jupyter import report`` work on replicas whose
image does not have this package installed.
"""

from __future__ import annotations

import numbers

# Set by the runner on the reporting replica: called with (step, {name: float}).
_sink = None


class MetricValueError(TypeError):
    """A value given to ``report()`` is not a number."""


def to_number(name: str, value) -> float:
    """``value`` as a Python float, or :class:`MetricValueError` naming ``name``."""
    original = value
    if hasattr(value, "fetch") and not hasattr(value, "numpy"):  # a parameter-server RemoteValue
        value = value.fetch()
    if hasattr(value, "numpy"):
        value = value.numpy()
    if hasattr(value, "item") and getattr(value, "size", 1) == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MetricValueError(
            f"report({name}=...) got {type(original).__name__} {original!r:.80}, not a number; pass a "
            f"float, a numpy scalar or a scalar tensor, e.g. report(step=i, {name}=float(value))."
        )
    return float(value)


def report(step: int | None = None, **values) -> dict[str, float]:
    """Report metric values of the cell's training loop as one point of the job's curve.

    Args:
        step: the training step (the curve's x); when omitted, one more than the previous report's.
        **values: metric name = number (float, int, numpy scalar, scalar tensor).

    Returns:
        The values as Python floats (a non-finite value is kept; the protocol sends it as null).

    Raises:
        MetricValueError: a value is not a number, or no value was given.

    Example:
        >>> report(step=10, loss=0.25)
        {'loss': 0.25}
    """
    if not values:
        raise MetricValueError("report() got no values; name them, e.g. report(step=i, loss=loss).")
    if step is not None:
        step = int(to_number("step", step))
    floats = {str(k): to_number(k, v) for k, v in values.items()}
    sink = _sink
    if sink is not None:
        sink(step, floats)
    return floats
