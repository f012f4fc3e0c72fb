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


REPORT_IN_A_KERNEL = [
    """\
import numpy as np
import tensorflow as tf
from tfk8s_jupyter import report

for step in range(3):
    got = report(step=step, loss=tf.constant(0.5) / (step + 1), accuracy=np.float32(0.25), seen=step * 32)
print("returned", got)
""",
    """\
try:
    report(step=3, loss="high")
except TypeError as exc:
    print("refused:", exc)
""",
    "report(step=4, loss=[0.1, 0.2])",
]


@pytest.mark.tf
@pytest.mark.timeout(300)
def test_report_in_a_plain_kernel_is_harmless_and_refuses_a_non_number_in_one_sentence(tmp_path):
    """The same cell run in the notebook before it becomes a job: ``report()`` raises nothing, prints no
    protocol line, returns its values as floats; a non-numeric value is one clear error."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in REPORT_IN_A_KERNEL]
    work = tmp_path / "nbwork"
    work.mkdir()
    client = NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    )
    with pytest.raises(CellExecutionError):
        client.execute()
    first, second, third = nb.cells
    text = "".join(o.get("text", "") for c in nb.cells for o in c.outputs if o.output_type == "stream")
    assert "@tfk8s" not in text, text
    assert [o.output_type for o in first.outputs] == ["stream"], first.outputs
    assert (
        first.outputs[0]["text"] == "returned {'loss': 0.1666666716337204, 'accuracy': 0.25, 'seen': 64.0}\n"
    )
    assert second.outputs[0]["text"].startswith("refused: report(loss=...) got str 'high', not a number;")
    assert second.outputs[0]["text"].endswith("e.g. report(step=i, loss=float(value)).\n")  # one line
    (error,) = [o for o in third.outputs if o.output_type == "error"]
    assert error["ename"] == "MetricValueError"
    assert error["evalue"].startswith("report(loss=...) got list [0.1, 0.2], not a number; pass a float")
    assert not list(work.iterdir())  # nothing written next to the notebook
