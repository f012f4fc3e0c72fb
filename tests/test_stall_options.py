"""``stall_timeout`` through the magic flag and the ``TFK8s`` traitlets default."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.magic_arguments import magic_arguments

from tfk8s_jupyter.config import TFK8s
from tfk8s_jupyter.magic_args import job_options, parse_magic_line, train_arguments
from tfk8s_jupyter.spec import SpecError, make_spec


@magic_arguments()
@train_arguments
def tfk8s_train(line):
    """The training magic's arguments."""


def _options(line: str, **defaults) -> dict:
    return job_options(TFK8s(**defaults), parse_magic_line(tfk8s_train, line))


def test_the_flag_and_the_default_reach_the_spec():
    assert make_spec("pass", **_options("--stall-timeout 15")).stall_timeout == 15
    assert make_spec("pass", **_options("", stall_timeout=0)).stall_timeout == 0
    assert make_spec("pass", **_options("")).stall_timeout == 120


def test_bad_values_are_refused_in_one_sentence():
    with pytest.raises(UsageError, match="invalid float value: 'soon'; give a number"):
        _options("--stall-timeout soon")
    with pytest.raises(SpecError, match=r"stall_timeout -5.0 must be 0 \(off\) or more seconds"):
        make_spec("pass", **_options("--stall-timeout -5"))
    with pytest.raises(Exception, match="stall_timeout -1 must be 0 or more seconds, e.g. 120"):
        TFK8s(stall_timeout=-1)


# The Kubernetes follower's judgement (backends/kubernetes/stall.py), on a hand-driven clock ----------------
class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _watch(**kw):
    from tfk8s_jupyter.backends.kubernetes.stall import StallWatch

    clock = Clock()
    spec = make_spec(
        "pass", workers=2, backend="kubernetes", **{"stall_timeout": 30, "setup_timeout": 60, **kw}
    )
    return StallWatch(spec, clock=clock), clock


def test_kubernetes_stall_grace_covers_the_first_step_then_stall_timeout_counts():
    watch, clock = _watch()
    assert not watch.stalled()  # no run yet
    watch.saw([{"type": "start"}])
    clock.now += 89
    assert not watch.stalled()  # 30 s + the 60 s start-up grace before the first progress event
    clock.now += 1
    assert watch.stalled()
    watch.saw([{"type": "metric", "step": 7}])
    clock.now += 29
    assert not watch.stalled()
    clock.now += 1
    assert watch.stalled() and watch.where() == "at step 7"
    note = watch.note()
    assert note.startswith("worker-0 made no training progress for longer than stall_timeout=30 s at step 7")
    watch.restarted()
    clock.now += 1000
    assert not watch.stalled()  # the new run's start restarts the clock


def test_kubernetes_slow_epochs_that_advance_the_end_of_a_fit_and_timeout_0_are_never_a_stall():
    watch, clock = _watch()
    watch.saw([{"type": "start"}])
    for step in range(10):  # slow, but each epoch reports within stall_timeout
        clock.now += 29
        watch.saw([{"type": "epoch", "step": step, "last_epoch": False}])
        assert not watch.stalled()
    watch.saw([{"type": "epoch", "step": 10, "last_epoch": True}, {"type": "checkpoint"}])
    clock.now += 500  # after the last epoch: teardown and the model save report nothing
    assert not watch.stalled()
    off, clock = _watch(stall_timeout=0)
    off.saw([{"type": "start"}])
    clock.now += 10_000
    assert not off.stalled()


def test_only_the_cells_own_errors_fail_a_kubernetes_job_at_once():
    from tfk8s_jupyter.backends.kubernetes.stall import fatal_cell_error

    lost_peer = {
        "type": "error",
        "message": "UnavailableError: peer gone",
        "error_type": "tensorflow.python.framework.errors_impl.UnavailableError",
        "raised_in_cell": False,
        "phase": "cell",
    }
    assert not fatal_cell_error(lost_peer)
    assert fatal_cell_error({**lost_peer, "error_type": "__main__.UnavailableError", "raised_in_cell": True})
    assert fatal_cell_error(
        {"type": "error", "message": "ValueError: x", "error_type": "builtins.ValueError"}
    )
    assert not fatal_cell_error({"type": "error", "message": "ImportError: x", "phase": "setup"})
    assert not fatal_cell_error({"type": "metric"})
