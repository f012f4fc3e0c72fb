"""A job's results back in the kernel, on the local backend: the trained model, its artifacts, TensorBoard
folders, resuming from a job's checkpoint, and the one sentence each bad request gets (nothing created)."""

from __future__ import annotations

import os
import signal
import sys

import numpy as np
import pytest
from local_helpers import epoch_events, tf_keras_cell, wait_for

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends.local import LocalBackend, process_alive
from tfk8s_jupyter.config import current_config
from tfk8s_jupyter.records import JobRecord
from tfk8s_jupyter.results import ResultsError, download, list_artifacts, load_model
from tfk8s_jupyter.spec import SpecError


def _records(home) -> list[str]:
    return [r.name for r in JobRecord.all(home)]


# --------------------------------------------------------------------------- bad input (stand-in runner)
def test_resume_from_an_unknown_job_is_refused_and_creates_nothing(standin, tfk8s_home):
    with pytest.raises(SpecError, match=r"^resume_from 'nope' names no local job; pass the name of an"):
        tk.submit("EPOCHS = 1", workers=1, name="again", resume_from="nope")
    assert _records(tfk8s_home) == []


def test_resume_from_a_job_without_a_checkpoint_is_refused_and_creates_nothing(standin, tfk8s_home):
    broken = tk.submit("raise ValueError('bad data')", workers=1, name="broken")
    assert broken.wait(timeout=60) == "failed"
    with pytest.raises(SpecError, match=r"^job 'broken' has no checkpoint to resume from \(.*\); resume"):
        tk.submit("EPOCHS = 1", workers=1, name="again", resume_from="broken")
    assert _records(tfk8s_home) == ["broken"]


def test_storage_is_refused_for_a_local_job_but_a_configured_default_is_not(standin, tfk8s_home):
    with pytest.raises(SpecError, match=r"^storage 'pvc:data' is for Kubernetes jobs; a local job keeps"):
        tk.submit("EPOCHS = 1", workers=1, name="stored", storage="pvc:data")
    assert _records(tfk8s_home) == []
    config = current_config()
    config.storage = "pvc:data"  # an operator's default for Kubernetes jobs
    try:
        job = tk.submit("EPOCHS = 1\nSTEPS = 2", workers=1, name="plain")
    finally:
        config.storage = None
    assert job.spec.storage is None and job.wait(timeout=60) == "succeeded"


def test_model_of_a_running_failed_or_no_save_model_job_says_why_in_one_sentence(standin, monkeypatch):
    # refusing never imports TensorFlow: an import of it here raises, whatever earlier tests imported
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    running = tk.submit("EPOCHS = 100\nSTEPS = 10\nSTEP_SECONDS = 0.1", workers=1, name="busy")
    wait_for(lambda: running.metrics(), 60, "the first metric point")
    with pytest.raises(ResultsError, match=r"^job 'busy' is still running; its model is saved when"):
        running.model()
    running.stop()
    failed = tk.submit("raise ValueError('bad data')", workers=1, name="broken")
    unsaved = tk.submit("EPOCHS = 1\nSTEPS = 2", workers=1, name="unsaved", save_model=False)
    assert failed.wait(timeout=60) == "failed" and unsaved.wait(timeout=60) == "succeeded"
    with pytest.raises(ResultsError, match=r"^job 'broken' failed before saving a model; see job.logs\(\)"):
        failed.model()
    with pytest.raises(ResultsError, match=r"^job 'unsaved' ran with --no-save-model, so it saved no model"):
        unsaved.model()
    with pytest.raises(ResultsError, match=r"^job 'busy' stopped before saving a model"):
        running.model()


def test_download_of_a_missing_or_outside_path_says_so(standin, tmp_path):
    tmp_path = tmp_path / "dest"
    tmp_path.mkdir()
    job = tk.submit("EPOCHS = 1\nSTEPS = 2", workers=1, name="dl")
    assert job.wait(timeout=60) == "succeeded"
    with pytest.raises(ResultsError, match=r"^job 'dl' has no artifact 'model/nothing.keras'; job.artifacts"):
        job.download("model/nothing.keras", dest=tmp_path)
    with pytest.raises(ResultsError, match=r"^'../spec.json' is outside job 'dl''s artifacts; pass a path"):
        job.download("../spec.json", dest=tmp_path)
    copy = job.download("checkpoints", dest=tmp_path)
    assert copy == tmp_path / "checkpoints" and (copy / "standin.json").is_file()
    assert list(tmp_path.iterdir()) == [copy]


# --------------------------------------------------------------------------- real TensorFlow
def _training_data():
    """The data of ``tf_keras_cell`` (seeded), as the cell makes it."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4096, 8)).astype("float32")
    true_w = rng.normal(size=(8, 1)).astype("float32")
    y = (x @ true_w + 0.1 * rng.normal(size=(4096, 1))).astype("float32")
    return x, y


@pytest.mark.tf
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("shape", "flavour"),
    [({"ps": 1, "workers": 2}, "tf_keras"), ({"workers": 2}, "keras3")],
    ids=["parameter-server", "all-reduce"],
)
def test_the_trained_model_comes_back_and_evaluates_at_the_last_reported_loss(shape, flavour, tmp_path):
    job = tk.submit(tf_keras_cell(epochs=6, steps=40), name="back", setup_timeout=180, **shape)
    assert job.wait(timeout=400) == "succeeded", job.logs(tail=40)
    last_loss = epoch_events(job.events())[-1]["values"]["loss"]

    model = job.model()
    x, y = _training_data()
    loss = float(model.evaluate(x, y, batch_size=512, verbose=0))
    # The epoch's reported loss is its running mean while the weights still move: close, not equal.
    assert abs(loss - last_loss) <= 0.3 * last_loss + 0.01, (loss, last_loss)
    assert type(model).__module__.split(".")[0] == ("tf_keras" if flavour == "tf_keras" else "keras")

    kinds = {a.kind for a in job.artifacts()}
    assert {"model", "checkpoint", "tensorboard", "index"} <= kinds, job.artifacts()
    model_file = next(a for a in job.artifacts() if a.kind == "model")
    assert model_file.size > 0
    copy = job.download("model", dest=tmp_path)
    assert copy == tmp_path / "model" and (copy / "model.keras").stat().st_size == model_file.size
    dirs = job.tensorboard_dirs()
    assert dirs and all(
        any(f.startswith("events.out.tfevents") for _, _, files in os.walk(d) for f in files) for d in dirs
    )

    # The same artifacts read as a URI (what gs:// or s3:// storage gives), through tf.io.gfile.
    class UriBackend(LocalBackend):
        def artifacts_location(self, name):
            return "file://" + super().artifacts_location(name)

    uri = UriBackend(job.backend.root)
    assert [(a.path, a.size, a.kind) for a in list_artifacts(uri, job.name)] == [
        (a.path, a.size, a.kind) for a in job.artifacts()
    ]
    loaded = load_model(uri, job.name)
    assert loaded.path.startswith("file://") and loaded.keras == flavour
    assert float(loaded.model.evaluate(x, y, batch_size=512, verbose=0)) == pytest.approx(loss, rel=1e-5)
    copy = download(uri, job.name, "model", tmp_path / "from-uri")
    assert sorted(p.name for p in copy.rglob("*")) == sorted(p.name for p in (tmp_path / "model").rglob("*"))


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_resume_from_a_killed_job_continues_its_step_count():
    first = tk.submit(
        tf_keras_cell(epochs=40, steps=20, step_sleep=0.02),
        ps=1,
        workers=1,
        name="first",
        setup_timeout=180,
        max_restarts=0,
    )
    wait_for(lambda: len(epoch_events(first.events())) >= 2, 300, "two epochs of the first job")
    supervisor = JobRecord("first", first.backend.root).dir / "supervisor.json"
    assert supervisor.exists()
    for replica in first.status.replicas:  # killed, not stopped: nothing gets to tidy up
        if replica.pid and process_alive(replica.pid):
            os.kill(replica.pid, signal.SIGKILL)
    first.wait(timeout=60)
    reached = max(e["step"] for e in first.events() if isinstance(e.get("step"), int))
    home = first.backend.root
    with pytest.raises(
        SpecError, match=r"^job 'first' saved its checkpoints with tf_keras and this job trains"
    ):
        tk.submit(tf_keras_cell(epochs=6, steps=20), workers=2, name="other", resume_from="first")
    assert _records(home) == ["first"]  # another shape that cannot restore: refused, nothing created

    again = tk.submit(
        tf_keras_cell(epochs=6, steps=20),
        ps=1,
        workers=1,
        name="again",
        setup_timeout=180,
        resume_from="first",
    )
    assert again.wait(timeout=400) == "succeeded", again.logs(tail=40)
    steps = [e["step"] for e in again.events() if e.get("type") in ("metric", "epoch")]
    epochs = [e["epoch"] for e in epoch_events(again.events())]
    assert steps and min(steps) > 20, steps  # not from step 1: from the restored checkpoint on
    assert epochs[0] >= 1 and epochs[-1] == 5, epochs
    assert min(steps) <= reached + 20
