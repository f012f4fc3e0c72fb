"""``notebooks/custom_loop.ipynb`` in a real kernel: a parameter-server ``ClusterCoordinator`` loop and an
all-reduce ``strategy.run`` loop, each as the tutorials write it, each leaving a live curve of its points."""

from __future__ import annotations

import numpy as np
import pytest
from test_notebooks import by_class, execute, outputs_of, ref, widget_states


@pytest.mark.tf
@pytest.mark.timeout(900)
def test_custom_loop_notebook_draws_a_curve_for_each_loop(tmp_path):
    nb = execute("custom_loop", tmp_path)
    ps_out = outputs_of(nb, "# NBVAL_CHECK_OUTPUT\nlosses = ps_job")[0]["text"]
    assert ps_out.strip() == "succeeded parameter_server 5 points; loss went down: True"
    mw_out = outputs_of(nb, "# NBVAL_CHECK_OUTPUT\nlosses = mw_job")[0]["text"]
    assert mw_out.strip() == "succeeded multi_worker_mirrored points: True loss went down: True"
    states = widget_states(nb)
    badges = by_class(states, "tfk8s-status-badge")
    assert [b["value"] for b in badges] == ["succeeded", "succeeded"]
    figures = by_class(states, "tfk8s-curve")
    assert len(figures) == 2
    for figure in figures:
        (lines,) = [states[ref(m)] for m in figure["marks"]]
        loss = np.atleast_2d(lines["y"])[lines["labels"].index("loss")]
        assert len(loss) >= 2 and loss[-1] < loss[0], loss
