"""Whether a replica whose cell raised may be kept for the next run (:func:`judge_failure`): an ordinary
Python error outside any training or distributed call, or one Keras raised while it traced a fit's first
step (:func:`raised_while_first_traced`), leaves the process fit; a TensorFlow runtime error, a lost peer, an
error once steps ran does not. Pure: it reads the exception, its chain and the frames that raised it. The
replica side of kept replicas (:mod:`.local_keep_process`) acts on the answer.
"""

from __future__ import annotations

import os
import sys

# Calls whose error can leave peers mid-step: all-reduce workers waiting in a collective this process never
# joins, or a parameter-server coordinator's closures still running on the workers.
IN_FLIGHT_CALLS = frozenset(
    {
        "fit",
        "evaluate",
        "predict",
        "train_on_batch",
        "test_on_batch",
        "predict_on_batch",
        "run",
        "schedule",
        "join",
    }
)


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _in_flight_call(exc: BaseException) -> str | None:
    """The Keras training call or distributed call (``Model.fit``, ``strategy.run``, a coordinator's
    ``schedule``/``join``) the exception was raised inside, if any (the outermost)."""
    for path, name in _raise_stack(exc):
        if name not in IN_FLIGHT_CALLS:
            continue
        if name in ("run", "schedule", "join"):
            if "/tensorflow/python/distribute/" in path:
                return name
        elif _keras_call(path, name):
            return f"Model.{name}"
    return None


# Where TensorFlow traces a function into a graph: an error raised below these frames was raised while the
# graph was built, before any of its ops (a step's collectives, a closure for the workers) ran.
TRACE_FRAME = ("/tensorflow/python/framework/func_graph.py", "func_graph_from_py_func")
# a tf.function's first call
FIRST_CALL_FRAME = ("/polymorphic_function/polymorphic_function.py", "_initialize")
# Keras 3's symbolic build at the start of a fit (under all-reduce the runner's): the model called on the
# first batch's specs in a scratch graph, its loss and metrics built, before the first step is traced
SYMBOLIC_BUILD = ("/keras/src/trainers/trainer.py", "_symbolic_build")
TRACED_CALLS = frozenset({"fit", "evaluate", "predict"})


def _frames_of(exc: BaseException) -> list:
    tb = exc.__traceback__
    if tb is None:
        return []
    while tb.tb_next is not None:
        tb = tb.tb_next
    frames = []
    frame = tb.tb_frame
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    return frames


def _raise_stack(exc: BaseException) -> list[tuple[str, str]]:
    """(path, function) of every frame from the outermost caller down to the one that raised ``exc``.

    Read from the raising frame's callers, not from the traceback: Keras and TensorFlow filter their own
    frames out of the traceback they re-raise, which leaves out the frames looked for here. An error Keras
    re-raised as another keeps the first as its context: the deepest error of the chain raised below
    ``exc``'s frames gives the stack (an unrelated error the cell handled before is not below them)."""
    frames = _frames_of(exc)
    for e in list(_chain(exc))[1:]:
        deeper = _frames_of(e)
        if len(deeper) > len(frames) and all(a is b for a, b in zip(frames, deeper, strict=False)):
            frames = deeper
    return [(f.f_code.co_filename.replace(os.sep, "/"), f.f_code.co_name) for f in frames]


def _keras_call(path: str, name: str) -> bool:
    return name in IN_FLIGHT_CALLS and (
        "/keras/" in path or "/tf_keras/" in path or path.endswith("replica_runtime.py")
    )


def raised_while_first_traced(exc: BaseException, fits: int | None) -> bool:
    """Whether ``exc`` was raised while Keras traced the step function of a ``fit``, ``evaluate`` or
    ``predict`` for its first call (or, Keras 3, built the model symbolically just before), before any batch
    of this process ended — the commonest notebook mistakes (data that does not fit the model, labels of the
    wrong rank for the loss, an unknown loss name): the step's collectives were graph ops not yet run, and a
    parameter-server chief had dispatched no closure (its ``schedule`` traces the function before it queues
    anything).

    ``fits`` is the runner's count of the fits this run began (None: unknown, never kept): the failing
    ``fit`` must be the first, an ``evaluate`` or ``predict`` must come before any fit. Below the Keras call
    the first graph built must belong to a tf.function's first call, or to the symbolic build (not its
    optimizer's build, which creates variables), with no callback (``on_*``) and no coordinator's ``join``
    on the way: a retrace, or a function first called from a callback, may come after batches ended."""
    if fits is None:
        return False
    call = None
    first_call = symbolic = False
    for path, name in _raise_stack(exc):
        if symbolic:
            if "/keras/src/optimizers/" in path:
                return False
        elif _keras_call(path, name):
            if name not in TRACED_CALLS or call not in (None, name):
                return False  # train_on_batch and the like, or an evaluate run by fit after its batches
            call = name
        elif call is None:
            continue
        elif name.startswith("on_") or name == "join":
            return False
        elif path.endswith(FIRST_CALL_FRAME[0]) and name == FIRST_CALL_FRAME[1]:
            first_call = True
        elif path.endswith(TRACE_FRAME[0]) and name == TRACE_FRAME[1]:
            return first_call and fits == (1 if call == "fit" else 0)
        elif path.endswith(SYMBOLIC_BUILD[0]) and name == SYMBOLIC_BUILD[1]:
            symbolic = True
    return symbolic and fits == (1 if call == "fit" else 0)


def judge_failure(exc: BaseException, event: dict, fits: int | None = None) -> str | None:
    """Whether a process whose cell raised ``exc`` (its ``error`` event: ``event``) can be kept: None when
    it can — an ordinary Python exception that unwound out of the cell outside any training or distributed
    call, so no peer waits on this process and no collective or TensorFlow runtime state is left half done,
    or one raised while Keras traced a fit's first step (:func:`raised_while_first_traced`; ``fits``: the
    fits the run began) — else the clause saying why not ("" when there is nothing to say: a lost peer,
    which its supervisor restarts). Conservative: what it cannot tell is harmless is not."""
    from .local_errors import curable_error

    name = type(exc).__name__
    if curable_error(event):
        return ""
    if not isinstance(exc, Exception):
        return f"its cell ended with {name}"
    tf = sys.modules.get("tensorflow")
    op_error = getattr(getattr(tf, "errors", None), "OpError", None) if tf is not None else None
    for e in _chain(exc):
        if (op_error is not None and isinstance(e, op_error)) or type(e).__module__.startswith("tensorflow"):
            return (
                f"its cell failed with TensorFlow's {type(e).__name__}, which can leave TensorFlow's "
                "distributed runtime in this process unusable"
            )
        if isinstance(e, (ConnectionError, TimeoutError)):
            return f"its cell failed with {type(e).__name__}, which may come from a lost peer"
    call = _in_flight_call(exc)
    if call is not None and not raised_while_first_traced(exc, fits):
        return (
            f"its cell raised {name} inside {call}, not while its first step was traced, so its peers may be "
            "left mid-step"
        )
    return None
