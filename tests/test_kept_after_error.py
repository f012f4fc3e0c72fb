"""Kept replicas after a cell error, with real TensorFlow: a job whose cell raised an ordinary Python error
(a typo, a Keras error while building or compiling the model) fails exactly as it always did — phase,
message, error event, replica states, logs — and its replicas stay for the fixed cell, which runs in them
(launch "kept") as on a cold start. So does an error Keras raises while it traces a fit's first step (data
that does not fit the model), under all-reduce and on a parameter-server chief. An error that may leave a
process or its peers unfit (TensorFlow's runtime errors, an error inside ``Model.fit`` once steps ran, a
peer still running, a thread left behind) keeps nothing, says why in the replica table, hangs nothing, and
the next run starts cold and succeeds. The judgement of an error is also tested directly."""

from __future__ import annotations

import textwrap

from local_helpers import wait_for
from test_kept_replicas import CELL as KEPT_CELL

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends.local import process_alive
from tfk8s_jupyter.backends.local_keep import PENDING_KEEP, list_kept, stop_kept
from tfk8s_jupyter.backends.local_keep_judge import judge_failure
from tfk8s_jupyter.config import TFK8s, set_current_config

# test_kept_replicas.py's training cell (it shows what a run finds of the previous one), its optimizer a
# name the cell's first lines set: a test makes it one Keras does not know.
CELL = KEPT_CELL.replace('optimizer="adam"', "optimizer=OPTIMIZER")
assert CELL != KEPT_CELL
TYPO = "RUN = '1'\nOPTIMIZER = 'adam'\nprint(learning_rat)\n" + CELL  # NameError at cell line 3
KEPT = f"kept for the next run of the same shape (keep_warm={600:g} s)"


def keep(seconds: float = 600.0) -> None:
    set_current_config(TFK8s(warm_pool=0, keep_warm=seconds))


def fixed(run: str) -> str:
    return f"RUN = {run!r}\nOPTIMIZER = 'adam'\n" + CELL


def launches(job) -> dict[str, tuple[str, int]]:
    return {r.name: (r.launch, r.pid) for r in job.status.replicas}


def pids_of(job) -> set[int]:
    return {pid for _, pid in launches(job).values()}


def kept_pids(home) -> set[int]:
    return {r["pid"] for r in list_kept(home) if r["state"] == "kept"}


def fails(code: str, name: str, **kwargs):
    job = tk.submit(code, name=name, **kwargs)
    assert job.wait(timeout=300) == "failed", job.status.message
    return job


def succeeds(code: str, name: str, **kwargs):
    job = tk.submit(code, name=name, **kwargs)
    assert job.wait(timeout=300) == "succeeded", job.status.message
    return job


def error_event(job) -> dict:
    (event,) = [e for e in job.events() if e.get("type") == "error"]
    return {
        k: event.get(k) for k in ("message", "traceback", "line", "phase", "error_type", "raised_in_cell")
    }


def final_table(job) -> dict[str, str]:
    """The replica table once every replica said its word after its reset (a kept set says "kept" then)."""

    def final() -> dict[str, str] | None:
        messages = {r.name: r.message or "" for r in job.status.replicas}
        return None if any(m.endswith(PENDING_KEEP) for m in messages.values()) else messages

    return wait_for(final, 60, "the replica table's final word")


def line(text: str, prefix: str) -> str:
    return next(ln for ln in text.splitlines() if ln.startswith(prefix))


# --------------------------------------------------------------------------- kept after the error
def test_a_typo_fails_the_job_as_ever_and_the_fixed_cell_runs_in_its_kept_replicas(tfk8s_home):
    keep(0)  # what the user has always seen: no replica kept
    cold = fails(TYPO, "typo-cold", workers=2)
    wait_for(lambda: not any(process_alive(p) for p in pids_of(cold)), 30, "the replicas to exit")
    keep()
    failed = fails(TYPO, "typo-kept", workers=2)
    # the same failure for the user: phase, message, error event, the reporting replica's state and code
    assert failed.status.message == cold.status.message
    assert "NameError: name 'learning_rat' is not defined (cell line 3)" in failed.status.message
    assert error_event(failed) == error_event(cold)
    assert error_event(failed)["line"] == 3
    for job in (cold, failed):
        w0 = next(r for r in job.status.replicas if r.name == "worker-0")
        assert (w0.state, w0.exit_code) == ("failed", 1)
    for name in ("worker-0", "worker-1"):
        log = failed.logs(name)
        assert "NameError: name 'learning_rat' is not defined" in log
        assert "is not kept" not in log
    # ...but its replicas stay, and the table says so as after a success
    pids = pids_of(failed)
    assert {launch for launch, _ in launches(failed).values()} == {"cold"}
    assert final_table(failed) == {"worker-0": KEPT, "worker-1": KEPT}
    assert kept_pids(tfk8s_home) == pids
    # another typo, on the kept replicas: the same failure again, and kept again
    again = fails(TYPO.replace("learning_rat", "learning_rte"), "typo-again", workers=2)
    assert {launch for launch, _ in launches(again).values()} == {"kept"} and pids_of(again) == pids
    assert again.status.message == cold.status.message.replace("learning_rat", "learning_rte")
    assert {(r.state, r.exit_code) for r in again.status.replicas} == {("failed", 1)}
    assert "leaked global: none" not in again.logs("worker-0")  # the typo comes first
    assert final_table(again) == {"worker-0": KEPT, "worker-1": KEPT}
    # the fixed cell runs in them as on a cold start: a fresh namespace, the same starting weights
    second = succeeds(fixed("2"), "typo-fixed", workers=2)
    assert {launch for launch, _ in launches(second).values()} == {"kept"}
    assert pids_of(second) == pids
    start = next(e for e in second.events() if e.get("type") == "start")
    assert start["replicas"] == 2
    log = second.logs("worker-0")
    assert "leaked global: none" in log and log.count("cell done, losses:") == 1
    assert any(e.get("type") == "metric" for e in second.events())
    assert not any(e.get("type") == "error" for e in second.events())
    # kept again after the success
    wait_for(lambda: kept_pids(tfk8s_home) == pids, 30, "the set kept again")
    assert stop_kept(tfk8s_home) == 2


def test_a_keras_error_while_compiling_in_every_worker_keeps_the_replicas(tfk8s_home):
    keep()
    failed = fails("RUN = '1'\nOPTIMIZER = 'no_such_optimizer'\n" + CELL, "compile-error", workers=2)
    assert "ValueError: Could not interpret optimizer identifier: no_such_optimizer" in failed.status.message
    compile_line = 2 + 1 + next(i for i, ln in enumerate(CELL.splitlines()) if ln.startswith("model.compile"))
    assert error_event(failed)["line"] == compile_line
    pids = pids_of(failed)
    assert final_table(failed) == {"worker-0": KEPT, "worker-1": KEPT}
    second = succeeds(fixed("2"), "compile-fixed", workers=2)
    assert {launch for launch, _ in launches(second).values()} == {"kept"} and pids_of(second) == pids
    log1, log2 = failed.logs("worker-0"), second.logs("worker-0")
    assert "leaked global: none" in log2
    # the model the failed run built starts from the same weights as the fixed run's: seeds reset
    assert line(log1, "first weight:") == line(log2, "first weight:")
    assert "cell done, losses:" in log2


def test_a_parameter_server_chief_that_raises_before_training_keeps_every_replica(tfk8s_home):
    keep()
    failed = fails(TYPO, "ps-typo", workers=2, ps=1)
    assert failed.status.message.startswith("chief-0 failed: NameError")
    pids = pids_of(failed)
    table = final_table(failed)
    assert set(table.values()) == {KEPT}, table
    states = {r.name: r.state for r in failed.status.replicas}
    assert states["chief-0"] == "failed"
    assert kept_pids(tfk8s_home) == pids
    second = succeeds(fixed("2"), "ps-fixed", workers=2, ps=1)
    assert {launch for launch, _ in launches(second).values()} == {"kept"} and pids_of(second) == pids
    chief = second.logs("chief-0")
    assert "leaked global: none" in chief and "cell done, losses:" in chief
    assert "kept from the previous run" in second.logs("ps-0")
    assert any(e.get("type") == "metric" for e in second.events())


# The commonest notebook mistake: the model expects 32 features, the data has 8. Keras raises it while it
# traces the first train step, before any of the step's collectives ran.
WRONG_SHAPE = fixed("1").replace("keras.Input(shape=(8,))", "keras.Input(shape=(32,))")
SHAPE_ERROR = "expected axis -1 of input shape to have value 32"


def test_data_that_does_not_fit_the_model_fails_as_ever_and_the_fixed_cell_runs_in_its_kept_replicas(
    tfk8s_home,
):
    keep(0)  # what the user has always seen
    cold = fails(WRONG_SHAPE, "shape-cold", workers=2)
    wait_for(lambda: not any(process_alive(p) for p in pids_of(cold)), 30, "the replicas to exit")
    keep()
    failed = fails(WRONG_SHAPE, "shape-kept", workers=2)
    assert SHAPE_ERROR in failed.status.message
    assert failed.status.message == cold.status.message
    assert error_event(failed) == error_event(cold)
    fit_line = (
        2 + 1 + next(i for i, ln in enumerate(CELL.splitlines()) if ln.startswith("history = model.fit"))
    )
    assert error_event(failed)["line"] == fit_line
    for name in ("worker-0", "worker-1"):
        log = failed.logs(name)
        assert SHAPE_ERROR in log and "is not kept" not in log
    pids = pids_of(failed)
    assert final_table(failed) == {"worker-0": KEPT, "worker-1": KEPT}
    assert kept_pids(tfk8s_home) == pids
    second = succeeds(fixed("2"), "shape-fixed", workers=2)
    assert {launch for launch, _ in launches(second).values()} == {"kept"} and pids_of(second) == pids
    log = second.logs("worker-0")
    assert "leaked global: none" in log and log.count("cell done, losses:") == 1
    assert any(e.get("type") == "metric" for e in second.events())
    wait_for(lambda: kept_pids(tfk8s_home) == pids, 30, "the set kept again")
    assert stop_kept(tfk8s_home) == 2


def test_a_parameter_server_chief_whose_fit_fails_while_tracing_keeps_every_replica(tfk8s_home):
    keep()
    failed = fails(WRONG_SHAPE, "ps-shape", workers=2, ps=1)
    assert failed.status.message.startswith("chief-0 failed: ValueError"), failed.status.message
    assert "expected shape=(None, 32), found shape=(None, 8)" in failed.status.message  # tf_keras's words
    pids = pids_of(failed)
    table = final_table(failed)
    assert set(table.values()) == {KEPT}, table
    assert kept_pids(tfk8s_home) == pids
    second = succeeds(fixed("2"), "ps-shape-fixed", workers=2, ps=1)
    assert {launch for launch, _ in launches(second).values()} == {"kept"} and pids_of(second) == pids
    chief = second.logs("chief-0")
    assert "leaked global: none" in chief and "cell done, losses:" in chief
    assert "kept from the previous run" in second.logs("worker-0")
    assert any(e.get("type") == "metric" for e in second.events())


# --------------------------------------------------------------------------- not kept, and nothing hangs
# worker-1 alone raises before the model exists; worker-0 goes on into the variables' broadcast, a
# collective worker-1 never joins
ONE_RAISES = "import os\nif os.environ['TFK8S_INDEX'] == '1':\n    raise ValueError('only worker-1')\n"


def test_one_worker_raising_while_its_peer_waits_in_a_collective_keeps_nothing(tfk8s_home):
    keep()
    failed = fails(ONE_RAISES + fixed("1"), "one-raises", workers=2)
    assert failed.status.message.startswith("worker-1 failed: ValueError: only worker-1 (cell line 3)")
    pids = pids_of(failed)
    table = {r.name: r.message or "" for r in failed.status.replicas}
    assert table["worker-0"] == (
        "worker-0 is not kept for the next run: it was still running when the job failed, so it was stopped"
    ), table
    assert table["worker-1"].startswith("worker-1 is not kept for the next run either: worker-0 is not kept")
    states = {r.name: (r.state, r.exit_code) for r in failed.status.replicas}
    assert states["worker-1"] == ("failed", 1) and states["worker-0"][0] == "stopped", states
    wait_for(lambda: not any(process_alive(p) for p in pids), 20, "the replicas to exit")
    assert not kept_pids(tfk8s_home)
    nxt = succeeds(fixed("2"), "after-one-raises", workers=2)
    assert {launch for launch, _ in launches(nxt).values()} == {"cold"}
    assert "cell done, losses:" in nxt.logs("worker-0")


# every worker raises at the end of epoch 1, once steps ran: the same error everywhere, still not kept
RAISE_IN_FIT = textwrap.dedent(
    """\
    class Boom(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise ValueError("mid-training")
    model.fit(ds, epochs=3, steps_per_epoch=5, callbacks=[Boom()])
    """
)
MID_STEP = (
    "its cell raised ValueError inside Model.fit, not while its first step was traced, so its peers may be "
    "left mid-step"
)
OP_ERROR = "import tensorflow as tf\ntf.debugging.assert_equal(1, 2, message='runtime check')\n"
THREAD_THEN_TYPO = (
    "import threading\nstop = threading.Event()\n"
    "threading.Thread(target=stop.wait, name='left-behind', daemon=True).start()\nprint(learning_rat)\n"
)


def test_errors_that_may_leave_a_process_unfit_keep_nothing_and_say_why(tfk8s_home):
    keep()
    # an error inside Model.fit once steps ran, on every worker: a peer may be mid-step
    mid = fails(fixed("1") + RAISE_IN_FIT, "raise-in-fit", workers=2)
    assert "ValueError: mid-training" in mid.status.message
    table = {r.name: r.message or "" for r in mid.status.replicas}
    reasons = [
        f"tfk8s: {name} is not kept for the next run: {MID_STEP} (this process exits now, as a cold replica "
        "would)."
        for name in ("worker-0", "worker-1")
    ]
    assert reasons[0] in table.values() or reasons[1] in table.values(), table
    assert all("is not kept for the next run" in m for m in table.values()), table
    # TensorFlow's runtime error in every worker
    op = fails(OP_ERROR, "op-error", workers=2)
    table = {r.name: r.message or "" for r in op.status.replicas}
    assert "its cell failed with TensorFlow's InvalidArgumentError" in table["worker-0"], table
    assert "is not kept for the next run" in table["worker-1"], table
    # a typo after the cell started a thread: the same hygiene as after a success
    leaky = fails(THREAD_THEN_TYPO, "thread-then-typo", workers=2)
    assert "NameError" in leaky.status.message
    table = {r.name: r.message or "" for r in leaky.status.replicas}
    assert "'left-behind' (daemon) running" in table["worker-0"], table
    for job in (mid, op, leaky):
        wait_for(lambda job=job: not any(process_alive(p) for p in pids_of(job)), 20, "the replicas to exit")
    assert not kept_pids(tfk8s_home)
    nxt = succeeds(fixed("2"), "after-unfit", workers=2)
    assert {launch for launch, _ in launches(nxt).values()} == {"cold"}


# --------------------------------------------------------------------------- the judgement, directly
def _raised(source: str, filename: str = "<tfk8s-cell>") -> BaseException:
    try:
        exec(compile(source, filename, "exec"), {})
    except BaseException as exc:  # noqa: BLE001
        return exc
    raise AssertionError("nothing raised")


def _event(exc: BaseException, in_cell: bool = True) -> dict:
    t = type(exc)
    return {
        "message": f"{t.__name__}: {exc}",
        "error_type": f"{t.__module__}.{t.__qualname__}",
        "raised_in_cell": in_cell,
    }


def test_which_cell_errors_leave_a_process_fit_to_be_kept():
    for ok in ("learning_rat", "raise ValueError('bad shape')", "open('/no/such/file')", "int('x')"):
        exc = _raised(ok)
        assert judge_failure(exc, _event(exc)) is None, ok
    # a Keras error while compiling: raised in Keras's code, outside any training call
    keras_compile = _raised(
        "def compile():\n    raise ValueError('no_such_loss')\ncompile()\n", "/x/keras/src/trainer.py"
    )
    assert judge_failure(keras_compile, _event(keras_compile, False)) is None
    # inside Model.fit or a distributed call: peers may be mid-step
    in_fit = _raised(
        "def fit():\n    raise ValueError('boom')\nfit()\n", "/x/keras/src/backend/tensorflow/trainer.py"
    )
    assert judge_failure(in_fit, _event(in_fit, False)) == MID_STEP
    in_run = _raised(
        "def run():\n    raise TypeError('x')\nrun()\n", "/x/tensorflow/python/distribute/distribute_lib.py"
    )
    assert "inside run" in judge_failure(in_run, _event(in_run, False))
    # TensorFlow's own error types, directly or as the cause
    op_error = type("InternalError", (Exception,), {"__module__": "tensorflow.python.framework.errors_impl"})
    try:
        try:
            raise op_error("collective aborted")
        except Exception as cause:
            raise RuntimeError("wrapped") from cause
    except RuntimeError as exc:
        wrapped = exc
    assert "TensorFlow's InternalError" in judge_failure(wrapped, _event(wrapped))
    # not an ordinary error: interrupted, a lost peer (restarted by its supervisor: nothing to say), a timeout
    assert (
        judge_failure(KeyboardInterrupt(), _event(KeyboardInterrupt()))
        == "its cell ended with KeyboardInterrupt"
    )
    unavailable = type(
        "UnavailableError", (Exception,), {"__module__": "tensorflow.python.framework.errors_impl"}
    )("x")
    assert judge_failure(unavailable, _event(unavailable, False)) == ""
    timeout = _raised("raise TimeoutError('slow')")
    assert "TimeoutError" in judge_failure(timeout, _event(timeout))


def _stack(*frames: tuple[str, str]) -> BaseException:
    """The error raised at the bottom of nested calls of functions named and placed as ``frames`` say
    (outermost first): the frames TensorFlow and Keras leave on the stack while they trace a step."""
    inner = None
    for path, name in reversed(frames):
        body = "raise ValueError('shape')" if inner is None else "inner()"
        namespace = {"inner": inner}
        exec(compile(f"def {name}():\n    {body}\n", path, "exec"), namespace)
        inner = namespace[name]
    try:
        inner()
    except ValueError as exc:
        return exc
    raise AssertionError("nothing raised")


FIT = ("/x/keras/src/backend/tensorflow/trainer.py", "fit")
FIRST_CALL = ("/x/tensorflow/python/eager/polymorphic_function/polymorphic_function.py", "_initialize")
RETRACE = ("/x/tensorflow/python/eager/polymorphic_function/polymorphic_function.py", "_call")
TRACE = ("/x/tensorflow/python/framework/func_graph.py", "func_graph_from_py_func")
LAYER = ("/x/keras/src/layers/input_spec.py", "assert_input_compatibility")
SYMBOLIC = ("/x/keras/src/trainers/trainer.py", "_symbolic_build")


def test_which_errors_inside_a_training_call_were_raised_while_its_first_step_was_traced():
    traced = _stack(FIT, FIRST_CALL, TRACE, LAYER)
    assert judge_failure(traced, _event(traced, False), fits=1) is None
    # unknown how many fits began, or a fit after another one: batches may have ended before
    assert judge_failure(traced, _event(traced, False)) == MID_STEP
    assert judge_failure(traced, _event(traced, False), fits=2) == MID_STEP
    # an evaluate or predict before any fit: kept; the same after a fit, or run by fit itself: not kept
    evaluate = _stack(("/x/keras/src/backend/tensorflow/trainer.py", "evaluate"), FIRST_CALL, TRACE, LAYER)
    assert judge_failure(evaluate, _event(evaluate, False), fits=0) is None
    assert judge_failure(evaluate, _event(evaluate, False), fits=1) is not None
    validation = _stack(
        FIT, ("/x/keras/src/backend/tensorflow/trainer.py", "evaluate"), FIRST_CALL, TRACE, LAYER
    )
    assert judge_failure(validation, _event(validation, False), fits=1) is not None
    # Keras 3's symbolic build before the first step (the runner's under all-reduce): kept, unless the error
    # came from the optimizer's build, which creates variables
    build = (("/x/tfk8s_jupyter/replica_keras.py", "_maybe_symbolic_build"), SYMBOLIC)
    symbolic = _stack(FIT, *build, ("/x/keras/src/backend/tensorflow/core.py", "compute_output_spec"), LAYER)
    assert judge_failure(symbolic, _event(symbolic, False), fits=1) is None
    assert judge_failure(symbolic, _event(symbolic, False), fits=2) == MID_STEP
    optimizer = _stack(FIT, *build, ("/x/keras/src/optimizers/base_optimizer.py", "build"))
    assert judge_failure(optimizer, _event(optimizer, False), fits=1) == MID_STEP
    # a retrace (not a first call), a function first traced in a callback, a coordinator's join: not kept
    for frames in (
        (FIT, RETRACE, TRACE, LAYER),
        (FIT, ("/x/keras/src/callbacks/callback_list.py", "on_epoch_end"), FIRST_CALL, TRACE, LAYER),
        (
            FIT,
            ("/x/tensorflow/python/distribute/coordinator/cluster_coordinator.py", "join"),
            FIRST_CALL,
            TRACE,
        ),
        (FIT, FIRST_CALL, LAYER),  # a first call that raised outside its graph's tracing
    ):
        exc = _stack(*frames)
        assert judge_failure(exc, _event(exc, False), fits=1) is not None, frames


def test_real_keras_errors_while_tracing_the_first_step_and_after_steps_ran():
    import numpy as np
    import tensorflow as tf

    keras = tf.keras
    x, y = np.zeros((64, 8), "float32"), np.zeros((64, 1), "float32")
    judged = {}
    for case in ("features", "labels", "loss", "validation"):
        width, units, loss = (32 if case == "features" else 8), 1, "mse"
        labels, validation = y, None
        if case == "labels":
            units, loss, labels = 3, "categorical_crossentropy", np.zeros((64,), "float32")
        elif case == "loss":
            loss = "no_such_loss"
        elif case == "validation":  # the validation data does not fit: raised after the epoch's steps
            validation = (np.zeros((8, 9), "float32"), np.zeros((8, 1), "float32"))
        model = keras.Sequential([keras.Input(shape=(width,)), keras.layers.Dense(units)])
        model.compile(optimizer="sgd", loss=loss)
        try:
            model.fit(x, labels, epochs=1, verbose=0, validation_data=validation)
        except ValueError as exc:
            judged[case] = judge_failure(exc, _event(exc, False), fits=1)
    assert judged == {"features": None, "labels": None, "loss": None, "validation": MID_STEP}
