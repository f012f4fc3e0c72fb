"""Time-based checkpoint spacing under all-reduce (real TensorFlow): the workers save the first epoch and
then at most every TFK8S_CHECKPOINT_INTERVAL seconds or at the epoch end after a checkpoint request, the same
epochs on every worker, and a killed worker still resumes the whole job from the last saved epoch."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from local_helpers import epoch_events, kill, wait_for

import tfk8s_jupyter as tk
from tfk8s_jupyter.records import JobRecord
from tfk8s_jupyter.replica_env import CHECKPOINT_REQUEST

SLOW_KERAS_CELL = """\
import time
import numpy as np
import tensorflow as tf
import keras

rng = np.random.default_rng(3)
x = rng.normal(size=(2048, 8)).astype("float32")
y = (x @ rng.normal(size=(8, 1))).astype("float32")
keras.utils.set_random_seed(7)
ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(64)
model = keras.Sequential([keras.Input(shape=(8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse")

class Slow(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.04)

model.fit(ds, epochs=12, steps_per_epoch=10, callbacks=[Slow()], verbose=2)
print("cell done")
"""


def _saved_epochs(events: list[dict], run: str) -> list[int]:
    return [
        e["epoch"]
        for e in events
        if e["type"] == "checkpoint" and e.get("action") == "saved" and e["run"] == run
    ]


def test_all_reduce_workers_space_their_checkpoints_and_still_resume_after_a_killed_worker():
    job = tk.submit(
        SLOW_KERAS_CELL, workers=2, name="ar-spaced", env={"TFK8S_CHECKPOINT_INTERVAL": "2"}, max_restarts=2
    )
    wait_for(lambda: len(epoch_events(job.events())) >= 6, 240, "six epochs")
    events = job.events()
    first_run = next(e["run"] for e in events if e["type"] == "start")
    saved = _saved_epochs(events, first_run)
    seen = max(e["epoch"] for e in epoch_events(events))
    assert saved and saved[0] == 0, saved  # the first epoch is always saved
    assert len(saved) < seen + 1, (saved, seen)  # ... and not every epoch after it
    kill(job.status.replica("worker-1").pid)
    assert job.wait(timeout=300) == "succeeded", job.status.message
    assert [r.restarts for r in job.status.replicas] == [1, 1]
    events = job.events()
    runs = [e["run"] for e in events if e["type"] == "start"]
    assert len(runs) == 2
    saved_before = _saved_epochs(events, first_run)
    resumed_at = min(e["epoch"] for e in epoch_events(events) if e["run"] == runs[-1])
    # the new run continues after an epoch both workers saved (they agree), never from scratch
    assert resumed_at == max(saved_before) + 1, (saved_before, resumed_at)
    assert max(e["epoch"] for e in epoch_events(events)) == 11
    assert "cell done" in job.logs("worker-0")


def test_a_requested_checkpoint_is_saved_by_every_worker_and_a_killed_worker_resumes_from_it():
    """The runner contract's ``checkpoint.request``: with a 300 s interval, the workers save the epoch after the
    request (they agree in their vote), and a worker killed after it resumes the whole job from that epoch."""
    job = tk.submit(
        SLOW_KERAS_CELL,
        workers=2,
        name="ar-asked",
        env={"TFK8S_CHECKPOINT_INTERVAL": "300"},
        max_restarts=2,
    )
    wait_for(lambda: len(epoch_events(job.events())) >= 3, 240, "three epochs")
    first_run = next(e["run"] for e in job.events() if e["type"] == "start")
    assert _saved_epochs(job.events(), first_run) == [0]  # the first epoch; the next only in 300 s
    local = json.loads((JobRecord("ar-asked").dir / "local.json").read_text())
    asked = time.time()
    (Path(local["checkpoint_dir"]) / CHECKPOINT_REQUEST).write_text("{}")  # as a resize writes it
    wait_for(lambda: len(_saved_epochs(job.events(), first_run)) >= 2, 120, "the checkpoint asked for")
    saved = [
        e
        for e in job.events()
        if e["type"] == "checkpoint" and e["action"] == "saved" and e["run"] == first_run
    ]
    assert saved[1]["t"] >= asked and saved[1]["epoch"] > 2, saved
    kill(job.status.replica("worker-1").pid)
    assert job.wait(timeout=300) == "succeeded", job.status.message
    events = job.events()
    saved_before = _saved_epochs(events, first_run)
    assert saved_before[:2] == [0, saved[1]["epoch"]], saved_before  # asked once: saved once
    runs = [e["run"] for e in events if e["type"] == "start"]
    resumed_at = min(e["epoch"] for e in epoch_events(events) if e["run"] == runs[-1])
    assert resumed_at == max(saved_before) + 1, (saved_before, resumed_at)
    digests = {
        w: re.findall(r"weights_sha256=([0-9a-f]+)", job.logs(w))[-1] for w in ("worker-0", "worker-1")
    }
    assert digests["worker-0"] == digests["worker-1"], digests  # both restored the same epoch


def _backup(folder: Path, epoch: int, content: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "latest.weights.h5").write_bytes(content)
    (folder / "training_metadata.json").write_text(json.dumps({"epoch": epoch, "batch": None}))


def _worker_env(index: int, cluster: dict, ckpt: Path, source: Path | None = None):
    """The ReplicaEnv of Keras 3 all-reduce worker ``index`` of job ``k`` (resuming ``source``, if given)."""
    from tfk8s_jupyter.replica_env import ReplicaEnv

    return ReplicaEnv(
        job="k",
        role="worker",
        index=index,
        cluster=cluster,
        strategy="multi_worker_mirrored",
        payload_path=None,
        checkpoint_dir=str(ckpt),
        resume_from=str(source) if source is not None else None,
    )


def _resume_worker(index: int, cluster: dict, ckpt: Path, source: Path) -> dict:
    """``resume_from_earlier_job`` for Keras 3 all-reduce worker ``index`` of job ``k``."""
    import tensorflow as tf

    from tfk8s_jupyter.replica_artifacts import resume_from_earlier_job

    return resume_from_earlier_job(tf, _worker_env(index, cluster, ckpt, source))


def test_a_worker_added_again_by_a_resize_restores_the_jobs_latest_backup_not_its_own_older_one(tmp_path):
    """A Keras 3 all-reduce job resized 3 -> 2 -> 3 on a claim the notebook does not see: the pods get
    TFK8S_RESUME_FROM = the job's own checkpoint dir, and worker-2's own backup (and resume marker) date from
    before it was removed. It takes the newest backup of the job's workers; a worker whose backup is as new
    keeps its own; an earlier job's resume marker still means "copied already"."""

    from tfk8s_jupyter.replica_artifacts import RESUMED_MARKER

    ckpt = tmp_path / "checkpoints"
    for fit in ("fit-0", "fit-1"):
        _backup(ckpt / fit / "worker-0", 7, b"w0-epoch-7-" + fit.encode())
        _backup(ckpt / fit / "worker-1", 7, b"w1-epoch-7-" + fit.encode())
        _backup(ckpt / fit / "worker-2", 3, b"w2-epoch-3-" + fit.encode())  # before it was removed
    for name in ("worker-0", "worker-1", "worker-2"):  # the markers of the first resize's start
        (ckpt / RESUMED_MARKER.format(name=name)).write_text(json.dumps({"from": str(ckpt), "fits": []}))
    cluster = {"worker": [f"k-worker-{i}:2222" for i in range(3)]}

    def resume(index: int, source: Path) -> dict:
        return _resume_worker(index, cluster, ckpt, source)

    done = resume(2, ckpt)
    assert done["fits"] == [0, 1]
    for fit in ("fit-0", "fit-1"):
        assert (ckpt / fit / "worker-2" / "latest.weights.h5").read_bytes() == b"w0-epoch-7-" + fit.encode()
        meta = json.loads((ckpt / fit / "worker-2" / "training_metadata.json").read_text())
        assert meta["epoch"] == 7
    assert not list(ckpt.glob("fit-*/*.partial-*"))  # copied aside, then renamed into place
    assert resume(1, ckpt)["fits"] == []  # as new as the newest: its own backup stays
    assert (ckpt / "fit-0" / "worker-1" / "latest.weights.h5").read_bytes() == b"w1-epoch-7-fit-0"
    assert resume(2, tmp_path)["fits"] == []  # the artifact dir named: the same job, nothing more to take
    # an earlier job's checkpoints (not the job's own): a restarted replica keeps what its marker says
    earlier = tmp_path / "earlier"
    _backup(earlier / "fit-0" / "worker-0", 9, b"earlier")
    (ckpt / RESUMED_MARKER.format(name="worker-0")).write_text(
        json.dumps({"from": str(earlier), "fits": [0]})
    )
    assert resume(0, earlier) == {"from": str(earlier), "fits": [0]}
    assert (ckpt / "fit-0" / "worker-0" / "latest.weights.h5").read_bytes() == b"w0-epoch-7-fit-0"


def test_resuming_an_earlier_all_reduce_job_takes_the_newest_worker_backup_for_every_worker(tmp_path):
    """The earlier job was killed while worker-1 saved epoch 21: worker-0's backup holds epoch 21,
    worker-1's its previous one (epoch 1). Every worker of the resuming job restores epoch 21 (restoring
    different epochs, all-reduce workers would run different collectives)."""

    earlier, ckpt = tmp_path / "earlier", tmp_path / "checkpoints"
    _backup(earlier / "fit-0" / "worker-0", 21, b"epoch-21")
    _backup(earlier / "fit-0" / "worker-1", 1, b"epoch-1")
    cluster = {"worker": ["w-0:2222", "w-1:2222"]}
    for index in (0, 1):
        assert _resume_worker(index, cluster, ckpt, earlier)["fits"] == [0]
        own = ckpt / "fit-0" / f"worker-{index}"
        assert (own / "latest.weights.h5").read_bytes() == b"epoch-21"
        assert json.loads((own / "training_metadata.json").read_text())["epoch"] == 21


def test_a_keras3_backup_save_killed_halfway_leaves_the_previous_backup_whole(tmp_path, monkeypatch):
    """Keras 3 writes latest.weights.h5 in place: a replica killed while saving left a file no restore can
    open. The job's backup writes beside it and renames, so the previous backup survives a save that dies."""
    import keras
    import numpy as np

    from tfk8s_jupyter.replica_callbacks import job_backup

    folder = tmp_path / "backup"
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    backup = job_backup(keras)(str(folder), interval=0.0)
    backup.set_model(model)
    backup.on_epoch_end(0)
    saved = (folder / "latest.weights.h5").read_bytes()
    kept = [w.copy() for w in model.get_weights()]

    def dies_halfway(filepath, overwrite=True):
        with open(filepath, "wb") as f:
            f.write(saved[: len(saved) // 3])
        raise KeyboardInterrupt  # killed mid-write

    model.set_weights([w + 1 for w in kept])
    monkeypatch.setattr(model, "save_weights", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        backup.on_epoch_end(1)
    assert (folder / "latest.weights.h5").read_bytes() == saved
    assert json.loads((folder / "training_metadata.json").read_text())["epoch"] == 1
    monkeypatch.undo()
    fresh = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    fresh.compile("sgd", "mse")
    restore = job_backup(keras)(str(folder), interval=0.0)
    restore.set_model(fresh)
    restore.on_train_begin()  # opens and restores the previous backup
    assert all(np.allclose(a, b) for a, b in zip(fresh.get_weights(), kept, strict=True))
    backup.on_epoch_end(2)  # a save that completes replaces it, leaving no partial file behind
    assert json.loads((folder / "training_metadata.json").read_text())["epoch"] == 3
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("partial-")) == [
        "latest.weights.h5",
        "training_metadata.json",
    ]


def test_a_worker_killed_while_it_saved_restores_the_epoch_its_peers_saved_when_the_job_restarts(tmp_path):
    """A Keras 3 all-reduce worker killed while it saved epoch 21 kept its previous backup (epoch 1) and a
    half-written ``partial-<pid>`` file; its peer saved epoch 21. When the job restarts every replica, both
    workers restore epoch 21 (different epochs mean different collectives), and the half-written files of the
    killed worker's save and copy are gone; the peer's backup is left as it was."""
    import tensorflow as tf

    from tfk8s_jupyter.replica_artifacts import open_artifacts

    ckpt = tmp_path / "checkpoints"
    _backup(ckpt / "fit-0" / "worker-0", 21, b"epoch-21")
    _backup(ckpt / "fit-0" / "worker-1", 1, b"epoch-1")
    (ckpt / "fit-0" / "worker-1" / "partial-4242.weights.h5").write_bytes(b"half")
    (ckpt / "fit-0" / "worker-1.partial-0badc0de").mkdir()  # an earlier copy killed halfway
    (ckpt / "fit-0" / "worker-0" / "partial-77.weights.h5").write_bytes(b"peer's own")
    cluster = {"worker": ["w-0:2222", "w-1:2222"]}
    for index in (1, 0):
        assert open_artifacts(tf, _worker_env(index, cluster, ckpt)).resumed is None  # not a resume
    for index in (0, 1):
        own = ckpt / "fit-0" / f"worker-{index}"
        assert (own / "latest.weights.h5").read_bytes() == b"epoch-21"
        assert json.loads((own / "training_metadata.json").read_text())["epoch"] == 21
    assert sorted(p.name for p in (ckpt / "fit-0").iterdir()) == ["worker-0", "worker-1"]
    assert not (ckpt / "fit-0" / "worker-1" / "partial-4242.weights.h5").exists()
    assert not (ckpt / "fit-0" / "worker-0" / "partial-77.weights.h5").exists()  # worker-0's own start
