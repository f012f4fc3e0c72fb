"""Results come back, the runner's side: the job's artifact directory (TFK8S_ARTIFACTS) with the trained model,
kept checkpoints, TensorBoard logs and artifacts.json; a new job resuming from an earlier job's checkpoints
(TFK8S_RESUME_FROM). Real TensorFlow replicas launched by hand with the runner contract's environment."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cells  # noqa: E402
from handlaunch import REPO, HandLaunch  # noqa: E402

from tfk8s_jupyter import runner  # noqa: E402

PS = "parameter_server"
MWMS = "multi_worker_mirrored"
JOB_TIMEOUT = 150

# The fit cell with its epoch count from the environment, a little slower per step so it can be killed
# mid-training.
SLOW_FIT = cells.TF_KERAS.replace(
    "history = model.fit(ds, epochs=3, steps_per_epoch=20)",
    """import os, time
class Slow(tf.keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self._supports_tf_logs = True  # parameter servers allow batch hooks only to callbacks saying so

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(float(os.environ.get("STEP_SLEEP", "0")))

history = model.fit(ds, epochs=int(os.environ["EPOCHS"]), steps_per_epoch=20, callbacks=[Slow()])""",
)

# Another shape: 32 hidden units instead of 16.
WIDER = SLOW_FIT.replace("Dense(16", "Dense(32")

# A custom loop: tf.summary.scalar with no writer (lands in the artifacts) and with the cell's own writer.
CUSTOM_LOOP = """\
import os
import tensorflow as tf
own = tf.summary.create_file_writer(os.path.join(os.getcwd(), "own-logs"))
for step in range(1, 11):
    loss = tf.constant(1.0 / step)
    tf.summary.scalar("loss", loss, step=step)
    with own.as_default():
        tf.summary.scalar("inverse", 1.0 / loss, step=step)
own.flush()
print("loop done")
"""

# The cell's own TensorBoard callback: it keeps its folder.
OWN_TENSORBOARD = cells.TF_KERAS.replace(
    "history = model.fit(ds, epochs=3, steps_per_epoch=20)",
    "history = model.fit(ds, epochs=3, steps_per_epoch=20, "
    "callbacks=[tf.keras.callbacks.TensorBoard(log_dir='tb-own')])",
)

# Loads the model artifacts.json names in a fresh process (no runner), prints its weights' digest (as the
# runner computes it) and its loss on the cells' training data.
LOAD_AND_EVALUATE = """\
import hashlib, json, os, sys
artifacts = sys.argv[1]
index = json.load(open(os.path.join(artifacts, "artifacts.json")))
if index["model"]["keras"] == "tf_keras":
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tf_keras as keras
else:
    import keras
import numpy as np
model = keras.models.load_model(os.path.join(artifacts, index["model"]["path"]))
digest = hashlib.sha256()
for w in model.get_weights():
    digest.update(np.ascontiguousarray(w).tobytes())
rng = np.random.default_rng(7)
x = rng.normal(size=(2048, 8)).astype("float32")
true_w = rng.normal(size=(8, 1)).astype("float32")
y = (x @ true_w + 0.1 * rng.normal(size=(2048, 1))).astype("float32")
loss = model.evaluate(x, y, batch_size=256, verbose=0)
loss = loss[0] if isinstance(loss, list) else loss
print(json.dumps({"module": type(model).__module__, "sha": digest.hexdigest()[:16], "loss": float(loss)}))
"""


def _job(tmp_path: Path, name: str, code: str, strategy: str, workers: int, ps: int = 0, env=None):
    """A hand-launched job whose artifacts are ``<tmp>/<name>/artifacts`` with the checkpoints inside, as the
    backends lay them out."""
    art = tmp_path / name / "artifacts"
    contract = {"TFK8S_ARTIFACTS": str(art), "TFK8S_CHECKPOINT_DIR": str(art / "checkpoints"), **(env or {})}
    return HandLaunch(code, strategy, workers, tmp_path / name, ps=ps, env=contract, job=name), art


def _wait_all(h: HandLaunch, timeout: float = JOB_TIMEOUT) -> dict[str, int]:
    return {name: h.wait(name, timeout) for name in h.replicas}


def _load_in_fresh_process(art: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFK8S_") and k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_AND_EVALUATE, str(art)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _event_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("events.out.tfevents.*") if p.stat().st_size > 0]


def _assert_model_comes_back(h: HandLaunch, art: Path, keras: str) -> None:
    events = h.events()
    end = events[-1]
    assert end["type"] == "end" and end["status"] == "succeeded", h.tail(h.reporting)
    index = json.loads((art / "artifacts.json").read_text())
    assert end["artifacts"] == index
    model = index["model"]
    assert model["path"] == "model/model.keras" and model["format"] == "keras" and model["keras"] == keras
    assert model["bytes"] == (art / "model" / "model.keras").stat().st_size > 0
    assert 0 < model["save_seconds"] < 30
    assert index["tensorboard"] == ["tensorboard"] and index["checkpoints"] == "checkpoints"
    assert _event_files(art / "tensorboard" / "fit-0" / "train"), (
        "the job's TensorBoard callback wrote nothing"
    )

    loaded = _load_in_fresh_process(art)
    assert loaded["module"].split(".")[0] == ("tf_keras" if keras == "tf_keras" else "keras")
    # the very weights the job trained, and a loss where training left it
    assert loaded["sha"] == end["model"]["weights_sha256"]
    last_loss = [e for e in events if e["type"] == "epoch"][-1]["values"]["loss"]
    # (the epoch's reported loss is its running mean while the weights still improve: a little above)
    assert 0.4 * last_loss <= loaded["loss"] <= 1.1 * last_loss + 0.01, (loaded["loss"], last_loss)


@pytest.mark.tf
def test_keras3_all_reduce_model_comes_back_and_its_checkpoints_are_kept(tmp_path):
    h, art = _job(tmp_path, "k3", cells.KERAS, MWMS, workers=2)
    h.start()
    try:
        assert _wait_all(h) == {"worker-0": 0, "worker-1": 0}, h.tail("worker-0") + h.tail("worker-1")
        _assert_model_comes_back(h, art, "keras3")
        # the last epoch's backup stays after a successful fit, one per worker (Keras 3)
        for worker in ("worker-0", "worker-1"):
            meta = art / "checkpoints" / "fit-0" / worker / "training_metadata.json"
            assert json.loads(meta.read_text())["epoch"] == 3
        assert not (h.tmp / "work" / "worker-1" / "model").exists()  # worker 1's part of the save is gone
    finally:
        h.teardown()


@pytest.mark.tf
def test_tf_keras_parameter_server_model_comes_back_with_its_last_epoch_checkpointed(tmp_path):
    h, art = _job(tmp_path, "ps", cells.TF_KERAS, PS, workers=1, ps=1)
    h.start()
    try:
        assert h.wait("chief-0", JOB_TIMEOUT) == 0, h.tail("chief-0")
        _assert_model_comes_back(h, art, "tf_keras")
        assert "/job:ps" in h.events()[-1]["model"]["variable_device"]
        # the chief saved epoch 0, the interval skipped the others, and the fit's end saved the last one
        state = (art / "checkpoints" / "fit-0" / "chief" / "chief" / "checkpoint").read_text()
        assert 'model_checkpoint_path: "ckpt-2"' in state
    finally:
        h.teardown()


RESUME_SHAPES = {
    # Keras 3 all-reduce: one backup per worker, each copies its own
    "keras3-all-reduce": (MWMS, 2, 0, {}),
    # tf_keras all-reduce: one backup shared by the workers, worker 0 copies it and worker 1 waits for it
    "tf_keras-all-reduce": (MWMS, 2, 0, {"TFK8S_KERAS": "legacy"}),
    # parameter servers: the chief's backup (every epoch here, so the kill finds a recent one)
    "tf_keras-parameter-servers": (PS, 1, 1, {"TFK8S_CHECKPOINT_INTERVAL": "0"}),
}


@pytest.mark.tf
@pytest.mark.parametrize("shape", list(RESUME_SHAPES))
def test_a_killed_job_is_continued_by_a_job_that_resumes_from_its_checkpoints(tmp_path, shape):
    strategy, workers, ps, extra = RESUME_SHAPES[shape]
    env = {"EPOCHS": "40", "STEP_SLEEP": "0.01", **extra}
    first, first_art = _job(tmp_path, "first", SLOW_FIT, strategy, workers, ps=ps, env=env)
    first.start()
    try:
        seen = first.wait_event(
            lambda e: e["type"] == "error" or (e["type"] == "checkpoint" and e.get("epoch", 0) >= 1),
            JOB_TIMEOUT,
        )
        assert seen["type"] == "checkpoint", seen.get("message")
        for name in first.replicas:  # killed: nothing gets to tidy up
            first.kill(name, signal.SIGKILL)
        _wait_all(first, 30)
    finally:
        first.teardown()
    first_events = first.events()
    assert first_events[-1]["type"] != "end"
    first_losses = {e["epoch"]: e["values"]["loss"] for e in first_events if e["type"] == "epoch"}
    first_saved = max(e["epoch"] for e in first_events if e["type"] == "checkpoint")
    before = sorted(str(p.relative_to(first_art)) for p in first_art.rglob("*"))

    epochs = max(first_losses) + 4
    resume = {**extra, "EPOCHS": str(epochs), "TFK8S_RESUME_FROM": str(first_art / "checkpoints")}
    second, art = _job(tmp_path, "second", SLOW_FIT, strategy, workers, ps=ps, env=resume)
    second.start()
    try:
        assert second.wait(second.reporting, JOB_TIMEOUT) == 0, second.tail(second.reporting)
        events = second.events()
        assert events[0]["type"] == "start" and events[0]["resumed_from"] == str(first_art / "checkpoints")
        restored = [e for e in events if e["type"] == "checkpoint" and e["action"] == "restored"]
        assert len(restored) == 1
        # the epoch after the first job's last checkpoint (it may have saved once more after the event seen)
        next_epoch = restored[0]["epoch"]
        assert first_saved + 1 <= next_epoch <= max(first_losses) + 1, (first_saved, next_epoch)
        ends = [e for e in events if e["type"] == "epoch"]
        # epochs and the global step continue from the earlier job's
        assert [e["epoch"] for e in ends] == list(range(next_epoch, epochs))
        assert [e["step"] for e in ends] == [20 * (e + 1) for e in range(next_epoch, epochs)]
        points = [e for e in events if e["type"] == "metric"]
        assert points and min(p["step"] for p in points) > 20 * next_epoch
        # the loss goes on from where the first job left it, it does not start over
        assert ends[0]["values"]["loss"] < 0.5 * first_losses[0]
        assert ends[0]["values"]["loss"] <= 1.5 * first_losses[next_epoch - 1] + 0.05
        index = json.loads((art / "artifacts.json").read_text())
        assert index["resumed_from"] == str(first_art / "checkpoints") and index["model"]["bytes"] > 0
        # the replicas owning a backup copied the earlier job's in, once; the earlier job's is untouched
        owners = {
            "keras3-all-reduce": ["worker-0", "worker-1"],
            "tf_keras-all-reduce": ["worker-0"],
            "tf_keras-parameter-servers": ["chief-0"],
        }[shape]
        markers = sorted(p.name for p in (art / "checkpoints").glob("resumed-*.json"))
        assert markers == [f"resumed-{name}.json" for name in owners]
        assert all(json.loads((art / "checkpoints" / m).read_text())["fits"] == [0] for m in markers)
        assert sorted(str(p.relative_to(first_art)) for p in first_art.rglob("*")) == before
    finally:
        second.teardown()


@pytest.mark.tf
def test_resuming_from_no_checkpoint_or_another_shape_is_one_sentence(tmp_path):
    empty = tmp_path / "nothing" / "checkpoints"
    empty.mkdir(parents=True)
    h, _ = _job(
        tmp_path,
        "from-nothing",
        SLOW_FIT,
        "mirrored",
        1,
        env={"EPOCHS": "2", "TFK8S_RESUME_FROM": str(empty)},
    )
    h.start()
    try:
        assert h.wait("worker-0", JOB_TIMEOUT) == runner.EXIT_SETUP_ERROR
        (error,) = h.events()
        assert error["message"].startswith(f"the job to resume from has no checkpoint in {empty} (")
        assert error["message"].count(". ") == 0 and error["message"].endswith("--resume-from.")
    finally:
        h.teardown()

    first, first_art = _job(tmp_path, "narrow", SLOW_FIT, "mirrored", 1, env={"EPOCHS": "2"})
    first.start()
    try:
        assert first.wait("worker-0", JOB_TIMEOUT) == 0, first.tail("worker-0")
    finally:
        first.teardown()
    wider, wider_art = _job(
        tmp_path,
        "wider",
        WIDER,
        "mirrored",
        1,
        env={"EPOCHS": "4", "TFK8S_RESUME_FROM": str(first_art / "checkpoints")},
    )
    wider.start()
    try:
        assert wider.wait("worker-0", JOB_TIMEOUT) == runner.EXIT_CELL_ERROR
        error = wider.events()[-1]
        assert error["type"] == "error"
        assert error["message"].startswith(
            f"RestoreError: the checkpoint copied from the earlier job ({first_art / 'checkpoints'}) cannot be "
            "restored into the model this cell builds ("
        ), error["message"]
        assert "same model (layers and shapes)" in error["message"]
        assert not [e for e in wider.events() if e["type"] == "epoch"]
        index = json.loads((wider_art / "artifacts.json").read_text())
        assert index["model"] is None and index["model_note"] == "the cell failed, so no model was saved."
    finally:
        wider.teardown()

    # Keras 3 wrote them; a tf_keras job cannot read its backup format (named by the artifact dir this time)
    legacy_env = {"EPOCHS": "4", "TFK8S_KERAS": "legacy", "TFK8S_RESUME_FROM": str(first_art)}
    legacy, _ = _job(tmp_path, "legacy", SLOW_FIT, "mirrored", 1, env=legacy_env)
    legacy.start()
    try:
        assert legacy.wait("worker-0", JOB_TIMEOUT) == runner.EXIT_SETUP_ERROR
        (error,) = legacy.events()
        assert error["message"] == (
            f"the checkpoints in {first_art} were written by Keras 3 and this job trains with "
            "tf_keras, which cannot restore them; resume with the earlier job's strategy (parameter-server and "
            "TFK8S_KERAS=legacy jobs use tf_keras, all-reduce jobs Keras 3)."
        )
    finally:
        legacy.teardown()

    # a checkpoint dir this replica cannot write (here: under a file)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    stuck_env = {
        "EPOCHS": "4",
        "TFK8S_RESUME_FROM": str(first_art / "checkpoints"),
        "TFK8S_CHECKPOINT_DIR": str(blocker / "checkpoints"),
    }
    stuck, _ = _job(tmp_path, "stuck", SLOW_FIT, "mirrored", 1, env=stuck_env)
    stuck.start()
    try:
        assert stuck.wait("worker-0", JOB_TIMEOUT) == runner.EXIT_SETUP_ERROR
        (error,) = stuck.events()
        assert error["message"].startswith(
            f"the earlier job's checkpoints in {first_art / 'checkpoints'} cannot be copied into "
            f"{blocker / 'checkpoints'} ("
        ), error["message"]
        assert error["message"].endswith("(the same storage).")
    finally:
        stuck.teardown()


@pytest.mark.tf
def test_a_model_that_cannot_be_saved_is_a_note_and_the_job_succeeds(tmp_path):
    # the cell takes the name of the model folder for a file of its own
    code = cells.TF_KERAS + "open(os.path.join(os.environ['TFK8S_ARTIFACTS'], 'model'), 'w').close()\n"
    h, art = _job(tmp_path, "unsaved", "import os\n" + code, "mirrored", 1)
    h.start()
    try:
        assert h.wait("worker-0", JOB_TIMEOUT) == 0, h.tail("worker-0")
        events = h.events()
        assert [e["type"] for e in events[-2:]] == ["note", "end"]
        error, end = events[-2:]
        assert error["about"] == "save" and end["status"] == "succeeded"
        assert not [e for e in events if e["type"] == "error"]
        assert error["message"].startswith(
            f"training succeeded but the trained model could not be saved to {art / 'model'} ("
        )
        assert end["artifacts"]["model"] is None and end["artifacts"]["model_note"] == error["message"]
        assert [e["epoch"] for e in events if e["type"] == "epoch"] == [0, 1, 2]
    finally:
        h.teardown()


@pytest.mark.tf
def test_a_custom_loop_writes_tensorboard_logs_and_saves_no_model(tmp_path):
    h, art = _job(tmp_path, "loop", CUSTOM_LOOP, "mirrored", 1)
    h.start()
    try:
        assert h.wait("worker-0", JOB_TIMEOUT) == 0, h.tail("worker-0")
        events = h.events()
        assert len([e for e in events if e["type"] == "metric"]) >= 1  # still streamed as points
        index = json.loads((art / "artifacts.json").read_text())
        assert index["model"] is None and "trained no model with fit" in index["model_note"]
        assert not (art / "model").exists()
        own = h.tmp / "work" / "worker-0" / "own-logs"
        assert index["tensorboard"] == [str(own), "tensorboard"]
        assert _event_files(art / "tensorboard" / "cell"), "scalars with no writer landed nowhere"
        assert _event_files(own)
        # the no-writer scalars only: the cell's own writer keeps its own
        assert b"loss" in _event_files(art / "tensorboard" / "cell")[0].read_bytes()
    finally:
        h.teardown()


@pytest.mark.tf
def test_no_save_model_saves_none_and_the_cells_own_tensorboard_keeps_its_folder(tmp_path):
    h, art = _job(tmp_path, "nosave", OWN_TENSORBOARD, "mirrored", 1, env={"TFK8S_SAVE_MODEL": "0"})
    h.start()
    try:
        assert h.wait("worker-0", JOB_TIMEOUT) == 0, h.tail("worker-0")
        index = json.loads((art / "artifacts.json").read_text())
        assert h.events()[-1]["artifacts"] == index
        assert index["model"] is None and "--no-save-model" in index["model_note"]
        assert not (art / "model").exists()
        own = h.tmp / "work" / "worker-0" / "tb-own"
        assert index["tensorboard"] == [str(own)]
        assert _event_files(own) and not (art / "tensorboard").exists()
        assert (art / "checkpoints" / "fit-0" / "shared" / "latest.weights.h5").is_file()
    finally:
        h.teardown()


@pytest.mark.tf
def test_artifacts_at_a_uri_go_through_tf_io_gfile(tmp_path):
    # ram:// is TensorFlow's in-process file system: a URI no pathlib code could write to correctly
    h = HandLaunch(
        cells.TF_KERAS,
        "mirrored",
        1,
        tmp_path,
        env={
            "TFK8S_ARTIFACTS": "ram://job/artifacts",
            "TFK8S_CHECKPOINT_DIR": "ram://job/artifacts/checkpoints",
        },
    ).start()
    try:
        assert h.wait("worker-0", JOB_TIMEOUT) == 0, h.tail("worker-0")
        events = h.events()
        model = events[-1]["artifacts"]["model"]
        assert model["bytes"] > 10_000 and model["keras"] == "keras3"
        # (all-reduce saves the first epoch, then at most every TFK8S_CHECKPOINT_INTERVAL s)
        assert [e["epoch"] for e in events if e["type"] == "checkpoint"][:1] == [0]
        assert not [p for p in tmp_path.rglob("ram:*")], "a URI was written as a local path"
    finally:
        h.teardown()


@pytest.mark.tf
@pytest.mark.parametrize("where", ["under-a-file", "s3"])
def test_an_unwritable_artifact_dir_fails_at_start_with_one_sentence(tmp_path, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = str(blocker / "artifacts") if where == "under-a-file" else "s3://tfk8s-no-bucket/job"
    h = HandLaunch(cells.TF_KERAS, "mirrored", 1, tmp_path / "job", env={"TFK8S_ARTIFACTS": target}).start()
    try:
        assert h.wait("worker-0", 90) == runner.EXIT_SETUP_ERROR
        (error,) = h.events()
        message = error["message"]
        assert message.startswith(
            f"the job's artifact directory {target} cannot be written from this replica ("
        )
        assert message.endswith("installed in the image).") and "\n" not in message
        if where == "s3":
            assert "File system scheme 's3' not implemented" in message
        assert not (tmp_path / "job" / "work").exists()  # stopped before the cell's work dir was made
    finally:
        h.teardown()


@pytest.mark.tf
def test_a_stock_image_running_the_shipped_runner_files_writes_the_artifacts(tmp_path):
    from test_runner_files import NOT_IMPORTABLE, image_job, write_runner_files

    from tfk8s_jupyter.payload import Payload
    from tfk8s_jupyter.spec import make_spec

    image = write_runner_files(tmp_path / "image")
    job = tmp_path / "job"
    job.mkdir()
    (job / "payload.json").write_text(Payload(code=cells.TF_KERAS).to_json())
    command, env = image_job(make_spec(cells.TF_KERAS, workers=1, strategy="mirrored", name="stock"), job)
    art = job / "artifacts"
    env.update({"TFK8S_ARTIFACTS": str(art), "TFK8S_CHECKPOINT_DIR": str(art / "checkpoints")})
    code = f"{NOT_IMPORTABLE}; import runner; raise SystemExit(runner.main())"
    proc = subprocess.run(
        [*command, "-c", code], cwd=image, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    index = json.loads((art / "artifacts.json").read_text())
    assert index["model"]["keras"] == "keras3" and (art / index["model"]["path"]).stat().st_size > 0
    assert _event_files(art / "tensorboard") and (art / "checkpoints" / "fit-0" / "shared").is_dir()


@pytest.mark.tf
def test_a_custom_loop_with_the_tutorials_temp_dir_checkpoints_continues_in_a_resuming_job(tmp_path):
    first, first_art = _job(tmp_path, "ctl", cells.MWMS_LOOP_TUTORIAL_DIR.format(sleep=0.1), MWMS, 2)
    first.start()
    try:
        first.wait_event(lambda e: e["type"] == "metric" and e["step"] > 25, JOB_TIMEOUT)  # epoch 1 saved
        for name in first.replicas:
            first.kill(name, signal.SIGKILL)
        _wait_all(first, 30)
    finally:
        first.teardown()
    assert "restored epoch" not in first.stdout("worker-0")
    again, art = _job(
        tmp_path,
        "ctl-again",
        cells.MWMS_LOOP_TUTORIAL_DIR.format(sleep=0.0),
        MWMS,
        2,
        env={"TFK8S_RESUME_FROM": str(first_art / "checkpoints")},
    )
    again.start()
    try:
        assert _wait_all(again) == {"worker-0": 0, "worker-1": 0}, again.tail("worker-0")
        restored = {name: re.findall(r"restored epoch (\d+)", again.stdout(name)) for name in again.replicas}
        assert restored["worker-0"] and restored["worker-0"] == restored["worker-1"], restored
        epoch = int(restored["worker-0"][0])
        assert epoch >= 1
        steps = [e["step"] for e in again.events() if e["type"] == "metric"]
        assert steps and min(steps) > 20 * epoch and max(steps) == 60  # the step count continues
        index = json.loads((art / "artifacts.json").read_text())
        assert index["resumed_from"] == str(first_art / "checkpoints") and index["model"] is None
    finally:
        again.teardown()
