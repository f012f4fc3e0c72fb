"""The cell's job panel as a user reads it in a real JupyterLab (Debian chromium + Playwright), screenshotted
at the four moments that matter: mid-run, after success, after a kernel restart and after reopening the
saved notebook. Each screenshot is saved under ``test-output/browser/`` and the test asserts on the text
the page shows at that moment (state words, the last loss, how to follow the job again).
"""

from __future__ import annotations

import re
import time

import cells
import nbformat
import pytest

from tfk8s_jupyter.api import backend_for
from tfk8s_jupyter.display_text import format_value
from tfk8s_jupyter.job_magics import job_details

pytestmark = [pytest.mark.browser, pytest.mark.tf]

NAME = "shots"
# One replica, about 20 s of training after start-up: long enough to be seen running.
SLOW_CELL = "import time\n" + cells.TF_KERAS.replace(
    "history = model.fit(ds, epochs=3, steps_per_epoch=20)",
    "history = model.fit(ds, epochs=20, steps_per_epoch=20, callbacks=[\n"
    "    tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: time.sleep(1))])",
)


@pytest.fixture(autouse=True)
def jp_asyncio_loop():
    """Playwright's sync API owns this thread's loop; these tests need no in-process server loop."""
    yield None


@pytest.fixture(autouse=True)
def jp_server_cleanup():
    yield


def text(locator) -> str:
    return re.sub(r"\s+", " ", locator.inner_text())


def test_the_cell_panel_mid_run_after_success_after_a_kernel_restart_and_reopened(lab_page, lab, tfk8s_home):
    assert "model.fit(ds, epochs=20" in SLOW_CELL
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext tfk8s_jupyter"),
        nbformat.v4.new_code_cell(
            f"%%tfk8s_train --strategy mirrored --workers 1 --ps 0 --name {NAME}\n{SLOW_CELL}"
        ),
    ]
    path = lab.root / "shots.ipynb"
    nbformat.write(nb, path)
    lab_page.open_notebook("shots.ipynb")
    page = lab_page.page
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

    cell = page.locator(".jp-NotebookPanel .jp-CodeCell").nth(1)
    panel = cell.locator(".jp-OutputArea .tfk8s-job-panel")
    panel.wait_for(timeout=120_000)
    badge = panel.locator(".tfk8s-status-badge")
    header = panel.locator(".tfk8s-header")

    # 1. mid-run: the state word, the epoch and the loss so far, a curve, −/+ and Stop enabled
    page.wait_for_function(
        """() => { const p = document.querySelectorAll('.jp-CodeCell')[1];
                   const h = p && p.querySelector('.tfk8s-job-panel .tfk8s-header');
                   const b = p && p.querySelector('.tfk8s-job-panel .tfk8s-status-badge');
                   return h && b && b.textContent === 'running' && /epoch [2-9]/.test(h.textContent)
                          && /loss \\d/.test(h.textContent); }""",
        timeout=240_000,
    )
    panel.scroll_into_view_if_needed()
    lab_page.screenshot("mid-run")
    assert text(badge) == "running"
    said = text(header)
    # how the replica started, then the run's progress
    assert re.search(
        r"local · mirrored · (cold|warm) start · elapsed .* · epoch \d+ · step \d+ · loss \d", said
    ), said
    assert int(panel.locator(".tfk8s-points").get_attribute("data-points")) >= 10  # the first steps, dense
    assert not panel.locator("button.tfk8s-stop-button").is_disabled()
    assert not panel.locator("button.tfk8s-workers-minus").is_disabled()
    assert text(panel.locator(".tfk8s-workers-count")) == "1"
    snapshot = cell.locator(".tfk8s-snapshot")
    assert f"%tfk8s_attach {NAME} shows the live panel again" in text(snapshot)

    # 2. after success: the badge, the summary with the last loss the job reported, nothing left to act on
    page.wait_for_function(
        """() => /succeeded|failed|stopped/.test(
              document.querySelectorAll('.jp-CodeCell')[1]
                ?.querySelector('.tfk8s-status-badge')?.textContent || '')""",
        timeout=300_000,
    )
    summary = cell.locator(".tfk8s-summary")
    summary.wait_for(timeout=30_000)
    lab_page.wait(1.5)  # the panel's last throttled update
    panel.scroll_into_view_if_needed()
    lab_page.screenshot("succeeded")
    assert text(badge) == "succeeded"
    last_loss = job_details(backend_for("local"), NAME)["loss"]
    final = text(cell.locator(".jp-OutputArea"))
    assert f"tfk8s job {NAME}: succeeded after" in final
    assert f"loss={format_value(last_loss)}" in final, final
    assert "reached epoch 20, step 400" in final
    assert f"loss {format_value(last_loss)}" in text(header)
    assert panel.locator("button.tfk8s-stop-button").is_disabled()
    assert panel.locator("button.tfk8s-workers-minus").is_disabled()
    assert panel.locator("button.tfk8s-workers-plus").is_disabled()
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while "tfk8s-summary" not in path.read_text() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert "tfk8s-summary" in path.read_text(), "the notebook was not saved with its summary"

    # 3. after a kernel restart: the last known state, Stop disabled, how to follow the job again
    page.locator(".lm-MenuBar-itemLabel", has_text="Kernel").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Restart Kernel…").first.click()
    page.locator(".jp-Dialog .jp-mod-accept").click()
    note = panel.locator(".tfk8s-stale-note")
    note.wait_for(timeout=60_000)
    lab_page.wait_kernel_idle()
    panel.scroll_into_view_if_needed()
    lab_page.screenshot("after-kernel-restart")
    assert f"%tfk8s_attach {NAME} follows the job again" in text(note)
    assert text(badge) == "last known: succeeded"
    assert panel.locator("button.tfk8s-stop-button").is_disabled()
    assert f"loss={format_value(last_loss)}" in text(cell.locator(".jp-OutputArea"))

    # 4. reopened: a new page and a new kernel; the saved summary says the result and the way back
    for session in lab.api("GET", "/api/sessions"):
        lab.api("DELETE", f"/api/sessions/{session['id']}")
    lab_page.open_notebook("shots.ipynb")
    cell = page.locator(".jp-NotebookPanel .jp-CodeCell").nth(1)
    outputs = cell.locator(".jp-OutputArea")
    cell.locator(".tfk8s-summary").wait_for(timeout=60_000)
    # the panel's placeholder, which no kernel will draw, is hidden beside the summary
    cell.locator(".jp-OutputArea-child.tfk8s-undrawn-panel").wait_for(state="attached", timeout=10_000)
    outputs.scroll_into_view_if_needed()
    lab_page.screenshot("reopened")
    reopened = text(outputs)
    assert f"tfk8s job {NAME}: succeeded after" in reopened
    assert f"loss={format_value(last_loss)}" in reopened
    assert f"%tfk8s_attach {NAME} shows the live panel again" in reopened
    # the panel no kernel draws any more leaves no "Loading widget..." above the saved summary
    assert "Loading widget" not in reopened and "Error displaying widget" not in reopened, reopened
    assert cell.locator(".tfk8s-job-panel button.tfk8s-stop-button:enabled").count() == 0
