"""What a job leaves behind, read from the kernel: its artifacts, its trained model, its TensorBoard logs.

Every job has one artifact directory (``TFK8S_ARTIFACTS``, laid out as :mod:`.replica_env` describes):
``checkpoints/``, ``model/``, ``tensorboard/`` and ``artifacts.json``, the index the reporting replica
writes (the model's file, Keras flavour, size and save time; the TensorBoard folders). The backend says
where this kernel reads it (``Backend.artifacts_location``): a local path, read directly, or a
``gs://``/``s3://`` URI, read through ``tf.io.gfile``.

TensorFlow is never imported here at module level: only loading a model (and reading a URI) imports it.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backends.base import RUNNING, SUCCEEDED, TERMINAL, TFK8sError
from .monitor import JobState
from .replica_env import ARTIFACT_CHECKPOINTS, ARTIFACT_INDEX, ARTIFACT_MODEL, ARTIFACT_TENSORBOARD

if TYPE_CHECKING:
    from .backends.base import Backend

KINDS = {
    ARTIFACT_CHECKPOINTS: "checkpoint",
    ARTIFACT_MODEL: "model",
    ARTIFACT_TENSORBOARD: "tensorboard",
}


class ResultsError(TFK8sError):
    """A job's results cannot be read as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Artifact:
    """One file a job wrote: its path relative to the artifact directory, its size and its kind
    (``model``, ``checkpoint``, ``tensorboard``, ``index`` or ``file``)."""

    path: str
    size: int
    kind: str


@dataclass(frozen=True)
class LoadedModel:
    """A model loaded from a job, with where it came from and what loading took."""

    model: Any
    path: str  # the model's location (path or URI)
    size: int  # bytes
    seconds: float  # load time in this kernel
    keras: str  # "keras3" or "tf_keras"


# -- locations ---------------------------------------------------------------------------------------
def is_uri(location: str) -> bool:
    return "://" in location


def join(location: str, rel: str) -> str:
    """``rel`` (forward slashes) under ``location``; an absolute ``rel`` stays as it is."""
    if not rel or rel == ".":
        return location
    if is_uri(rel) or rel.startswith("/"):
        return rel
    if is_uri(location):
        return location.rstrip("/") + "/" + rel
    return str(Path(location) / rel)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _exists(location: str) -> bool:
    return _gfile().exists(location) if is_uri(location) else os.path.exists(location)


def _isdir(location: str) -> bool:
    return _gfile().isdir(location) if is_uri(location) else os.path.isdir(location)


def _walk(location: str) -> list[tuple[str, int]]:
    """Every file under ``location``: ``(relative path with /, size)``, sorted."""
    out = []
    if is_uri(location):
        gfile = _gfile()
        base = location.rstrip("/")
        for top, _dirs, files in gfile.walk(base):
            for f in files:
                full = top.rstrip("/") + "/" + f
                out.append((full[len(base) + 1 :], gfile.stat(full).length))
    else:
        base = Path(location)
        for top, _dirs, files in os.walk(base):
            for f in files:
                full = Path(top) / f
                try:
                    size = full.stat().st_size
                except OSError:
                    continue  # removed while listed (a checkpoint being rotated)
                out.append((full.relative_to(base).as_posix(), size))
    return sorted(out)


def _copy(src: str, dest: Path) -> None:
    """Copy a file or folder (path or URI) to the local ``dest``."""
    if not is_uri(src):
        if os.path.isdir(src):
            shutil.copytree(src, dest, dirs_exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        return
    gfile = _gfile()
    if not gfile.isdir(src):
        dest.parent.mkdir(parents=True, exist_ok=True)
        gfile.copy(src, str(dest), overwrite=True)
        return
    for rel, _size in _walk(src):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        gfile.copy(src.rstrip("/") + "/" + rel, str(target), overwrite=True)


# -- checkpoints (local paths) -------------------------------------------------------------------------
KERAS3_BACKUP = "latest.weights.h5"  # what Keras 3's BackupAndRestore writes in its folder
TF_KERAS_BACKUP = "checkpoint"  # tf_keras's: a tf.train.CheckpointManager's index file


def checkpoint_flavours(checkpoint_dir: str | os.PathLike) -> set[str]:
    """Which Keras wrote the ``fit-<i>`` backups a new job restores from ``checkpoint_dir`` (a local path):
    ``{"keras3"}``, ``{"tf_keras"}``, both, or none (no usable checkpoint)."""
    found = set()
    for fit_dir in Path(checkpoint_dir).glob("fit-*"):
        for f in fit_dir.rglob("*"):
            if f.name == KERAS3_BACKUP and f.is_file():
                found.add("keras3")
            elif f.name == TF_KERAS_BACKUP and f.is_file():
                found.add("tf_keras")
    return found


def keras_of(spec) -> str:
    """The Keras a job trains with: tf_keras with parameter servers or ``TFK8S_KERAS=legacy``, else Keras 3
    (the runner's rule, ``ReplicaEnv.uses_tf_keras``)."""
    legacy = str((spec.env or {}).get("TFK8S_KERAS", "")).strip().lower() in (
        "legacy",
        "tf_keras",
        "tf-keras",
    )
    return "tf_keras" if spec.strategy == "parameter_server" or legacy else "keras3"


def resume_line(spec) -> str | None:
    """What ``--dry-run`` says about ``TFK8S_RESUME_FROM`` (None when the job resumes from nothing).

    Local jobs: the checkpoint directory every replica will restore from, resolved and checked now as the
    submission would (no such job, no checkpoint, or the other Keras raise :class:`~tfk8s_jupyter.spec.SpecError`
    with the submission's sentence). Kubernetes: the earlier job is looked up in the cluster at submission.
    """
    if not spec.resume_from:
        return None
    if spec.backend == "local":
        from .api import backend_for

        path = backend_for("local")._resume_checkpoint(spec)
        return f"# resume: TFK8S_RESUME_FROM={path} (job {spec.resume_from}'s checkpoints, restored by fit)"
    return (
        f"# resume: TFK8S_RESUME_FROM is resolved at submission: job {spec.resume_from}'s checkpoint dir on "
        "its storage, as the new pods see it (the cluster is not asked in a dry run)"
    )


# -- the job's side ----------------------------------------------------------------------------------
def artifacts_root(backend: Backend, name: str) -> str:
    """Where this kernel reads job ``name``'s artifacts.

    Raises:
        ResultsError: the artifacts did not outlive the job's replicas (no storage).
    """
    location = backend.artifacts_location(name)
    if not location:
        raise ResultsError(
            f"job {name!r} kept no artifacts: it ran without storage, so they went with its pods; "
            "run it again with --storage pvc:CLAIM (or a gs:// / s3:// URI) to keep them."
        )
    return location


def end_event(backend: Backend, name: str) -> dict | None:
    """The job's last ``end`` protocol event, if it sent one."""
    ends = [e for e in backend.events(name) if e.get("type") == "end"]
    return ends[-1] if ends else None


def read_index(backend: Backend, name: str) -> dict:
    """``artifacts.json`` of job ``name`` (or, without it, the ``artifacts`` of its ``end`` event); ``{}``
    when the job wrote neither."""
    location = artifacts_root(backend, name)
    index_path = join(location, ARTIFACT_INDEX)
    try:
        if is_uri(index_path):
            gfile = _gfile()
            if gfile.exists(index_path):
                with gfile.GFile(index_path, "r") as f:
                    return json.loads(f.read())
        else:
            return json.loads(Path(index_path).read_text())
    except (OSError, ValueError):
        pass
    end = end_event(backend, name)
    artifacts = (end or {}).get("artifacts")
    return artifacts if isinstance(artifacts, dict) else {}


def cell_files(workdir: str) -> list[tuple[str, int]]:
    """``(path relative to workdir, size)`` of every file the replica wrote there, sorted: its own
    regular files, not the notebook's files presented as links (nor folders linked whole)."""
    out = []
    for root, dirs, files in os.walk(workdir):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        for f in files:
            full = os.path.join(root, f)
            if not os.path.islink(full) and os.path.isfile(full):
                out.append((os.path.relpath(full, workdir).replace(os.sep, "/"), os.path.getsize(full)))
    return sorted(out)


def list_artifacts(backend: Backend, name: str) -> list[Artifact]:
    """Every file job ``name`` wrote into its artifact directory, sorted by path, then the files its cell
    wrote by relative path in the reporting replica's work dir (kind ``cell``, path as the cell named it)."""
    location = artifacts_root(backend, name)
    out = []
    if _exists(location):
        for rel, size in _walk(location):
            top = rel.split("/", 1)[0]
            kind = "index" if rel == ARTIFACT_INDEX else KINDS.get(top, "file") if "/" in rel else "file"
            out.append(Artifact(rel, size, kind))
    workdir = backend.workdir_location(name)  # the cell's saves by relative path, if it outlived the job
    if workdir:
        out.extend(Artifact(rel, size, "cell") for rel, size in cell_files(workdir))
    return out


def download(backend: Backend, name: str, path: str, dest: str | os.PathLike = ".") -> Path:
    """Copy the file or folder ``path`` (relative to the artifact directory; ``"."`` for all of it) into
    the local folder ``dest``; returns the local copy's path.

    Raises:
        ResultsError: ``path`` leaves the artifact directory or the job has no such artifact.
    """
    location = artifacts_root(backend, name)
    rel = posixpath.normpath(str(path).replace(os.sep, "/")) if path else "."
    if rel.startswith("/") or rel == ".." or rel.startswith("../"):
        raise ResultsError(
            f"{path!r} is outside job {name!r}'s artifacts; pass a path relative to them, as "
            "job.artifacts() lists them."
        )
    src = join(location, rel)
    workdir = backend.workdir_location(name) if not _exists(src) else None
    if workdir and os.path.exists(os.path.join(workdir, rel)):
        src = os.path.join(workdir, rel)  # a file the cell saved by relative path
    elif not _exists(src):
        raise ResultsError(f"job {name!r} has no artifact {path!r}; job.artifacts() lists what it wrote.")
    target = Path(dest).expanduser() / (name if rel == "." else posixpath.basename(rel))
    _copy(src, target)
    return target


def tensorboard_dirs(backend: Backend, name: str) -> list[str]:
    """The TensorBoard log folders of job ``name`` that exist: those its index names (a cell's own
    ``TensorBoard`` callback keeps its folder), else ``<artifacts>/tensorboard``."""
    location = artifacts_root(backend, name)
    named = read_index(backend, name).get("tensorboard") or []
    if isinstance(named, str):
        named = [named]
    dirs = [join(location, d) for d in named] or [join(location, ARTIFACT_TENSORBOARD)]
    return [d for d in dict.fromkeys(dirs) if _exists(d) and _isdir(d)]


def model_entry(backend: Backend, name: str) -> dict:
    """The index's ``model`` entry of a job that has one.

    Raises:
        ResultsError: the job still runs, saved no model (failed, stopped, ``--no-save-model``, or no
            Keras ``fit`` finished), or its artifacts did not survive.
    """
    status = backend.get(name)
    if status.phase not in TERMINAL:
        verb = "running" if status.phase == RUNNING else status.phase
        raise ResultsError(
            f"job {name!r} is still {verb}; its model is saved when training ends, so wait for it "
            "(job.wait() or %tfk8s_wait) and load it then."
        )
    spec = backend.spec(name)
    if not getattr(spec, "save_model", True):
        raise ResultsError(
            f"job {name!r} ran with --no-save-model, so it saved no model; its checkpoints are in "
            "job.artifacts(), or run it again without --no-save-model."
        )
    index = read_index(backend, name)
    entry = index.get("model")
    if isinstance(entry, dict) and entry.get("path"):
        return entry
    if status.phase != SUCCEEDED and _fit_completed(backend, name):
        raise ResultsError(
            f"job {name!r} {status.phase} after its fit finished training, so no model was saved; its "
            f"checkpoints hold the trained weights, so fix the cell and run it again with --resume-from "
            f"{name} (resume_from={name!r}), which restores them without training again."
        )
    note = index.get("model_note")
    if isinstance(note, str) and note.strip():
        raise ResultsError(f"job {name!r} saved no model: {note.strip().rstrip('.')}.")
    if status.phase != SUCCEEDED:
        raise ResultsError(
            f"job {name!r} {status.phase} before saving a model; see job.logs() for why, and "
            f"resume it with --resume-from {name} to finish training."
        )
    raise ResultsError(
        f"job {name!r} saved no model: its cell finished no Keras model.fit (a custom loop saves its "
        "own model into TFK8S_ARTIFACTS); job.artifacts() lists what it wrote."
    )


def _fit_completed(backend: Backend, name: str) -> bool:
    """Whether every ``fit`` the job's cell began returned (at least one) after training all its epochs:
    each records its History beside its checkpoint (``checkpoints/fit-<i>/<backup>/history-<replica>.json``,
    ``replica_artifacts.keep_fit_history``), also when a callback stopped it early (``stop_training``),
    whose checkpoint a resumed job trains on from instead of restoring it as final."""
    try:
        ckpt = backend.checkpoint_location(name)
        if not ckpt or not _exists(ckpt):
            return False
        begun, returned = set(), set()
        for rel in (rel for rel, _ in _walk(ckpt)):
            fit = rel.split("/", 1)[0]
            if re.fullmatch(r"fit-\d+", fit):
                begun.add(fit)
                if posixpath.basename(rel).startswith("history-"):
                    returned.add(fit)
        return bool(begun) and begun == returned and _fits_reached_last_epoch(backend, name)
    except (OSError, TFK8sError):
        return False


def _fits_reached_last_epoch(backend: Backend, name: str) -> bool:
    """Whether the last epoch the job reported of each ``fit`` was that fit's last (its ``epoch`` events'
    ``last_epoch``); a fit that reported none (restored as completed) counts as having reached it."""
    last: dict = {}
    for event in backend.events(name):
        if event.get("type") == "epoch" and "fit" in event:
            last[event["fit"]] = event
    return all(event.get("last_epoch") is not False for event in last.values())


def load_model(backend: Backend, name: str, magic: str | None = None, **kwargs) -> LoadedModel:
    """Load job ``name``'s trained model with the Keras flavour it was trained with (``tf_keras`` or
    Keras 3); ``kwargs`` go to ``load_model`` (``custom_objects``, ``compile``). ``magic``: the magic line
    that asked (``%tfk8s_model name``), which a missing class's sentence says to run again instead of
    ``job.model()``.

    Raises:
        ResultsError: as :func:`model_entry`, or the model's file is gone.
    """
    entry = model_entry(backend, name)
    location = artifacts_root(backend, name)
    path = join(location, entry["path"])
    started = time.perf_counter()
    if not _exists(path):
        raise ResultsError(
            f"job {name!r}'s model file {entry['path']!r} is gone from {location}; "
            "job.artifacts() lists what is left."
        )
    flavour = entry.get("keras") or "keras3"
    if flavour == "tf_keras":
        import tf_keras as keras_module
    else:
        import keras as keras_module
    if is_uri(path):
        with tempfile.TemporaryDirectory(prefix="tfk8s-model-") as tmp:
            local = Path(tmp) / posixpath.basename(path.rstrip("/"))
            _copy(path, local)
            model = _load_with_kernel_objects(keras_module, flavour, str(local), name, kwargs, magic)
    else:
        model = _load_with_kernel_objects(keras_module, flavour, path, name, kwargs, magic)
    seconds = time.perf_counter() - started
    size = entry.get("bytes")
    if not isinstance(size, int):
        size = sum(s for _, s in _walk(path)) if _isdir(path) else _size(path)
    return LoadedModel(model, path, int(size), seconds, flavour)


# Keras's words for a class or function a saved model names and the loading process does not have.
_UNKNOWN_OBJECT = re.compile(r"Could not locate (class|function) '([^']+)'")


def _kernel_namespace() -> dict:
    """The notebook's variables: IPython's user namespace in a kernel, else ``__main__``'s."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if shell is not None:
        return shell.user_ns
    main = sys.modules.get("__main__")
    return vars(main) if main is not None else {}


def _keras_of_class(obj) -> str | None:
    """``tf_keras`` or ``keras3`` for a class built on that Keras, ``None`` for anything else."""
    modules = [getattr(c, "__module__", "") or "" for c in getattr(obj, "__mro__", ())]
    if any(m == "tf_keras" or m.startswith("tf_keras.") for m in modules):
        return "tf_keras"
    if any(m == "keras" or m.startswith("keras.") for m in modules):
        return "keras3"
    return None


_KERAS_NAMES = {"tf_keras": "tf_keras (import tf_keras as keras)", "keras3": "Keras 3 (import keras)"}


def _load_with_kernel_objects(
    keras_module, flavour: str, path: str, name: str, kwargs: dict, magic: str | None = None
):
    """``keras_module.models.load_model(path, **kwargs)``; a class or function the model names that the
    job's cell defined (a subclassed model, a custom layer, loss or activation) is taken from the notebook's
    namespace when a cell there defines it on the Keras the job trained with (``flavour``); when none does,
    one sentence says which and how to provide it, to whoever asked: ``job.model()``, or the ``magic`` line.

    The cell ran in the job's replicas, not in this kernel, so what it defined is not here, and Keras's
    own error is a page of the model's config.
    """
    custom = dict(kwargs.pop("custom_objects", None) or {})
    namespace = _kernel_namespace()
    again = f"run {magic} again" if magic else "call job.model() again"
    while True:
        try:
            return keras_module.models.load_model(path, custom_objects=custom or None, **kwargs)
        except (TypeError, ValueError) as e:
            found = _UNKNOWN_OBJECT.search(str(e))
            if found is None:
                raise
            kind, missing = found.groups()
            short = missing.rsplit(">", 1)[-1]
            obj = namespace.get(short)
            keys = {missing, short} | set(re.findall(rf"'([\w.]+>{re.escape(short)})'", str(e)))
            theirs = _keras_of_class(obj)
            if callable(obj) and theirs not in (None, flavour) and not keys <= custom.keys():
                raise ResultsError(
                    f"job {name!r}'s model was trained with {_KERAS_NAMES[flavour]} and uses the {kind} "
                    f"{short!r}, but this notebook's {short} is built on {_KERAS_NAMES[theirs]}; define it "
                    f"with {_KERAS_NAMES[flavour]} in a notebook cell and {again}."
                ) from None
            if not callable(obj) or keys <= custom.keys():
                instead = "" if magic else f", or pass custom_objects={{{short!r}: {short}}}"
                raise ResultsError(
                    f"job {name!r}'s model uses the {kind} {short!r}, which its cell defined where the "
                    f"job ran and this kernel does not have; run its definition in a notebook cell (or "
                    f"import it) and {again}{instead}."
                ) from None
            custom.update(dict.fromkeys(keys, obj))


def _size(path: str) -> int:
    return _gfile().stat(path).length if is_uri(path) else os.path.getsize(path)


# -- the live state -------------------------------------------------------------------------------
class ResultsState(JobState):
    """A :class:`JobState` that also keeps the ``artifacts`` of the job's ``end`` event (what the panel's
    final line says about the saved model)."""

    def __init__(self, name: str, max_points: int = 2000):
        super().__init__(name, max_points)
        self.artifacts: dict | None = None

    def add_events(self, events: list[dict]) -> int:
        for e in events:
            if e.get("type") == "end" and isinstance(e.get("artifacts"), dict):
                self.artifacts = e["artifacts"]
        return super().add_events(events)
