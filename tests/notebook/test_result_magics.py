"""``%tfk8s_model`` and ``%tfk8s_tensorboard`` in a real kernel (jupyter_client), on real TensorFlow jobs of
the local backend: the model lands in a variable, TensorBoard shows inline through its own notebook
integration, listens on 127.0.0.1 only and is gone when the kernel ends."""

from __future__ import annotations

import os
import re
import textwrap
import time
from pathlib import Path

import pytest
from jupyter_client import KernelManager
from local_helpers import tf_keras_cell

from tfk8s_jupyter.backends.local import process_alive
from tfk8s_jupyter.records import JobRecord
from tfk8s_jupyter.result_magics import logdir_spec

REPO = Path(__file__).resolve().parents[2]


class Kernel:
    """A real IPython kernel with ``%load_ext tfk8s_jupyter`` done; :meth:`run` returns a cell's outputs."""

    def __init__(self, cwd: Path, ipython_dir: Path):
        env = {**os.environ, "IPYTHONDIR": str(ipython_dir), "PYTHONPATH": str(REPO)}
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd), env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        self.pid = self.km.provisioner.pid
        self.run("%load_ext tfk8s_jupyter")

    def run(self, code: str, timeout: float = 600, interactive: bool = False) -> dict:
        """``{"text": stdout+stderr, "error": "ename: evalue" or None, "displays": [data bundles]}``;
        ``interactive``: as JupyterLab sends it (``allow_stdin``), else as a batch run (nbclient)."""
        out = {"text": "", "error": None, "displays": []}

        def hook(msg):
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out["text"] += content["text"]
            elif kind in ("display_data", "update_display_data", "execute_result"):
                out["displays"].append(content["data"])
            elif kind == "error":
                out["error"] = f"{content['ename']}: {content['evalue']}"

        self.kc.execute_interactive(
            textwrap.dedent(code), timeout=timeout, output_hook=hook, allow_stdin=interactive
        )
        # IPython shows a magic's UsageError on stderr (no traceback), not as an error reply.
        usage = [line for line in out["text"].splitlines() if line.startswith("UsageError: ")]
        if usage and out["error"] is None:
            out["error"] = usage[-1]
        return out

    def shutdown(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


@pytest.fixture
def kernel(tmp_path, tfk8s_home):
    work = tmp_path / "nb"
    work.mkdir()
    # The stand-in runner's profile when the test asked for it (its startup file installs the hooks).
    ipython_dir = Path(os.environ.get("IPYTHONDIR") or tmp_path / "ipython-kernel")
    ipython_dir.mkdir(exist_ok=True)
    k = Kernel(work, ipython_dir)
    yield k
    if k.km.is_alive():
        k.shutdown()


def _listening_addresses(port: int) -> set[str]:
    """The IPv4/IPv6 addresses some process listens on at TCP ``port`` (from ``/proc/net/tcp*``)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":
                found.add(address)
    return found


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def test_logdir_spec_names_each_run_after_its_job():
    assert logdir_spec({"a": ["/r/a/artifacts/tensorboard"], "b": ["/r/b/tb/train", "/r/b/tb/eval"]}) == (
        "a:/r/a/artifacts/tensorboard,b/train:/r/b/tb/train,b/eval:/r/b/tb/eval"
    )


def test_bad_requests_say_what_to_do_in_one_sentence(standin, kernel, tfk8s_home):
    out = kernel.run("%tfk8s_model nosuch")
    assert out["error"] == (
        "UsageError: there is no local job named 'nosuch'; %tfk8s_jobs lists your jobs (add --backend for "
        "another backend)."
    )
    out = kernel.run("%%tfk8s_train --workers 1 --name quick --wait --no-panel\nEPOCHS = 1\nSTEPS = 2")
    assert out["error"] is None, out
    out = kernel.run("%tfk8s_model quick 2x")
    assert out["error"] == "UsageError: '2x' is not a Python variable name; use one like model."
    out = kernel.run("%tfk8s_tensorboard quick")
    assert out["error"].startswith("UsageError: job 'quick' has no TensorBoard logs yet"), out
    assert [r.name for r in JobRecord.all(tfk8s_home)] == ["quick"]


@pytest.mark.tf
@pytest.mark.timeout(900)
def test_model_lands_in_a_variable_and_tensorboard_shows_inline_then_stops_with_the_kernel(kernel):
    cell = tf_keras_cell(epochs=3, steps=30)
    out = kernel.run(f"%%tfk8s_train --ps 1 --workers 1 --name trained --wait\n{cell}")
    assert out["error"] is None, out
    final = [
        d["text/plain"] for d in out["displays"] if "tfk8s job trained: succeeded" in d.get("text/plain", "")
    ]
    assert final and re.search(
        r"\n  model saved: [\d.]+ kB in [\d.]+ s — job.model\(\) loads it", final[-1]
    ), out

    out = kernel.run("%tfk8s_model trained net")
    assert out["error"] is None, out
    line = out["text"].strip()
    assert line.startswith("tfk8s: net = the model of job trained (") and " loaded in " in line, line
    out = kernel.run("print(type(net).__module__.split('.')[0], net.count_params())")
    assert out["text"].split() == ["tf_keras", str(8 * 16 + 16 + 16 + 1)]

    out = kernel.run("%tfk8s_tensorboard trained")
    assert out["error"] is None, out
    frames = [d["text/html"] for d in out["displays"] if "tensorboard-frame" in d.get("text/html", "")]
    assert frames, out
    import tensorboard.manager as tb_manager

    (info,) = [i for i in tb_manager.get_all() if _parent(i.pid) == kernel.pid]
    assert f"const port = {info.port};" in frames[-1]
    assert _listening_addresses(info.port) == {"0100007F"}  # 127.0.0.1 only
    assert process_alive(info.pid)

    kernel.shutdown()
    deadline = time.monotonic() + 30
    while process_alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not process_alive(info.pid), "TensorBoard outlived its kernel"


@pytest.mark.k8s
def test_a_kubernetes_job_without_storage_notes_it_and_its_model_is_refused(kube_cluster, kernel):
    out = kernel.run(
        "%%tfk8s_train --backend kubernetes --workers 1 --name nostore --wait\nEPOCHS = 1\nSTEPS = 2"
    )
    assert out["error"] is None, out
    final = [
        d["text/plain"] for d in out["displays"] if "tfk8s job nostore: succeeded" in d.get("text/plain", "")
    ]
    assert final and "\n  note: " in final[-1], out
    out = kernel.run("%tfk8s_model nostore")
    assert out["error"] == (
        "UsageError: job 'nostore' kept no artifacts: it ran without storage, so they went with its pods; "
        "run it again with --storage pvc:CLAIM (or a gs:// / s3:// URI) to keep them."
    )


def test_the_panel_shows_the_jobs_notes_and_its_summary_the_saved_model():
    from tfk8s_jupyter.backends.base import JobStatus
    from tfk8s_jupyter.display_text import Summary
    from tfk8s_jupyter.job_panel import JobPanel
    from tfk8s_jupyter.results import ResultsState

    note = "no storage: checkpoints and model will not survive the pods"
    state = ResultsState("noted")
    state.set_status(JobStatus("noted", "kubernetes", "parameter_server", phase="running", notes=[note]))
    panel = JobPanel(state=state, start=False)
    try:
        panel.render(budget=None)
        assert 'class="tfk8s-note"' in panel.info.value and note in panel.info.value
        state.add_events(
            [
                {
                    "type": "end",
                    "run": "r1",
                    "seq": 1,
                    "status": "succeeded",
                    "artifacts": {
                        "model": {"path": "model/model.keras", "bytes": 1_234_567, "save_seconds": 0.42}
                    },
                }
            ]
        )
        state.set_status(
            JobStatus("noted", "kubernetes", "parameter_server", phase="succeeded", notes=[note])
        )
        text = Summary(state).text
        assert "\n  model saved: 1.2 MB in 0.4 s — job.model() loads it\n" in text
        assert text.endswith(f"\n  note: {note}")
    finally:
        panel.close()


def test_dry_run_shows_where_a_resumed_job_restores_from(shell, capsys, standin, tfk8s_home):
    import tfk8s_jupyter as tk

    earlier = tk.submit("EPOCHS = 1\nSTEPS = 2", workers=1, name="earlier")
    assert earlier.wait(timeout=60) == "succeeded"
    ckpt = tfk8s_home / "earlier" / "artifacts" / "checkpoints"
    backup = ckpt / "fit-0" / "shared"
    backup.mkdir(parents=True, exist_ok=True)
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF")  # where Keras 3's BackupAndRestore writes
    capsys.readouterr()
    shell.run_cell_magic(
        "tfk8s_train", "--workers 1 --resume-from earlier --name again --dry-run", "EPOCHS = 1"
    )
    out = capsys.readouterr().out
    assert f"# resume: TFK8S_RESUME_FROM={ckpt} (job earlier's checkpoints, restored by fit)" in out
    shell.run_cell_magic(
        "tfk8s_train",
        "--backend kubernetes --workers 1 --resume-from earlier --name again --dry-run",
        "EPOCHS = 1",
    )
    out = capsys.readouterr().out
    assert "# resume: TFK8S_RESUME_FROM is resolved at submission: job earlier's checkpoint dir" in out
    # what the submission would refuse, the dry run refuses in the same sentence, creating nothing
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match=r"^resume_from 'nope' names no local job; pass the name"):
        shell.run_cell_magic("tfk8s_train", "--workers 1 --resume-from nope --dry-run", "EPOCHS = 1")
    assert sorted(p.name for p in tfk8s_home.iterdir()) == ["earlier"]
