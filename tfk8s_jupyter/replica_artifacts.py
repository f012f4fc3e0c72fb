"""The job's artifact directory on the replica side (``TFK8S_ARTIFACTS``): checkpoints, the trained model,
TensorBoard logs and ``artifacts.json``.

The directory is a local path or a URI ``tf.io.gfile`` writes (``gs://``, ``s3://`` with the image's file
systems); everything here goes through ``tf.io.gfile`` and ``os.path.join`` (never ``pathlib``, which would
fold ``gs://b`` into ``gs:/b``). Its layout (``ARTIFACT_*`` in ``replica_env.py``)::

    <artifacts>/checkpoints/fit-<i>/<chief|worker-<n>|shared>/   BackupAndRestore of the cell's i-th fit
    <artifacts>/model/model.keras                              the model of the last successful fit
    <artifacts>/tensorboard/fit-<i>/{train,validation}/        the TensorBoard callback of each fit
    <artifacts>/tensorboard/cell/                              tf.summary.scalar with no writer of the cell
    <artifacts>/artifacts.json                                 what the reporting replica wrote

``artifacts.json``, written by the reporting replica when the cell ends (succeeded or failed)::

    {"model": {"path": "model/model.keras", "format": "keras", "keras": "keras3" | "tf_keras",
               "bytes": 23869, "save_seconds": 0.055} | null,
     "model_note": "one sentence: why there is no model (only when model is null)",
     "tensorboard": ["tensorboard", "/abs/dir/the/cell/named", ...],
     "checkpoints": "checkpoints",
     "resumed_from": "<the earlier job's checkpoint dir>" | null}

Paths inside the artifact directory are relative to it; folders elsewhere (a cell's own TensorBoard
``log_dir`` or ``create_file_writer`` folder, a checkpoint dir configured outside the artifacts) are absolute
paths or URIs as the replica saw them. ``"keras"`` says which Keras loads the model: ``keras3`` files with
``keras.models.load_model``, ``tf_keras`` files (parameter-server and ``TFK8S_KERAS=legacy`` jobs, tf_keras's
own ``.keras`` zip: measured to round-trip with its optimizer state, unlike SavedModel) with
``tf_keras.models.load_model``. The same dict is the ``artifacts`` field of the ``end`` event.

A model that cannot be saved is a ``note`` event (``about="save"``; not the job's error) followed by the
``end`` event of the succeeded job, ``model`` null and the reason in ``model_note``: the training result is
not hidden.

Resume (``TFK8S_RESUME_FROM``, an earlier job's checkpoint dir, or its artifact dir holding
``checkpoints/``): before the cell runs, each replica that
owns a backup dir (the chief with parameter servers, every worker with Keras 3 all-reduce, worker 0 for the
dir shared by tf_keras all-reduce workers, who wait for it) copies the earlier job's ``fit-<i>`` backups into
its own dir, once per job (a marker file records it; a restarted replica finds its own newer checkpoint).
The copy lands in a temporary folder renamed into place, so a replica never restores a half copy. The cell's
``fit`` calls then restore as after a restart: epochs, and so the global step of metric points, continue.
The reporting replica also copies the earlier job's ``checkpoints/tmp`` (multiprocessing's temp dir, where
TensorFlow's ``multi_worker_with_ctl`` tutorial keeps its checkpoints), so such a custom loop's own restore
logic continues too. ``TFK8S_RESUME_FROM`` naming the job's own checkpoint dir (a resize restarting
the job with a new shape) is checked at every start, marker or not: a Keras 3 all-reduce worker whose
backup is missing or behind the newest of the job's workers (removed by an earlier resize, added again)
takes that newest one (:func:`resume_from_own_job`). Every other start of such a worker does the same
(:func:`align_worker_backups`): a worker killed while its peers saved an epoch kept its previous backup.

Part of the runner (see ``runner.py``); stdlib only at import, TensorFlow passed in; it travels with the
runner in the job's ConfigMap (``RUNNER_FILES``).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid

try:
    from tfk8s_jupyter.replica_env import (
        ARTIFACT_CHECKPOINTS,
        ARTIFACT_INDEX,
        ARTIFACT_MODEL,
        ARTIFACT_TENSORBOARD,
        ReplicaEnv,
        SetupError,
    )
    from tfk8s_jupyter.replica_output import log
except ImportError:  # standalone: the shipped modules sit beside this file
    from replica_env import (  # type: ignore[no-redef]
        ARTIFACT_CHECKPOINTS,
        ARTIFACT_INDEX,
        ARTIFACT_MODEL,
        ARTIFACT_TENSORBOARD,
        ReplicaEnv,
        SetupError,
    )
    from replica_output import log  # type: ignore[no-redef]

MODEL_FILE = "model.keras"
CELL_SUMMARIES = "cell"  # tensorboard/cell: the cell's tf.summary calls that had no writer
KERAS3_BACKUP = "latest.weights.h5"  # what Keras 3's BackupAndRestore writes in its dir
KERAS3_METADATA = "training_metadata.json"  # ... and where it notes the epoch (and batch) saved
TF_KERAS_BACKUP = os.path.join("chief", "checkpoint")  # tf_keras's: a tf.train.CheckpointManager in chief/
RESUMED_MARKER = "resumed-{name}.json"
TEMP_DIR = "tmp"  # multiprocessing's temp dir of the job (runner.keep_process_temp_dir)
_FIT_DIR = re.compile(r"^fit-(\d+)/?$")


def is_uri(path: str) -> bool:
    return "://" in str(path)


def backup_subdir(renv: ReplicaEnv) -> str:
    """The folder of ``fit-<i>`` this replica's job backup uses: Keras 3 locks its backup file (one dir per
    all-reduce worker), tf_keras all-reduce needs one dir shared by the workers, the chief saves alone with
    parameter servers."""
    if renv.strategy == "parameter_server":
        return "chief"
    if renv.strategy == "multi_worker_mirrored" and not renv.uses_tf_keras:
        return renv.name
    return "shared"


def owns_backup(renv: ReplicaEnv) -> bool:
    """Whether this replica writes its backup dir alone (the shared dir belongs to the reporting replica)."""
    return backup_subdir(renv) != "shared" or renv.reporting


def relative_to(root: str | None, path: str) -> str:
    """``path`` relative to ``root`` when inside it, else ``path`` as given (absolute, or a URI)."""
    if not root:
        return path
    full = path if is_uri(path) else os.path.abspath(path)
    base = root.rstrip("/") if is_uri(root) else os.path.abspath(root)
    if full == base:
        return "."
    if full.startswith(base + "/"):
        return full[len(base) + 1 :]
    return full


# ----------------------------------------------------------------------------------------------------
# Start: the folder exists and can be written; an earlier job's checkpoints copied in


def prepare_artifacts(tf, renv: ReplicaEnv) -> None:
    """Create the artifact directory (reporting replica) and prove it writable, or raise one sentence."""
    root = renv.artifacts_dir
    if not root or not renv.reporting:
        return
    probe = os.path.join(root, f".tfk8s-probe-{uuid.uuid4().hex[:8]}")
    try:
        tf.io.gfile.makedirs(root)
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("ok")
        tf.io.gfile.remove(probe)
    except Exception as exc:  # tf.errors.*, OSError: whatever the file system says
        reason = " ".join(str(getattr(exc, "message", "") or exc).split())[:300]
        raise SetupError(
            f"the job's artifact directory {root} cannot be written from this replica ({type(exc).__name__}: "
            f"{reason}); use storage this image can write (a mounted claim, or a gs:// / s3:// URI with "
            "credentials and the file system installed in the image)."
        ) from None


def _has_backup(tf, folder: str, keras3: bool) -> bool:
    return tf.io.gfile.exists(os.path.join(folder, KERAS3_BACKUP if keras3 else TF_KERAS_BACKUP))


def _fit_dirs(tf, checkpoint_dir: str) -> list[tuple[int, str]]:
    try:
        names = tf.io.gfile.listdir(checkpoint_dir)
    except Exception:  # NotFoundError: nothing there
        return []
    found = []
    for name in names:
        m = _FIT_DIR.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(checkpoint_dir, name.rstrip("/"))))
    return sorted(found)


def _candidates(tf, fit_dir: str, own: str) -> list[str]:
    """The backup folders of an earlier job's ``fit-<i>``, this replica's own name first."""
    try:
        names = [n.rstrip("/") for n in tf.io.gfile.listdir(fit_dir)]
    except Exception:
        return []
    order = [own, "shared", "chief", "worker-0", *sorted(names)]
    return [os.path.join(fit_dir, n) for n in dict.fromkeys(order) if n in names]


def _has_files(tf, folder: str) -> bool:
    try:
        return any(files for _, _, files in tf.io.gfile.walk(folder))
    except Exception:  # NotFoundError
        return False


def _copy_tree(tf, src: str, dst: str) -> int:
    """Copy every file under ``src`` to ``dst`` (tf.io.gfile), the ``checkpoint`` index files (which name
    the latest checkpoint) last; returns the bytes copied."""
    copied = 0
    pairs = []
    for folder, _subdirs, files in tf.io.gfile.walk(src):
        rel = folder[len(src) :].lstrip("/")
        target = os.path.join(dst, rel) if rel else dst
        tf.io.gfile.makedirs(target)
        pairs += [(os.path.join(folder, name), os.path.join(target, name)) for name in files]
    for source, target in sorted(pairs, key=lambda pair: os.path.basename(pair[0]) == "checkpoint"):
        tf.io.gfile.copy(source, target, overwrite=True)
        copied += tf.io.gfile.stat(target).length
    return copied


def resume_from_earlier_job(tf, renv: ReplicaEnv) -> dict | None:
    """Copy the earlier job's (``TFK8S_RESUME_FROM``) backups into this replica's own backup dirs, once.

    Returns what was done (``{"from": ..., "fits": [...], "bytes": ...}``), None when the job does not
    resume. Raises SetupError (one sentence) when the earlier job left no checkpoint this job can use.
    """
    source, ckpt = renv.resume_from, renv.checkpoint_dir
    if not source or not ckpt:
        if source:
            raise SetupError(
                "TFK8S_RESUME_FROM is set but this job has no checkpoint dir (TFK8S_CHECKPOINT_DIR) to restore "
                "into; give the job a checkpoint dir."
            )
        return None
    keras3 = not renv.uses_tf_keras
    own = backup_subdir(renv)
    marker = os.path.join(ckpt, RESUMED_MARKER.format(name=renv.name))
    if not owns_backup(renv):
        return _wait_for_owner(tf, renv, ckpt)
    if _same_dir(source, ckpt) or _same_dir(os.path.join(source, ARTIFACT_CHECKPOINTS), ckpt):
        return resume_from_own_job(tf, renv, marker)
    if tf.io.gfile.exists(marker):  # this replica restarted: its copy (or newer checkpoints) are there
        with tf.io.gfile.GFile(marker) as f:
            return json.loads(f.read())
    base = source
    if not (_fit_dirs(tf, base) or _has_files(tf, os.path.join(base, TEMP_DIR))):
        base = os.path.join(source, ARTIFACT_CHECKPOINTS)  # the earlier job's artifact dir was named
    fits = _fit_dirs(tf, base)
    temp = _has_files(tf, os.path.join(base, TEMP_DIR))
    usable, other_flavour = [], []
    per_worker = own == renv.name  # Keras 3 all-reduce: one backup per worker, all of the same weights
    for index, fit_dir in fits:
        folders = _candidates(tf, fit_dir, own)
        match = next((d for d in folders if _has_backup(tf, d, keras3)), None)
        if match and per_worker:
            # every worker restores the same epoch: the newest any worker saved (a worker killed while
            # saving kept its previous backup, or none)
            workers = [d for d in folders if _is_worker(d) and _has_backup(tf, d, keras3)]
            match = max(workers, key=lambda d: backup_position(tf, d), default=match)
        if match:
            usable.append((index, match))
        elif any(_has_backup(tf, d, not keras3) for d in folders):
            other_flavour.append(index)
    if not usable and not temp:
        if other_flavour:
            written, needed = ("tf_keras", "Keras 3") if keras3 else ("Keras 3", "tf_keras")
            raise SetupError(
                f"the checkpoints in {source} were written by {written} and this job trains with {needed}, "
                f"which cannot restore them; resume with the earlier job's strategy (parameter-server and "
                "TFK8S_KERAS=legacy jobs use tf_keras, all-reduce jobs Keras 3)."
            )
        raise SetupError(
            f"the job to resume from has no checkpoint in {source} (it saved none: it ended before its "
            "first epoch did, or trained without fit); resume from a job that saved a checkpoint, or start "
            "without --resume-from."
        )
    done: dict = {"from": source, "fits": [], "bytes": 0}
    for index, folder in usable:
        target = os.path.join(ckpt, f"fit-{index}", own)
        if _has_backup(tf, target, keras3):
            continue  # this job's own checkpoint: newer than the earlier job's
        done["bytes"] += _replace_tree(tf, folder, target)
        done["fits"].append(index)
    own_temp = os.path.join(ckpt, TEMP_DIR)
    if temp and renv.reporting and not _has_files(tf, own_temp):
        # The cell's own checkpoints in multiprocessing's temp dir (TensorFlow's multi_worker_with_ctl):
        # copied before this replica creates the strategy, so no peer can get past its own strategy
        # creation, and reach a restore, before the copy is complete.
        done["temp_bytes"] = _copy_tree(tf, os.path.join(base, TEMP_DIR), own_temp)
    tf.io.gfile.makedirs(ckpt)
    with tf.io.gfile.GFile(marker, "w") as f:
        f.write(json.dumps(done))
    log(f"{renv.name} resumes from {source}: fits {done['fits']} copied ({done['bytes']} bytes)")
    return done


def _replace_tree(tf, source: str, target: str) -> int:
    """Copy ``source`` over ``target`` through a partial copy renamed into place (a replica killed mid-copy
    leaves no half backup); the bytes copied."""
    partial = f"{target}.partial-{uuid.uuid4().hex[:8]}"
    copied = _copy_tree(tf, source, partial)
    if tf.io.gfile.exists(target):
        tf.io.gfile.rmtree(target)
    tf.io.gfile.rename(partial, target)
    return copied


def _same_dir(a: str, b: str) -> bool:
    if is_uri(a) or is_uri(b):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.normpath(a) == os.path.normpath(b)


def backup_position(tf, folder: str) -> tuple:
    """How far a Keras 3 backup folder got: ``(epoch, batch, mtime)`` from its ``training_metadata.json``
    and weights file (``(-1, -1, 0)`` when it has none), to compare the backups of a job's workers."""
    weights = os.path.join(folder, KERAS3_BACKUP)
    try:
        mtime = tf.io.gfile.stat(weights).mtime_nsec
    except Exception:  # NotFoundError: no backup
        return (-1, -1, 0)
    epoch, batch = -1, -1
    try:
        with tf.io.gfile.GFile(os.path.join(folder, KERAS3_METADATA)) as f:
            meta = json.loads(f.read())
        epoch, batch = int(meta.get("epoch", -1)), int(meta.get("batch", -1) or -1)
    except Exception:  # no metadata (a backup of an older Keras): the file's time decides
        pass
    return (epoch, batch, mtime)


def resume_from_own_job(tf, renv: ReplicaEnv, marker: str) -> dict:
    """``TFK8S_RESUME_FROM`` is the job's own checkpoint dir (a resize restarted the job with a new shape):
    in every ``fit-<i>``, a Keras 3 all-reduce worker whose own backup is missing or behind the newest of
    the job's workers (it was removed by an earlier resize and is now added again) takes that newest one,
    so every worker restores the same, latest epoch. Checked at every start, whatever its marker says."""
    ckpt = renv.checkpoint_dir
    done: dict = {"from": ckpt, "own": True, **align_worker_backups(tf, renv)}
    tf.io.gfile.makedirs(ckpt)
    with tf.io.gfile.GFile(marker, "w") as f:
        f.write(json.dumps(done))
    return done


def align_worker_backups(tf, renv: ReplicaEnv) -> dict:
    """A Keras 3 all-reduce worker (one backup folder per worker) whose own backup of a ``fit-<i>`` is
    missing or behind the newest of the job's workers takes that newest one, so every worker restores the
    same epoch (workers restoring different epochs run different collectives and fail). Behind: removed by a
    resize and added again, or killed while it saved (its save renames into place, so it kept the previous
    backup). Also removes what a save or copy of this worker killed halfway left. ``{"fits", "bytes"}``."""
    done: dict = {"fits": [], "bytes": 0}
    ckpt = renv.checkpoint_dir
    if not ckpt or backup_subdir(renv) != renv.name:
        return done
    for index, fit_dir in _fit_dirs(tf, ckpt):
        target = os.path.join(fit_dir, renv.name)
        _remove_leftovers(tf, fit_dir, target)
        folders = [d for d in _candidates(tf, fit_dir, renv.name) if d != target and _is_worker(d)]
        newest = max(folders, key=lambda d: backup_position(tf, d), default=None)
        if newest is None or backup_position(tf, newest) <= backup_position(tf, target):
            continue
        if backup_position(tf, newest)[:2] == backup_position(tf, target)[:2] >= (0, -1):
            continue  # the same epoch saved by both: its own copy is as new
        done["bytes"] += _replace_tree(tf, newest, target)
        done["fits"].append(index)
    if done["fits"]:
        log(f"{renv.name} takes the job's latest backup: fits {done['fits']} copied ({done['bytes']} bytes)")
    return done


def _remove_leftovers(tf, fit_dir: str, target: str) -> None:
    """This worker's half-written files: ``partial-<pid>.*`` of a save killed halfway (in its own backup
    folder) and ``<folder>.partial-<id>`` of a copy killed halfway."""
    own = os.path.basename(target)
    try:
        stale = [os.path.join(target, n) for n in tf.io.gfile.listdir(target) if n.startswith("partial-")]
    except Exception:  # NotFoundError: no backup yet
        stale = []
    try:
        stale += [
            os.path.join(fit_dir, n.rstrip("/"))
            for n in tf.io.gfile.listdir(fit_dir)
            if n.startswith(f"{own}.partial-")
        ]
    except Exception:
        pass
    for path in stale:
        try:
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            else:
                tf.io.gfile.remove(path)
        except Exception:  # removed meanwhile
            pass


def _is_worker(folder: str) -> bool:
    return re.match(r"^worker-\d+$", os.path.basename(folder.rstrip("/"))) is not None


def _wait_for_owner(tf, renv: ReplicaEnv, ckpt: str, period: float = 0.2) -> dict | None:
    """A worker sharing the reporting replica's backup dir waits for its copy (it restores from it too)."""
    owner = "chief-0" if "chief" in renv.cluster else "worker-0"
    marker = os.path.join(ckpt, RESUMED_MARKER.format(name=owner))
    deadline = time.monotonic() + renv.setup_timeout
    while time.monotonic() < deadline:
        if tf.io.gfile.exists(marker):
            with tf.io.gfile.GFile(marker) as f:
                return json.loads(f.read())
        time.sleep(period)
    raise SetupError(
        f"{owner} did not copy the earlier job's checkpoints within {renv.setup_timeout:.0f} s; "
        "see its log for why."
    )


def history_path(renv: ReplicaEnv, fit_index: int) -> str | None:
    """Where this replica records the epochs' logs of its ``fit`` number ``fit_index`` (beside its backup)."""
    if not renv.checkpoint_dir:
        return None
    return os.path.join(
        renv.checkpoint_dir, f"fit-{fit_index}", backup_subdir(renv), f"history-{renv.name}.json"
    )


def keep_fit_history(tf, renv: ReplicaEnv, fit_index: int, history):
    """Record the ``History`` a completed ``fit`` returns, or give back the recorded one when this ``fit``
    trained no epoch because it restored a completed fit (a replica restarted after its fit ended, or a job
    resuming from a finished one): the cell's ``history.history["loss"]`` then reads the epochs the earlier
    attempt trained instead of raising ``KeyError``. Returns ``history`` (filled in place)."""
    path = history_path(renv, fit_index)
    if path is None or history is None or not hasattr(history, "history"):
        return history
    epochs = list(getattr(history, "epoch", None) or [])
    try:
        if epochs:
            logs = {}
            for key, values in dict(history.history).items():
                try:
                    logs[str(key)] = [float(v) for v in values]
                except (TypeError, ValueError):
                    continue
            tf.io.gfile.makedirs(os.path.dirname(path))
            with tf.io.gfile.GFile(path, "w") as f:
                f.write(json.dumps({"epoch": [int(e) for e in epochs], "history": logs}))
        elif tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                recorded = json.loads(f.read())
            history.history = dict(recorded["history"])
            history.epoch = list(recorded["epoch"])
            log(
                f"fit {fit_index} restored a completed fit and trained no epoch; its History holds the "
                f"{len(history.epoch)} epochs recorded before"
            )
    except Exception as exc:  # the record is a convenience: never fail the cell over it
        log(f"fit {fit_index}'s history record in {path}: {type(exc).__name__}: {exc}")
    return history


class RestoreError(RuntimeError):
    """A checkpoint that does not fit the model the cell built (another shape): one sentence."""


def explain_restore_failure(exc: BaseException, backup_dir: str, resumed_from: str | None) -> RestoreError:
    what = " ".join(str(exc).split())[:300].rstrip(".")
    origin = (
        f"the checkpoint copied from the earlier job ({resumed_from})"
        if resumed_from
        else f"the checkpoint in {backup_dir}"
    )
    return RestoreError(
        f"{origin} cannot be restored into the model this cell builds ({type(exc).__name__}: {what}); "
        "resume only with the same model (layers and shapes) and optimizer, or start without --resume-from."
    )


# ----------------------------------------------------------------------------------------------------
# What the cell wrote: TensorBoard folders, the model, artifacts.json


class JobArtifacts:
    """The reporting replica's view of the artifact directory while the cell runs and when it ends."""

    def __init__(self, tf, renv: ReplicaEnv, resumed: dict | None = None) -> None:
        self.tf = tf
        self.renv = renv
        self.root = renv.artifacts_dir
        self.resumed = resumed
        self.tensorboard: list[str] = []  # folders, as recorded in artifacts.json
        self._cell_writer = None

    @property
    def enabled(self) -> bool:
        return bool(self.root) and self.renv.reporting

    def record_tensorboard(self, folder: str) -> None:
        """A TensorBoard folder the job wrote (ours: under ``tensorboard/``; the cell's: its own path)."""
        if not self.enabled or not folder:
            return
        rel = relative_to(self.root, str(folder))
        ours = rel == ARTIFACT_TENSORBOARD or rel.startswith(ARTIFACT_TENSORBOARD + "/")
        entry = ARTIFACT_TENSORBOARD if ours else rel
        if entry not in self.tensorboard:
            self.tensorboard.append(entry)

    def fit_log_dir(self, fit_index: int) -> str:
        path = os.path.join(self.root, ARTIFACT_TENSORBOARD, f"fit-{fit_index}")
        self.record_tensorboard(path)
        return path

    def cell_writer(self):
        """The summary writer for the cell's ``tf.summary`` calls made with no default writer (created once)."""
        if self._cell_writer is None:
            path = os.path.join(self.root, ARTIFACT_TENSORBOARD, CELL_SUMMARIES)
            self._cell_writer = self.tf.summary.create_file_writer(path)
            self.record_tensorboard(path)
        return self._cell_writer

    def close(self) -> None:
        if self._cell_writer is not None:
            try:
                self._cell_writer.flush()
            except Exception as exc:
                log(f"the cell's TensorBoard summaries could not be flushed ({type(exc).__name__}: {exc})")

    def save_model(self, model, keras_flavour: str) -> dict:
        """Save ``model`` as ``model/model.keras``; returns the ``model`` entry of artifacts.json."""
        folder = os.path.join(self.root, ARTIFACT_MODEL)
        path = os.path.join(folder, MODEL_FILE)
        started = time.monotonic()
        self.tf.io.gfile.makedirs(folder)
        model.save(path)
        seconds = time.monotonic() - started
        size = self.tf.io.gfile.stat(path).length
        log(f"saved the trained model to {path} ({size} bytes in {seconds:.3f} s)")
        return {
            "path": f"{ARTIFACT_MODEL}/{MODEL_FILE}",
            "format": "keras",
            "keras": keras_flavour,
            "bytes": int(size),
            "save_seconds": round(seconds, 3),
        }

    def save_in_step(self, model) -> None:
        """A non-reporting all-reduce worker saves the model too, into a local folder it then deletes: Keras's
        ``model.save`` under MultiWorkerMirroredStrategy runs collectives (measured: ``CollectiveBcastSend``;
        worker 0 saving alone fails with ``UnavailableError`` once the other workers have exited), so every
        worker must take part (TensorFlow's ``write_filepath`` idiom). Its copy goes to TensorFlow's in-memory
        file system (``ram://``; Keras zips remote saves in memory), so it costs no disk writes."""
        folder = f"ram://tfk8s-{self.renv.name}-model-{uuid.uuid4().hex[:8]}"
        try:
            model.save(os.path.join(folder, MODEL_FILE))
        except Exception as exc:
            log(f"{self.renv.name}'s part of saving the model failed ({type(exc).__name__}: {exc})")
        finally:
            try:
                self.tf.io.gfile.rmtree(folder)
            except Exception:
                pass

    def finish(self, model, keras_flavour: str, succeeded: bool, reporter=None) -> dict | None:
        """The end of the cell: save the model (when it succeeded), write artifacts.json, return its dict."""
        if not self.enabled:
            in_step = self.renv.strategy == "multi_worker_mirrored" and not self.renv.serves_only
            if in_step and succeeded and self.root and self.renv.save_model and model is not None:
                self.save_in_step(model)
            return None
        self.close()
        index: dict = {"model": None}
        if not succeeded:
            index["model_note"] = "the cell failed, so no model was saved."
        elif not self.renv.save_model:
            index["model_note"] = "the job ran with saving the model turned off (--no-save-model)."
        elif model is None:
            index["model_note"] = (
                "the cell trained no model with fit (a custom loop?), so no model was saved."
            )
        else:
            try:
                index["model"] = self.save_model(model, keras_flavour)
            except Exception as exc:
                reason = " ".join(str(exc).split())[:400]
                message = (
                    f"training succeeded but the trained model could not be saved to "
                    f"{os.path.join(self.root, ARTIFACT_MODEL)} ({type(exc).__name__}: {reason}); "
                    "the checkpoints are kept, resume from them or save the model in the cell."
                )
                log(message)
                index["model_note"] = message
                if reporter is not None:
                    reporter.emit("note", always=True, message=message, about="save")
        index["tensorboard"] = list(self.tensorboard)
        ckpt = self.renv.checkpoint_dir
        index["checkpoints"] = relative_to(self.root, ckpt) if ckpt else None
        index["resumed_from"] = (self.resumed or {}).get("from")
        try:
            with self.tf.io.gfile.GFile(os.path.join(self.root, ARTIFACT_INDEX), "w") as f:
                f.write(json.dumps(index, indent=1))
        except Exception as exc:
            log(f"cannot write {ARTIFACT_INDEX} in {self.root} ({type(exc).__name__}: {exc})")
        return index


def open_artifacts(tf, renv: ReplicaEnv) -> JobArtifacts:
    """At the replica's start: the artifact directory made and proven writable (reporting replica), an
    earlier job's checkpoints copied in (``TFK8S_RESUME_FROM``). Raises SetupError, one sentence."""
    prepare_artifacts(tf, renv)
    try:
        resumed = resume_from_earlier_job(tf, renv)
    except SetupError:
        raise
    except Exception as exc:  # tf.errors.*, OSError: a folder this replica cannot read or write
        reason = " ".join(str(getattr(exc, "message", "") or exc).split())[:300].rstrip(".")
        raise SetupError(
            f"the earlier job's checkpoints in {renv.resume_from} cannot be copied into {renv.checkpoint_dir} "
            f"({type(exc).__name__}: {reason}); make both reachable from this replica (the same storage)."
        ) from None
    if not (resumed or {}).get("own"):  # a restart within the job: its workers restore the same epoch
        try:
            align_worker_backups(tf, renv)
        except Exception as exc:  # tf.errors.*, OSError
            reason = " ".join(str(getattr(exc, "message", "") or exc).split())[:300].rstrip(".")
            raise SetupError(
                f"the job's checkpoints in {renv.checkpoint_dir} cannot be read or written "
                f"({type(exc).__name__}: {reason}); give every replica write access to that folder."
            ) from None
    return JobArtifacts(tf, renv, resumed)
