"""The example notebooks, executed with nbclient (``store_widget_state=True``): what they leave behind —
outputs and the saved widget state (final status, metric points, panel contents) — is what a reader sees.

``make test`` also runs them under nbval (``pytest --nbval-lax notebooks/``), which compares the outputs
of cells marked ``# NBVAL_CHECK_OUTPUT``; nbval never looks at widget state, hence these tests.
"""

from __future__ import annotations

import base64
import os
import re
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def execute(name: str, tmp_path: Path, frontend: str = "widgets") -> nbformat.NotebookNode:
    """Run an example notebook in a real kernel. nbclient is a batch run, where training cells wait and
    write text by default; ``frontend="widgets"`` (the profile's ``c.TFK8s.frontend``) keeps the live
    panel, whose saved widget state these tests read."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    work = tmp_path / "nbwork"
    work.mkdir()
    profile = tmp_path / "ipython-nb" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_config.py").write_text(f"c.TFK8s.frontend = {frontend!r}\n")
    previous = os.environ.get("IPYTHONDIR")
    os.environ["IPYTHONDIR"] = str(profile.parent)
    try:
        NotebookClient(
            nb,
            timeout=900,
            kernel_name="python3",
            store_widget_state=True,
            resources={"metadata": {"path": str(work)}},
        ).execute()
    finally:
        if previous is None:
            os.environ.pop("IPYTHONDIR", None)
        else:
            os.environ["IPYTHONDIR"] = previous
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors[0]
    return nb


def widget_states(nb) -> dict[str, dict]:
    """model id -> state, with binary buffers (bqplot arrays) decoded into numpy arrays."""
    saved = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    out = {}
    for model_id, model in saved.items():
        state = dict(model["state"])
        state["_model_name"] = model["model_name"]
        for buf in model.get("buffers", []):
            raw = base64.b64decode(buf["data"])
            target = state
            for key in buf["path"][:-1]:
                target = target[key]
            target[buf["path"][-1]] = raw
        for key in ("x", "y"):
            value = state.get(key)
            if isinstance(value, dict) and isinstance(value.get("value"), bytes):
                state[key] = np.frombuffer(value["value"], dtype=value["dtype"]).reshape(value["shape"])
        out[model_id] = state
    return out


def by_class(states: dict, cls: str) -> list[dict]:
    return [s for s in states.values() if cls in (s.get("_dom_classes") or [])]


def ref(value: str) -> str:
    return value.removeprefix("IPY_MODEL_")


def assert_finished_panel(states: dict, replicas: list[str]) -> dict:
    (panel,) = by_class(states, "tfk8s-job-panel")
    (badge,) = by_class(states, "tfk8s-status-badge")
    assert badge["value"] == "succeeded" and "tfk8s-phase-succeeded" in badge["_dom_classes"]
    (figure,) = by_class(states, "tfk8s-curve")
    (lines,) = [states[ref(m)] for m in figure["marks"]]
    assert "loss" in lines["labels"]
    x, y = lines["x"], np.atleast_2d(lines["y"])
    assert 3 <= len(x) <= 2000 and np.all(np.diff(x) > 0)
    loss = y[lines["labels"].index("loss")]
    assert loss[-1] < loss[0]
    (table,) = by_class(states, "tfk8s-replica-table")
    for name in replicas:
        assert f'data-replica="{name}"' in table["value"]
    assert table["value"].count("data-replica=") == len(replicas)
    (stop,) = by_class(states, "tfk8s-stop-button")
    assert stop["disabled"]
    (log_tail,) = by_class(states, "tfk8s-log-tail")
    assert "<pre" in log_tail["value"]
    return panel


def outputs_of(nb, startswith: str):
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(startswith)]
    return cell.outputs


@pytest.mark.tf
@pytest.mark.timeout(900)
def test_quickstart_leaves_a_finished_panel_and_a_summary(tmp_path):
    nb = execute("quickstart", tmp_path)
    states = widget_states(nb)
    panel = assert_finished_panel(states, ["ps-0", "chief-0", "worker-0", "worker-1"])
    train = outputs_of(nb, "%%tfk8s_train")
    view = train[0]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
    assert states[view] is panel
    summary = train[1]["data"]
    assert summary["text/plain"].startswith("tfk8s job tf-") and ": succeeded after" in summary["text/plain"]
    assert "tfk8s-summary" in summary["text/html"]
    wait = outputs_of(nb, "%tfk8s_wait")[0]["text"]
    assert wait.startswith("tfk8s job tf-") and wait.rstrip().endswith(": succeeded")


@pytest.mark.tf
@pytest.mark.timeout(900)
def test_mwms_notebook(tmp_path):
    nb = execute("mwms_sync", tmp_path)
    assert_finished_panel(widget_states(nb), ["worker-0", "worker-1"])
    printed = outputs_of(nb, "# NBVAL_CHECK_OUTPUT\nprint(job.phase")[0]["text"]
    assert printed.strip() == "succeeded multi_worker_mirrored ['worker-0', 'worker-1']"


@pytest.mark.tf
@pytest.mark.timeout(900)
def test_settings_panel_notebook_form_becomes_the_job_panel(tmp_path):
    nb = execute("settings_panel", tmp_path)
    states = widget_states(nb)
    (form,) = by_class(states, "tfk8s-launched")
    assert not by_class(states, "tfk8s-settings-panel")
    panel = assert_finished_panel(states, ["ps-0", "chief-0", "worker-0", "worker-1"])
    assert [states[ref(c)] for c in form["children"]] == [panel]
    (launch,) = by_class(states, "tfk8s-launch-button")
    assert launch["description"] == "Launch"
    workers = [s for s in states.values() if "tfk8s-field-workers" in (s.get("_dom_classes") or [])]
    assert workers[0]["value"] == 2
    summary = outputs_of(nb, "%%tfk8s_train --panel")[1]["data"]["text/plain"]
    assert ": succeeded after" in summary


def test_dry_run_notebook_prints_manifests_and_starts_nothing(tmp_path, tfk8s_home):
    nb = execute("kubernetes_dry_run", tmp_path)
    # one printout, which the kernel may flush as several stream outputs
    text = "".join(o.get("text", "") for o in outputs_of(nb, "%%tfk8s_train"))
    assert "# tfk8s dry run: job mnist-ps is valid; nothing was started." in text
    for kind in ("kind: ConfigMap", "kind: Service", "kind: Job"):
        assert kind in text
    assert "image: registry.example.com/ml/tf-trainer:2.21" in text and "nvidia.com/gpu: '1'" in text
    assert list(tfk8s_home.iterdir()) == []


def test_background_updates_land_in_the_training_cell_of_a_real_kernel(tmp_path, standin):
    """ipykernel 7: while another cell runs, the job's progress updates its own cell's output (text mode:
    a display updated by id) and the panel's widget models; nothing leaks into the running cell."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "%load_ext tfk8s_jupyter\n%config TFK8s.frontend = 'text'\n%config TFK8s.batch_wait = False"
        ),
        nbformat.v4.new_code_cell(
            "%%tfk8s_train --workers 2 --name text-job\nEPOCHS = 3\nSTEPS = 10\nSTEP_SECONDS = 0.1\n"
        ),
        nbformat.v4.new_code_cell("%config TFK8s.frontend = 'widgets'"),
        nbformat.v4.new_code_cell(
            "%%tfk8s_train --workers 2 --name widget-job\nEPOCHS = 3\nSTEPS = 10\nSTEP_SECONDS = 0.1\n"
        ),
        nbformat.v4.new_code_cell("import time\nfor _ in range(60):\n    time.sleep(0.25)\nprint('slept')"),
        nbformat.v4.new_code_cell("%tfk8s_wait text-job --timeout 120\n%tfk8s_wait widget-job --timeout 120"),
    ]
    work = tmp_path / "nbwork"
    work.mkdir()
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(work)}},
    ).execute()
    text_cell, widget_cell, sleep_cell = nb.cells[1], nb.cells[3], nb.cells[4]
    assert [o.get("text") for o in sleep_cell.outputs] == ["slept\n"]
    progress = text_cell.outputs[-1]["data"]["text/plain"]
    assert "[tfk8s] job text-job · running" in progress
    assert "tfk8s job text-job: succeeded after" in progress and "reached epoch 3, step 30" in progress
    states = widget_states(nb)
    (badge,) = by_class(states, "tfk8s-status-badge")
    assert badge["value"] == "succeeded"
    (figure,) = by_class(states, "tfk8s-curve")
    (lines,) = [states[ref(m)] for m in figure["marks"]]
    assert list(lines["x"]) == list(range(1, 31))
    assert ": succeeded after" in widget_cell.outputs[1]["data"]["text/plain"]


def test_kernel_reads_defaults_from_ipython_config(tmp_path, monkeypatch):
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_config.py").write_text("c.TFK8s.workers = 3\nc.TFK8s.backend = 'kubernetes'\n")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext tfk8s_jupyter\n%config TFK8s.gpus = 2"),
        nbformat.v4.new_code_cell("%tfk8s_config"),
    ]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    table = nb.cells[1].outputs[0]["data"]
    rows = {line.split()[0]: " ".join(line.split()[1:]) for line in table["text/plain"].splitlines()[1:]}
    assert rows["TFK8s.workers"] == "3 config file ipython_config.py"
    assert rows["TFK8s.backend"] == "'kubernetes' config file ipython_config.py"
    assert rows["TFK8s.gpus"] == "2 %config"
    assert rows["TFK8s.ps"] == "0 default"
    assert "<table class='tfk8s-config'>" in table["text/html"]


def test_nbconvert_without_widgets_shows_text_status_and_the_final_summary(tmp_path, standin):
    """``jupyter nbconvert --execute --to markdown``: no widget frontend, so readers get the panel's text
    fallback and the summary written when the job ended."""
    import subprocess
    import sys

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext tfk8s_jupyter"),
        nbformat.v4.new_code_cell("%%tfk8s_train --workers 2 --name nbconvert-job\nEPOCHS = 2\nSTEPS = 5\n"),
        nbformat.v4.new_code_cell("%tfk8s_wait"),
    ]
    path = tmp_path / "report.ipynb"
    nbformat.write(nb, path)
    subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--execute", "--to", "markdown", str(path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    text = (tmp_path / "report.md").read_text()
    assert re.search(r"job nbconvert-job · (pending|running) · ", text)  # the panel's plain-text face
    assert "tfk8s job nbconvert-job: <span" in text and "succeeded</span> after" in text
    assert "reached epoch 2, step 10" in text
    assert "replicas: worker-0 succeeded, worker-1 succeeded" in text


def test_nbconvert_of_a_lone_training_cell_waits_and_saves_the_final_summary(tmp_path, standin):
    """A pipeline notebook (nbconvert, papermill): one training cell and nothing after it. The cell waits
    for its job, so the executed notebook holds the progress text and the final summary with the last
    loss, and no widget view that would read "pending" forever."""
    import subprocess
    import sys

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext tfk8s_jupyter"),
        nbformat.v4.new_code_cell("%%tfk8s_train --workers 2 --name lone-job\nEPOCHS = 3\nSTEPS = 4\n"),
    ]
    path = tmp_path / "pipeline.ipynb"
    nbformat.write(nb, path)
    subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--execute", "--to", "notebook", str(path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    executed = nbformat.read(tmp_path / "pipeline.nbconvert.ipynb", as_version=4)
    outputs = executed.cells[1].outputs
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    text = "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "tfk8s: submitted job lone-job (local); progress follows." in text
    assert "[tfk8s] job lone-job · running" in text
    summary = text[text.index("tfk8s job lone-job: succeeded after") :]
    assert "reached epoch 3, step 12" in summary
    assert "last: loss=0.07692" in summary


def test_the_settings_form_works_in_a_batch_run(tmp_path, standin):
    """``--panel`` asks for the form itself, so a batch run (nbclient, nbval, papermill) shows it too, and
    code can fill and launch it, as ``notebooks/settings_panel.ipynb`` does."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext tfk8s_jupyter"),
        nbformat.v4.new_code_cell(
            "%%tfk8s_train --panel --workers 1 --name form-nb\nEPOCHS = 2\nSTEPS = 3\n"
        ),
        nbformat.v4.new_code_cell(
            "form = _tfk8s_settings\nform.fields['workers'].value = 2\nform.launch_button.click()\n"
        ),
        nbformat.v4.new_code_cell("%tfk8s_wait form-nb --timeout 120"),
    ]
    work = tmp_path / "nbwork"
    work.mkdir()
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(work)}},
    ).execute()
    assert nb.cells[3].outputs[0]["text"].strip() == "tfk8s job form-nb: succeeded"
    (form,) = by_class(widget_states(nb), "tfk8s-launched")
    assert form["_dom_classes"]


class Kernel:
    """A real IPython kernel driven as a front end drives it: execute requests, and comm messages for
    widget events (a button click is a ``custom`` message ``{"event": "click"}`` to the button's model)."""

    def __init__(self, cwd: Path) -> None:
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3", cwd=str(cwd))
        self.updates: list[dict] = []  # every widget state update the kernel sent (comm_msg "update")

    def _drain(self, parent_id: str | None, timeout: float = 120) -> str:
        out = []
        while True:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            kind, content = msg["msg_type"], msg["content"]
            if kind == "comm_msg" and content["data"].get("method") == "update":
                self.updates.append(content["data"].get("state", {}))
            elif kind == "stream" and msg["parent_header"].get("msg_id") == parent_id:
                out.append(content["text"])
            elif kind == "error" and msg["parent_header"].get("msg_id") == parent_id:
                raise AssertionError("\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                if parent_id is None or msg["parent_header"].get("msg_id") == parent_id:
                    return "".join(out)

    def run(self, code: str) -> str:
        return self._drain(self.kc.execute(code))

    def click(self, model_id: str) -> None:
        data = {"method": "custom", "content": {"event": "click"}}
        msg = self.kc.session.msg("comm_msg", {"comm_id": model_id, "data": data})
        self.kc.shell_channel.send(msg)

    def until(self, expression: str, timeout: float = 60) -> str:
        """Run ``expression`` until it prints something true (not empty/False); what it printed."""
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline:
            out = self.run(f"print({expression})").strip()
            if out not in ("", "False", "None"):
                return out
            time.sleep(0.3)
        raise AssertionError(f"{expression} stayed {out!r} for {timeout} s")

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.mark.timeout(300)
def test_the_panels_minus_button_removes_a_worker_live_and_shows_a_refusal_in_one_sentence(tmp_path, standin):
    """In a real kernel, clicking − in a running parameter-server job's panel (a comm message, as the
    browser sends it) calls job.scale: worker-1 is removed live, the panel says so and counts 1 worker;
    − again asks for 0 workers, and the panel shows the backend's one sentence; + adds the worker back by a
    checkpoint-restart; + and − are disabled once the job has ended."""
    work = tmp_path / "nbwork"
    work.mkdir()
    kernel = Kernel(work)
    try:
        kernel.run(
            "%load_ext tfk8s_jupyter\n%config TFK8s.frontend = 'widgets'\n%config TFK8s.batch_wait = False"
        )
        kernel.run(
            "%%tfk8s_train --ps 1 --workers 2 --name click-scale\nEPOCHS = 40\nSTEPS = 10\nSTEP_SECONDS = 0.1\n"
        )
        kernel.run(
            "job = _tfk8s_job\n"
            "panel = get_ipython().magics_manager.registry['TFK8sMagics'].panels['click-scale'][0]\n"
            "w = panel.workers"
        )
        kernel.until("job.status.phase == 'running' and bool(job.metrics()) and not w.minus.disabled")
        assert kernel.run("print(w.count.value)").strip() == "2"
        minus = kernel.run("print(w.minus.model_id)").strip()
        kernel.click(minus)
        said = kernel.until("'scaled' in w.message.value and w.message.value")
        assert "scaled from 2 to 1 worker(s), live (worker-1 removed)." in said
        assert kernel.run("print(job.status.replica('worker-1').state)").strip() == "removed"
        assert kernel.until("w.count.value == '1' and not w.minus.disabled") == "True"
        # what the browser was sent: the message, the count
        assert any("worker-1 removed" in str(u.get("value", "")) for u in kernel.updates)
        assert {"value": "1"} in kernel.updates
        kernel.click(minus)
        refusal = kernel.until("'b02a37' in w.message.value and w.message.value")
        assert "Traceback" not in refusal and refusal.count(". ") <= 1 and "0" in refusal, refusal
        assert kernel.run("print(job.status.phase)").strip() == "running"  # refused: nothing changed
        # + adds the worker back by a checkpoint-restart, under way when the panel says so
        kernel.until("not w.plus.disabled")
        kernel.click(kernel.run("print(w.plus.model_id)").strip())
        said = kernel.until("'checkpoint-restart' in w.message.value and w.message.value")
        assert "is resizing from 1 to 2 worker(s) by checkpoint-restart" in said, said
        kernel.until("len(job.status.history) == 2 and w.count.value == '2'")
        assert kernel.run("print([h['how'] for h in job.status.history])").strip() == "['live', 'restart']"
        kernel.run("%tfk8s_stop click-scale")
        assert kernel.until("w.minus.disabled and w.plus.disabled") == "True"
    finally:
        kernel.run("_tfk8s_job.stop() if not _tfk8s_job.status.done else None")
        kernel.close()
