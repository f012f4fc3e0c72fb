"""The JupyterLab side panel and the notebook integration in a real browser (Debian chromium + Playwright).

Each test starts its own JupyterLab (``lab`` fixture) and saves screenshots under ``test-output/browser/``.
Real TensorFlow jobs, kept small: one replica (``mirrored``) where the test is about the panel.
"""

from __future__ import annotations

import json
import re
import shutil
import time

import cells
import nbformat
import pytest
from browser import PANEL_REFRESH_SECONDS, REPO
from local_helpers import tf_keras_cell

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends.local import job_processes, process_alive
from tfk8s_jupyter.records import JobRecord

pytestmark = [pytest.mark.browser, pytest.mark.tf]

ONE_REPLICA = {"strategy": "mirrored", "workers": 1, "ps": 0, "metric_interval": 0.2}
LONG_CELL = cells.TF_KERAS.replace("epochs=3", "epochs=2000")


@pytest.fixture(autouse=True)
def jp_asyncio_loop():
    """Replace pytest-jupyter's per-test loop: Playwright's sync API owns this thread's running loop here.

    These tests drive a JupyterLab subprocess over HTTP and need no in-process server loop; the plugin's
    fixture would pick up Playwright's running loop (after any earlier test had set a loop) and fail to
    close it at teardown.
    """
    yield None


@pytest.fixture(autouse=True)
def jp_server_cleanup():
    """No in-process ServerApp runs in these tests, so pytest-jupyter's cleanup has nothing to do."""
    yield


def test_panel_lists_a_local_job_until_it_succeeds_with_a_sparkline(lab_page, tfk8s_home):
    job = tk.submit(cells.TF_KERAS, name="panel-succeeds", **ONE_REPLICA)
    lab_page.open()
    lab_page.show_jobs_panel()
    row = lab_page.job_row(job.name)
    row.wait_for(timeout=60_000)
    assert row.locator(".tfk8s-job-backend").inner_text() == "local"
    assert row.locator(".tfk8s-job-strategy").inner_text() == "Mirrored"

    assert lab_page.wait_for_phase(job.name, ("succeeded", "failed"), timeout=240) == "succeeded", job.logs()
    lab_page.wait(PANEL_REFRESH_SECONDS + 0.5)  # the refresh after the phase change carries the final points
    assert row.locator(".tfk8s-chip").inner_text() == "Succeeded"
    assert row.locator(".tfk8s-job-counts").inner_text() == "1 succeeded"
    sparkline = row.locator("svg.tfk8s-sparkline")
    points = sparkline.locator("polyline").get_attribute("points").split()
    assert len(points) >= 3 and int(sparkline.get_attribute("data-points")) >= 3
    ys = [float(p.split(",")[1]) for p in points]
    assert ys[-1] > ys[0], "a falling loss is drawn going down (SVG y grows downwards)"
    assert "loss" in row.locator(".tfk8s-job-metric").inner_text()
    lab_page.screenshot("panel")

    # The job view: replicas, the larger curve and the reporting replica's log.
    row.click()
    view = lab_page.page.locator(f"#tfk8s-job-{job.name} .tfk8s-JobDetail")
    view.locator('.tfk8s-lab-replicas tr[data-replica="worker-0"]').wait_for()
    assert "succeeded" in view.locator('tr[data-replica="worker-0"]').inner_text()
    assert int(view.locator("svg.tfk8s-lab-curve").get_attribute("data-points")) >= 3
    lab_page.page.wait_for_function(
        "() => (document.querySelector('.tfk8s-log-view')?.textContent || '').includes('cell done')"
    )
    assert view.locator(".tfk8s-stop").is_disabled()
    lab_page.screenshot("detail")
    # the log reads as a terminal leaves it: each progress bar at its last state on one line, no empty lines
    log = view.locator(".tfk8s-log-view").evaluate("e => e.textContent")
    assert "\r" not in log and "\b" not in log and "\n\n" not in log, log
    # (a bar drawn when a metric point cut in stays on its line, as in a terminal: 1/20, maybe 10/20, 20/20)
    assert re.search(r"Epoch 1/3\n\s*1/20 [^\n]*\n(\s*\d+/20 [^\n]*\n)*20/20 [^\n]*loss", log), log

    # Hidden panel, no requests: the poll stands by while the panel is collapsed.
    lab_page.page.click(
        ".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabCloseIcon"
    )  # close the job view (it polls too)
    lab_page.hide_jobs_panel()
    lab_page.wait(1)
    since = time.monotonic()
    lab_page.wait(6 * PANEL_REFRESH_SECONDS)
    assert lab_page.jobs_requests(since) == 0
    lab_page.show_jobs_panel()
    since = time.monotonic()
    lab_page.wait(3 * PANEL_REFRESH_SECONDS)
    assert lab_page.jobs_requests(since) >= 2

    # Delete, with confirmation: the row goes and so does the record.
    row.click()
    view.locator(".tfk8s-delete").click()
    dialog = lab_page.page.locator(".jp-Dialog")
    assert f"Delete job {job.name}?" in dialog.inner_text()
    lab_page.screenshot("delete-confirmation")
    dialog.locator(".jp-mod-accept").click()
    row.wait_for(state="detached", timeout=30_000)
    assert not JobRecord(job.name, tfk8s_home).exists()
    # the job view closes itself (the list's own poll may drop the row a moment before the view hears back)
    lab_page.page.wait_for_function(f"() => !document.getElementById('tfk8s-job-{job.name}')", timeout=30_000)


def test_stop_from_the_panel_leaves_no_process(lab_page, tfk8s_home):
    job = tk.submit(LONG_CELL, name="panel-stop", **ONE_REPLICA)
    lab_page.open()
    lab_page.show_jobs_panel()
    lab_page.job_row(job.name).wait_for(timeout=60_000)
    deadline = time.monotonic() + 240
    while not job.metrics() and time.monotonic() < deadline:  # training, not just importing TensorFlow
        assert not job.status.done, job.logs()
        time.sleep(0.5)
    assert lab_page.wait_for_phase(job.name, ("running",), timeout=30) == "running"
    record = JobRecord(job.name, tfk8s_home)
    pids = [r.pid for r in job.status.replicas if r.pid] + [pid for _, pid, _ in job_processes(record)]
    assert pids and all(process_alive(p) for p in pids[:1])

    lab_page.job_row(job.name).click()
    view = lab_page.page.locator(f"#tfk8s-job-{job.name} .tfk8s-JobDetail")
    view.locator(".tfk8s-stop").wait_for()
    lab_page.page.wait_for_function(
        f"() => !document.querySelector('#tfk8s-job-{job.name} .tfk8s-stop').disabled"
    )
    lab_page.screenshot("running")
    view.locator(".tfk8s-stop").click()

    assert lab_page.wait_for_phase(job.name, ("stopped",), timeout=90) == "stopped"
    view.locator('.tfk8s-chip[data-phase="stopped"]').wait_for(timeout=30_000)
    assert view.locator(".tfk8s-stop").is_disabled()
    status = job.status
    assert status.phase == "stopped"
    assert all(r.state in ("stopped", "succeeded", "failed") for r in status.replicas)
    leftovers = [(what, pid) for what, pid, ticks in job_processes(record) if process_alive(pid, ticks)]
    assert leftovers == []
    assert not any(process_alive(p) for p in pids)
    lab_page.screenshot("stopped")


def write_notebook(path, sources: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)


def test_train_this_cell_button_shows_the_live_panel_under_the_cell(lab_page, lab, tfk8s_home):
    write_notebook(lab.root / "train.ipynb", [cells.TF_KERAS])
    lab_page.open_notebook("train.ipynb")
    page = lab_page.page
    cell = page.locator(".jp-NotebookPanel .jp-CodeCell").first
    cell.locator(".jp-InputArea-editor").click()

    # Also offered in the cell's context menu.
    cell.locator(".jp-InputArea-editor").click(button="right")
    item = page.locator(".lm-Menu-itemLabel", has_text="Train this cell on the cluster")
    item.wait_for()
    page.keyboard.press("Escape")
    item.wait_for(state="hidden")

    page.click(".jp-NotebookPanel-toolbar .tfk8s-train-button")
    form = page.locator(".jp-Dialog .tfk8s-TrainForm")
    form.wait_for()
    # the dialog starts from the configured defaults (TFK8s.ps = 0, workers = 2), as the magics do
    assert form.locator('input[name="ps"]').input_value() == "0"
    assert form.locator('input[name="workers"]').input_value() == "2"
    form.locator('select[name="strategy"]').select_option("mirrored")
    form.locator('input[name="ps"]').fill("0")
    form.locator('input[name="workers"]').fill("1")
    form.locator('select[name="backend"]').select_option("local")
    lab_page.screenshot("form")
    page.click(".jp-Dialog .jp-mod-accept")

    job_panel = cell.locator(".jp-OutputArea .tfk8s-job-panel")
    job_panel.wait_for(timeout=60_000)
    badge = job_panel.locator(".tfk8s-status-badge")
    page.wait_for_function(
        """() => /succeeded|failed|stopped/.test(
              document.querySelector('.jp-CodeCell .tfk8s-status-badge')?.textContent || '')""",
        timeout=240_000,
    )
    lab_page.screenshot("cell-panel")
    assert "succeeded" in badge.inner_text().lower()
    assert job_panel.locator(".tfk8s-replica-table").count() == 1

    # The cell became a training cell: its first line is the magic with the chosen flags (a later
    # Shift+Enter trains the same way), its prompt has an execution count, and the job is in the side panel.
    source = page.evaluate(
        "() => document.querySelector('.jp-NotebookPanel .jp-CodeCell .cm-content').innerText"
    )
    assert source.startswith("%%tfk8s_train --strategy mirrored") and "import tensorflow as tf" in source
    assert re.search(r"\[\d+\]", cell.locator(".jp-InputPrompt").inner_text())
    lab_page.show_jobs_panel()
    jobs = lab.api("GET", "/tfk8s/api/jobs")["jobs"]
    assert len(jobs) == 1 and jobs[0]["strategy"] == "mirrored" and jobs[0]["phase"] == "succeeded"
    lab_page.job_row(jobs[0]["name"]).wait_for(timeout=30_000)
    lab_page.screenshot("cell-and-side-panel")

    # After a kernel restart the old panel says it no longer updates and how to follow the job again,
    # and its Stop cannot act.
    page.locator(".lm-MenuBar-itemLabel", has_text="Kernel").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Restart Kernel…").first.click()
    page.locator(".jp-Dialog .jp-mod-accept").click()
    note = job_panel.locator(".tfk8s-stale-note")
    note.wait_for(timeout=60_000)
    assert f"%tfk8s_attach {jobs[0]['name']} follows the job again" in note.inner_text()
    assert badge.inner_text().lower() == "last known: succeeded"
    assert job_panel.locator("button.tfk8s-stop-button").is_disabled()
    job_panel.scroll_into_view_if_needed()
    lab_page.screenshot("cell-panel-after-kernel-restart")


def curve_points(page) -> int:
    """Points of the longest line the bqplot curve of the notebook's live panel draws."""
    return page.evaluate(
        """() => Math.max(0, ...Array.from(
              document.querySelectorAll('.tfk8s-job-panel .tfk8s-curve path.line'))
              .map(p => ((p.getAttribute('d') || '').match(/[ML]/g) || []).length))"""
    )


def test_quickstart_notebook_shows_a_curve_and_a_replica_table(lab_page, lab, tfk8s_home):
    src = REPO / "notebooks"
    quickstart = src / "quickstart.ipynb"
    assert quickstart.exists(), "notebooks/quickstart.ipynb is missing"
    for f in src.iterdir():
        if f.suffix in (".ipynb", ".py"):
            shutil.copy(f, lab.root / f.name)
    lab_page.open_notebook("quickstart.ipynb")
    page = lab_page.page
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

    job_panel = page.locator(".tfk8s-job-panel").first
    job_panel.wait_for(timeout=120_000)
    page.wait_for_function(
        """() => /succeeded|failed|stopped/.test(
              document.querySelector('.tfk8s-job-panel .tfk8s-status-badge')?.textContent || '')""",
        timeout=300_000,
    )
    time.sleep(1)  # the panel's last throttled update
    lab_page.screenshot("quickstart")
    assert "succeeded" in job_panel.locator(".tfk8s-status-badge").inner_text().lower()
    assert curve_points(page) >= 3
    table = job_panel.locator(".tfk8s-replica-table")
    assert table.count() == 1
    text = table.inner_text()
    assert "chief" in text and "worker" in text and "ps" in text
    job_panel.scroll_into_view_if_needed()
    lab_page.screenshot("quickstart-panel")
    jobs = lab.api("GET", "/tfk8s/api/jobs")["jobs"]
    assert jobs and jobs[0]["phase"] == "succeeded", json.dumps(jobs)[:500]


def test_job_view_shows_the_backend_notes_and_each_resize(lab_page, tfk8s_home):
    """A job's one-line notes (e.g. no storage on Kubernetes) and its resize history, in the side panel."""
    from labjobs import write_record

    from tfk8s_jupyter.config import current_owner

    record = write_record(tfk8s_home, "noted-job", owner=current_owner(), workers=3)
    status = record.read_status()
    status["notes"] = [
        "no storage: this job's checkpoints, model and TensorBoard logs will not survive its pods"
    ]
    status["history"] = [
        {"time": time.time() - 30, "from": 3, "to": 2, "how": "live", "removed": ["worker-2"]}
    ]
    record.write_status(status)
    lab_page.open()
    lab_page.show_jobs_panel()
    row = lab_page.job_row("noted-job")
    row.wait_for(timeout=60_000)
    row.click()
    view = lab_page.page.locator("#tfk8s-job-noted-job .tfk8s-JobDetail")
    view.locator(".tfk8s-detail-note").wait_for(timeout=30_000)
    assert view.locator(".tfk8s-detail-note").inner_text().startswith("no storage: this job's checkpoints")
    assert view.locator(".tfk8s-detail-resize").inner_text().startswith("resized 3 → 2 workers (live)")
    tensorboard = view.locator(".tfk8s-tensorboard")  # no TensorBoard logs: the button says so and cannot act
    assert tensorboard.is_disabled() and "no TensorBoard logs" in (tensorboard.get_attribute("title") or "")
    lab_page.screenshot("detail-notes")


def tensorboard_pids(job_name: str) -> list[int]:
    """Running TensorBoard servers (their info files, as ``tensorboard.manager`` keeps them) showing a job."""
    import base64

    from tensorboard import manager as tb_manager

    return [
        info.pid
        for info in tb_manager.get_all()
        if f"{job_name}:" in base64.b64decode(info.cache_key).decode(errors="replace")
    ]


def test_tfk8s_tensorboard_renders_inline_and_stops_with_the_kernel(lab_page, lab, tfk8s_home):
    job = tk.submit(cells.TF_KERAS, name="tb-inline", **ONE_REPLICA)
    assert job.wait(timeout=240) == "succeeded", job.logs()
    assert job.tensorboard_dirs(), "a fit job writes TensorBoard logs"
    write_notebook(lab.root / "tb.ipynb", ["%load_ext tfk8s_jupyter", f"%tfk8s_tensorboard {job.name}"])
    lab_page.open_notebook("tb.ipynb")
    page = lab_page.page
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

    iframe = page.locator(".jp-OutputArea iframe").first
    iframe.wait_for(timeout=120_000)
    src = iframe.get_attribute("src") or ""
    assert src.startswith("http://127.0.0.1:") or src.startswith("http://localhost:"), src
    frame = page.frame_locator(".jp-OutputArea iframe").first
    frame.locator("tb-webapp").wait_for(state="attached", timeout=60_000)
    # TensorBoard lists the job as a run (its logdir_spec names runs after jobs) and draws its scalars.
    frame.get_by_text(f"{job.name}/fit-0/train").first.wait_for(timeout=60_000)
    frame.get_by_text("epoch_loss").first.wait_for(timeout=60_000)
    tb_frame = next(f for f in page.frames if f.url.startswith(src.split("#")[0].rstrip("/")))
    assert tb_frame.title() == "TensorBoard"
    iframe.scroll_into_view_if_needed()
    lab_page.screenshot("tensorboard-inline")

    pids = tensorboard_pids(job.name)
    assert pids and all(process_alive(p) for p in pids)
    for kernel in lab.api("GET", "/api/kernels"):
        lab.api("DELETE", f"/api/kernels/{kernel['id']}")
    deadline = time.monotonic() + 30
    while any(process_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(process_alive(p) for p in pids), "TensorBoard outlived the kernel that started it"


def test_job_view_tensorboard_button_shows_tensorboard_below_the_curve(lab_page, lab, tfk8s_home):
    job = tk.submit(cells.TF_KERAS, name="tb-panel", **ONE_REPLICA)
    assert job.wait(timeout=240) == "succeeded", job.logs()
    lab_page.open()
    lab_page.show_jobs_panel()
    row = lab_page.job_row(job.name)
    row.wait_for(timeout=60_000)
    row.click()
    page = lab_page.page
    view = page.locator(f"#tfk8s-job-{job.name} .tfk8s-JobDetail")
    button = view.locator(".tfk8s-tensorboard")
    button.wait_for()
    page.wait_for_function(
        f"() => !document.querySelector('#tfk8s-job-{job.name} .tfk8s-tensorboard').disabled", timeout=30_000
    )
    button.click()

    iframe = view.locator("iframe.tfk8s-tensorboard-frame")
    iframe.wait_for(timeout=120_000)
    assert (iframe.get_attribute("src") or "").startswith("http://127.0.0.1:")
    frame = page.frame_locator(f"#tfk8s-job-{job.name} iframe.tfk8s-tensorboard-frame")
    frame.locator("tb-webapp").wait_for(state="attached", timeout=60_000)
    frame.get_by_text(f"{job.name}/fit-0/train").first.wait_for(timeout=60_000)
    frame.get_by_text("epoch_loss").first.wait_for(timeout=60_000)
    iframe.scroll_into_view_if_needed()
    lab_page.screenshot("detail-tensorboard")

    # A second click reuses the same server.
    pids = tensorboard_pids(job.name)
    assert len(pids) == 1 and process_alive(pids[0])
    page.wait_for_function(
        f"() => !document.querySelector('#tfk8s-job-{job.name} .tfk8s-tensorboard').disabled", timeout=30_000
    )
    button.click()
    view.locator("iframe.tfk8s-tensorboard-frame").wait_for(timeout=60_000)
    assert tensorboard_pids(job.name) == pids

    lab.stop()  # the Jupyter server stops its TensorBoard with it
    assert not process_alive(pids[0]), "TensorBoard outlived the Jupyter server that started it"


def detail_replica_state(view, replica: str) -> str:
    return view.locator(f'.tfk8s-lab-replicas tr[data-replica="{replica}"] td').nth(1).inner_text()


@pytest.mark.timeout(1200)
def test_job_view_resizes_a_running_ps_job_with_minus_and_plus(lab_page, tfk8s_home):
    """−: worker-2 is removed live and the job runs on; +: the backend adds a worker or refuses in its own
    sentence, shown in the view."""
    job = tk.submit(
        tf_keras_cell(epochs=400, steps=30, step_sleep=0.05),
        ps=1,
        workers=3,
        name="panel-resize",
        setup_timeout=240,
        metric_interval=0.5,
    )
    try:
        deadline = time.monotonic() + 300
        while not (job.status.phase == "running" and job.metrics()) and time.monotonic() < deadline:
            assert not job.status.done, job.logs()
            time.sleep(0.5)
        assert job.metrics(), "the PS job never reported a metric point"
        lab_page.open()
        lab_page.show_jobs_panel()
        row = lab_page.job_row(job.name)
        row.wait_for(timeout=60_000)
        row.click()
        page = lab_page.page
        view = page.locator(f"#tfk8s-job-{job.name} .tfk8s-JobDetail")
        minus, plus = view.locator(".tfk8s-workers-minus"), view.locator(".tfk8s-workers-plus")
        count = view.locator(".tfk8s-workers-count")
        view.locator('.tfk8s-lab-replicas tr[data-replica="worker-2"]').wait_for(timeout=30_000)
        page.wait_for_function(
            f"() => !document.querySelector('#tfk8s-job-{job.name} .tfk8s-workers-minus').disabled",
            timeout=30_000,
        )
        assert count.inner_text() == "3" and not plus.is_disabled()
        lab_page.screenshot("resize-before")

        minus.click()
        message = view.locator(".tfk8s-resize-message")
        page.wait_for_function(
            f"""() => Array.from(document.querySelectorAll(
                  '#tfk8s-job-{job.name} .tfk8s-lab-replicas tr[data-replica="worker-2"] td'))[1]
                  ?.textContent === 'removed'""",
            timeout=60_000,
        )
        assert detail_replica_state(view, "worker-1") == "running"
        assert view.locator('.tfk8s-chip[data-phase="running"]').count() == 1
        view.locator(".tfk8s-detail-resize").wait_for(timeout=30_000)
        assert (
            view.locator(".tfk8s-detail-resize").first.inner_text().startswith("resized 3 → 2 workers (live)")
        )
        page.wait_for_function(
            f"() => document.querySelector('#tfk8s-job-{job.name} .tfk8s-workers-count').textContent === '2'",
            timeout=30_000,
        )
        assert message.inner_text() == ""  # applied: no error
        status = job.status
        assert status.phase == "running" and status.replica("worker-2").state == "removed"
        lab_page.screenshot("resize-removed")

        page.wait_for_function(
            f"() => !document.querySelector('#tfk8s-job-{job.name} .tfk8s-workers-plus').disabled",
            timeout=30_000,
        )
        history_before = len(job.status.history)
        plus.click()
        # The backend adds the worker by a checkpoint-restart, or refuses in its own sentence.
        page.wait_for_function(
            f"""() => ['done', 'refused'].includes(
                  document.querySelector('#tfk8s-job-{job.name} .tfk8s-resize-message').dataset.state)""",
            timeout=120_000,
        )
        lab_page.screenshot("resize-plus")
        if message.get_attribute("data-state") == "refused":
            refusal = message.inner_text()
            # the backend's own sentence, as the REST API gave it, not a generic error
            assert refusal.startswith(f"job {job.name} ") and refusal.endswith("."), refusal
            assert "409" not in refusal and "Conflict" not in refusal and refusal.count(". ") == 0, refusal
            assert "tfk8s-error" in (message.get_attribute("class") or "")
            assert count.inner_text() == "2"
            status = job.status
            assert status.phase == "running" and len(status.history) == history_before
            assert status.replica("worker-2").state == "removed"
        else:  # accepted: once the new shape runs, the history says so and worker-2 is back
            deadline = time.monotonic() + 480
            while len(job.status.history) == history_before and time.monotonic() < deadline:
                assert not job.status.done, job.status.message
                lab_page.wait(1)
            assert job.status.history[-1]["to"] == 3, job.status.history
            view.locator(".tfk8s-detail-resize").nth(1).wait_for(timeout=60_000)
            page.wait_for_function(
                f"() => document.querySelector('#tfk8s-job-{job.name} .tfk8s-workers-count').textContent === '3'",
                timeout=60_000,
            )
            assert detail_replica_state(view, "worker-2") != "removed"
            # the line saying the restart was under way gives way to the history's
            page.wait_for_function(
                f"() => document.querySelector('#tfk8s-job-{job.name} .tfk8s-resize-message').textContent === ''",
                timeout=30_000,
            )
            # the curve marks where the new shape took over from the checkpoint
            mark = view.locator("svg.tfk8s-lab-curve line.tfk8s-curve-resize")
            mark.first.wait_for(state="attached", timeout=30_000)
            entry = job.status.history[-1]
            assert int(mark.first.get_attribute("data-x")) == entry["step"], entry
            lab_page.screenshot("resize-added")
    finally:
        job.stop()
    # A stopped job cannot be resized: both buttons off.
    page.wait_for_function(
        f"() => document.querySelector('#tfk8s-job-{job.name} .tfk8s-workers-plus').disabled",
        timeout=60_000,
    )
    assert minus.is_disabled()


def test_job_view_shows_the_backends_refusal_in_its_own_sentence(lab_page, tfk8s_home):
    """A resize the backend cannot apply (here: the job's supervisor never answers): while it is on its way
    both buttons are off and the view says so; then the backend's sentence is shown as is."""
    from labjobs import attach_sleeping_supervisor, write_record

    from tfk8s_jupyter.config import current_owner

    record = write_record(tfk8s_home, "stuck-resize", phase="running", owner=current_owner(), workers=3)
    sleeper = attach_sleeping_supervisor(record)
    try:
        lab_page.open()
        lab_page.show_jobs_panel()
        row = lab_page.job_row("stuck-resize")
        row.wait_for(timeout=60_000)
        row.click()
        page = lab_page.page
        view = page.locator("#tfk8s-job-stuck-resize .tfk8s-JobDetail")
        minus, plus = view.locator(".tfk8s-workers-minus"), view.locator(".tfk8s-workers-plus")
        page.wait_for_function(
            "() => !document.querySelector('#tfk8s-job-stuck-resize .tfk8s-workers-minus').disabled",
            timeout=30_000,
        )
        assert view.locator(".tfk8s-workers-count").inner_text() == "3"
        minus.click()
        message = view.locator(".tfk8s-resize-message")
        # the supervisor is given 20 s to apply it: time enough to see the resize in flight
        assert message.inner_text() == "resizing 3 → 2 workers…"
        assert minus.is_disabled() and plus.is_disabled()
        assert "in progress" in (plus.get_attribute("title") or "")
        lab_page.screenshot("resize-in-flight")
        page.wait_for_function(
            "() => document.querySelector('#tfk8s-job-stuck-resize .tfk8s-resize-message').dataset.state"
            " === 'refused'",
            timeout=120_000,
        )
        refusal = message.inner_text()
        assert "job stuck-resize" in refusal and refusal.endswith("."), refusal
        assert "400" not in refusal and "Bad Request" not in refusal, refusal
        assert "tfk8s-error" in (message.get_attribute("class") or "")
        assert detail_replica_state(view, "worker-2") == "running"  # nothing changed
        assert view.locator(".tfk8s-detail-resize").count() == 0
        page.wait_for_function(
            "() => !document.querySelector('#tfk8s-job-stuck-resize .tfk8s-workers-minus').disabled",
            timeout=30_000,
        )
        assert not (record.dir / "scale.request").exists()  # the request left nothing behind
        lab_page.screenshot("resize-refused")
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.fixture
def lab_kubeconfig(tmp_path, monkeypatch):
    """The in-repo test API server, and a kubeconfig for the JupyterLab the test starts after this."""
    from labjobs import start_test_cluster

    server = start_test_cluster(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield server
    server.stop()


@pytest.mark.k8s
def test_check_cluster_in_the_side_panel_shows_the_preflight_table(lab_kubeconfig, lab_page):
    lab_page.open()
    panel = lab_page.show_jobs_panel()
    page = lab_page.page
    check = panel.locator(".tfk8s-check")
    check.locator("summary").click()
    form = check.locator(".tfk8s-check-form")
    form.wait_for()
    result = check.locator(".tfk8s-check-result")

    def run(**fields) -> str:
        for name in ("context", "namespace", "image", "gpus"):
            form.locator(f'input[name="{name}"]').fill(str(fields.get(name, "")))
        form.locator(".tfk8s-check-run").click()
        page.wait_for_function(
            "() => ['ready', 'problems', 'error'].includes("
            "document.querySelector('.tfk8s-check-result').dataset.state)",
            timeout=120_000,
        )
        return result.get_attribute("data-state")

    def marks() -> dict[str, str]:
        rows = result.locator(".tfk8s-check-table tr")
        return {
            rows.nth(i).get_attribute("data-check"): rows.nth(i).get_attribute("data-mark")
            for i in range(rows.count())
        }

    # All green in the current context: a ✓ row per check, and the summary says ready.
    assert run(gpus=2) == "ready"
    assert marks()["namespace"] == "✓" and marks()["permissions"] == "✓" and marks()["GPUs"] == "✓"
    assert result.locator(".tfk8s-check-summary").inner_text().endswith("ready.")
    lab_page.screenshot("check-ready")

    # More GPUs than any node has: that row is ✗ with one sentence, the others still ✓.
    assert run(namespace="team", gpus=8) == "problems"
    assert marks()["GPUs"] == "✗" and marks()["namespace"] == "✓"
    gpus = result.locator('.tfk8s-check-table tr[data-check="GPUs"] .tfk8s-check-message').inner_text()
    assert "8" in gpus and gpus.endswith(".") and gpus.count(". ") == 0, gpus
    assert "✗ GPUs" in result.locator(".tfk8s-check-summary").inner_text()
    lab_page.screenshot("check-problem")

    # A context the kubeconfig does not have: the one sentence, no table.
    assert run(context="nope") == "error"
    error = result.locator(".tfk8s-check-error").inner_text()
    assert "nope" in error and error.endswith(".") and result.locator(".tfk8s-check-table").count() == 0
    # A GPU count that is not one: said in the form's own sentence, nothing asked of the cluster.
    asked = len([e for e in lab_kubeconfig.request_log if e["resource"] == "selfsubjectaccessreviews"])
    assert run(gpus="two") == "error"
    assert result.locator(".tfk8s-check-error").inner_text().startswith('gpus="two" is not a number of GPUs')
    assert (
        len([e for e in lab_kubeconfig.request_log if e["resource"] == "selfsubjectaccessreviews"]) == asked
    )
    lab_page.screenshot("check-error")
