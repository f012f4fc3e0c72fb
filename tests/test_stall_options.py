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
