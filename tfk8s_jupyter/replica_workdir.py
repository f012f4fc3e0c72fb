"""The replica's working directory: the payload's files written into it, the notebook's folder presented in
it (local backend) or the job's shipped input files (Kubernetes), writes kept the replica's own, one Keras
download shared by the local replicas, and a missing input file explained.

Runner-side and stdlib only; ships with the runner (``RUNNER_FILES``).
"""

from __future__ import annotations

import builtins
import json
import os
import re
import socket
import sys
import tempfile
import traceback
from pathlib import Path

try:
    from tfk8s_jupyter.replica_env import ReplicaEnv, SetupError
    from tfk8s_jupyter.replica_output import log
except ImportError:  # standalone: the shipped modules sit beside this file
    from replica_env import ReplicaEnv, SetupError  # type: ignore[no-redef]
    from replica_output import log  # type: ignore[no-redef]


def _safe_relpath(rel: str) -> Path:
    path = Path(rel)
    if path.is_absolute() or ".." in path.parts:
        raise SetupError(f"payload file {rel!r} is not a relative path inside the work dir; rename it.")
    return path


# The replica's working directory -------------------------------------------------------------------
# Local backend: the notebook's folder, presented in every replica's work dir (folders recreated, files
# symlinked), so the cell reads its inputs by the paths the notebook uses.
INPUT_DIR_ENV = "TFK8S_INPUT_DIR"
# Kubernetes: each variable ``TFK8S_DATA_DIR_<i>`` names a mounted ConfigMap holding input files (or
# parts of them) as keys, with ``index.json``: key -> [relative path, part, parts].
DATA_DIR_ENV_PREFIX = "TFK8S_DATA_DIR_"
DATA_INDEX = "index.json"
# Folders never presented (noise, or the notebook tooling's own); hidden folders are linked whole.
_MIRROR_SKIP = frozenset({"__pycache__", ".ipynb_checkpoints", ".git"})
_MIRROR_MAX_ENTRIES = 2_000  # past this many entries, folders are linked whole instead of recreated
_LINK_WHOLE = frozenset({"node_modules", "site-packages"})
# What the replica's work dir holds, for the message of a missing file (see explain_missing_file).
_WORKDIR_FACTS: dict = {}


def prepare_workdir(renv: ReplicaEnv, payload) -> Path:
    """Build the replica's working directory, make it the cwd and put it on ``sys.path``.

    The work dir presents the cell's inputs by the relative paths the notebook uses:

    * local backend (``TFK8S_INPUT_DIR``, the notebook's folder): its folders are recreated and its files
      symlinked, so relative paths, ``./data/...``, globs and ``tf.data.Dataset.list_files`` see the
      user's files, while what the replica writes stays in its own work dir: new files land there, and a
      write through Python's ``open`` to a presented file replaces the link by the replica's own file
      (the user's folder is never written);
    * Kubernetes: the input files that travelled with the job (``TFK8S_DATA_DIR_<i>`` mounts, and
      ``payload.data``), written in place;
    * then the payload's text files (local modules) are written, over any presented file of that name.
    """
    if renv.workdir:
        workdir = Path(renv.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix=f"tfk8s-{renv.job}-{renv.name}-"))
    _GUARDED["work"] = None  # a kept replica's previous run: its work dir is guarded no more
    input_dir = os.environ.get(INPUT_DIR_ENV) or ""
    root = Path(input_dir).resolve() if input_dir and os.path.isdir(input_dir) else None
    if root is not None:
        _present_folder(root, workdir)
    shipped = {**shipped_inputs(os.environ), **payload.data}
    for rel, blob in shipped.items():
        _write_own(workdir, _safe_relpath(rel), blob)
    for rel, text in payload.files.items():
        _write_own(workdir, _safe_relpath(rel), text.encode())
    if root is not None:
        _guard_writes(workdir.resolve())
    share_download_cache()
    _WORKDIR_FACTS.clear()
    _WORKDIR_FACTS.update(
        replica=renv.name,
        workdir=str(workdir),
        root=str(root) if root is not None else None,
        inputs=sorted(payload.inputs),
        shipped=sorted(shipped),
        host=socket.gethostname(),
    )
    os.chdir(workdir)
    sys.path.insert(0, str(workdir))
    return workdir


def _present_folder(root: Path, workdir: Path, budget: int = _MIRROR_MAX_ENTRIES) -> None:
    """Recreate ``root``'s folders under ``workdir`` and symlink its files, breadth first (idempotent: a
    restarted replica keeps what it wrote). Hidden folders, ``node_modules``, loops and the folders met
    once ``budget`` entries are presented are linked whole (a write through Python's ``open`` still
    recreates them first, see :func:`_own_parents`)."""
    import collections

    work = workdir.resolve()
    queue = collections.deque([(root, workdir, frozenset())])
    while queue:
        src, dst, seen = queue.popleft()
        try:
            entries = list(os.scandir(src))
        except OSError:
            continue
        for entry in entries:
            if entry.name in _MIRROR_SKIP:
                continue
            budget -= 1
            target = dst / entry.name
            try:
                st = entry.stat() if entry.is_dir() else None
            except OSError:
                st = None
            if st is not None:
                real = Path(entry.path).resolve()
                if work == real or real in work.parents:
                    continue  # the folder holding the job records: never present the work dir in itself
                key = (st.st_dev, st.st_ino)
                if (
                    budget > 0
                    and key not in seen
                    and not entry.name.startswith(".")
                    and entry.name not in _LINK_WHOLE
                ):
                    if target.is_symlink() or (os.path.lexists(target) and not target.is_dir()):
                        continue  # the replica's own file of that name
                    target.mkdir(exist_ok=True)
                    queue.append((Path(entry.path), target, seen | {key}))
                    continue
            if not os.path.lexists(target):
                os.symlink(os.path.abspath(entry.path), target)


def _own_parents(workdir: Path, rel: Path) -> None:
    """Make every folder on the way to ``workdir/rel`` a real folder of the work dir (a folder linked
    whole is recreated with links to its entries), so writing there cannot reach the linked folder."""
    here = workdir
    for part in rel.parts[:-1]:
        here = here / part
        if here.is_symlink():
            linked = Path(os.readlink(here))
            here.unlink()
            here.mkdir()
            if linked.is_dir():
                for entry in os.scandir(linked):
                    os.symlink(os.path.abspath(entry.path), here / entry.name)
        here.mkdir(exist_ok=True)


def _write_own(workdir: Path, rel: Path, blob: bytes) -> None:
    _own_parents(workdir, rel)
    target = workdir / rel
    if target.is_symlink():
        target.unlink()
    target.write_bytes(blob)


# The work dir whose presented files the write guards protect: the current run's (None: nothing presented,
# nothing guarded). The guards are installed once per process and read it, so a kept replica's next run
# guards its own work dir (not its first run's), no wrapper piles up run after run, and presenting the
# next run's folder goes through no guard.
_GUARDED: dict = {"work": None}
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _inside(path) -> tuple[Path, Path] | None:
    """(absolute path, path relative to the guarded work dir) when ``path`` is inside it, else None."""
    work = _GUARDED["work"]
    if work is None:
        return None
    try:
        path = os.fsdecode(os.fspath(path))
        if _URI.match(path):  # another file system (ram://, gs://, s3://): never a file of the work dir
            return None
        full = Path(os.path.abspath(path))
        rel = full.relative_to(work)
    except (TypeError, ValueError):
        return None
    return (full, rel) if rel.parts else None


def _own(path, keep: bool, creates: bool = True) -> None:
    """``path`` is about to be written: make it (and its folders) the replica's own, with the presented
    file's content when the write ``keep``s it, else empty when the write does not create it."""
    import shutil

    found = _inside(path)
    if found is None:
        return
    full, rel = found
    _own_parents(_GUARDED["work"], rel)
    if full.is_symlink():
        linked = os.path.realpath(full)
        full.unlink()
        if keep and os.path.isfile(linked):
            shutil.copyfile(linked, full)
        elif not creates and os.path.isfile(linked):
            full.touch()


def _own_folder(path) -> None:
    """Something is created, moved or deleted in the folder ``path``: make it a folder of the work dir."""
    found = _inside(path)
    if found is not None:
        _own_parents(_GUARDED["work"], found[1] / "-")


def _own_parents_of(path) -> None:
    found = _inside(path)
    if found is not None:
        _own_parents(_GUARDED["work"], found[1])


def _own_tree(path) -> None:
    """``path`` is about to be deleted recursively: its links go first (only they, not what they name)."""
    _own_parents_of(path)
    found = _inside(path)
    if found is None or not os.path.lexists(found[0]):
        return
    if found[0].is_symlink():
        found[0].unlink()
        return
    for folder, dirs, files in os.walk(found[0]):
        for name in dirs + files:
            if os.path.islink(os.path.join(folder, name)):
                os.unlink(os.path.join(folder, name))


def _guard_writes(work: Path) -> None:
    """Every write a replica makes to a presented file of the work dir writes the replica's own copy.

    A write that would follow a link to the notebook's folder breaks the link first (keeping the file's
    content when the write keeps it: append, update), and a write into a folder linked whole recreates it
    first (:func:`_own_parents`). Guarded at each gate a cell's writes pass: Python's ``open`` (and so
    ``np.save``, ``shutil.copy``, ``pathlib``, pandas, PIL), the ``os`` calls that write, create, move or
    delete by path, TensorFlow's file system (``tf.io.gfile``, ``GFile``, checkpoints and SavedModel's file
    writes, ``tf.io.gfile.copy``) and ``tf.io.write_file``, and h5py (Keras's ``.h5`` files). The gates are
    installed once per process (the first time each is there); ``work`` is what they guard from now on.
    """
    import io

    _GUARDED["work"] = work
    if not getattr(builtins.open, "_tfk8s", False):
        original_open = io.open

        def guarded_open(file, mode="r", *args, **kwargs):
            if isinstance(mode, str) and not isinstance(file, int) and any(c in mode for c in "wax+"):
                _own(file, keep="a" in mode or "+" in mode)
            return original_open(file, mode, *args, **kwargs)

        guarded_open.__doc__ = original_open.__doc__
        guarded_open._tfk8s = True
        builtins.open = guarded_open
        io.open = guarded_open

    writing = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

    def os_open_check(path, flags, *args, dir_fd=None, **kwargs):
        if dir_fd is None and flags & writing:
            _own(path, keep=not flags & os.O_TRUNC, creates=bool(flags & os.O_CREAT))

    _before(os, "open", os_open_check)
    _before(os, "truncate", lambda path, *a, **k: isinstance(path, int) or _own(path, keep=True))
    _before(os, "mkdir", lambda path, *a, **k: _own_parents_of(path))
    _before(os, "rename", lambda src, dst, *a, **k: (_own_parents_of(src), _own_parents_of(dst)))
    _before(os, "replace", lambda src, dst, *a, **k: (_own_parents_of(src), _own_parents_of(dst)))
    _before(os, "remove", lambda path, *a, **k: _own_parents_of(path))
    _before(os, "unlink", lambda path, *a, **k: _own_parents_of(path))
    _before(os, "rmdir", lambda path, *a, **k: _own_parents_of(path))

    file_io = sys.modules.get("tensorflow.python.lib.io._pywrap_file_io")
    if file_io is not None:  # TensorFlow's file system: tf.io.gfile, GFile, checkpoints, SavedModel
        _before(file_io, "WritableFile", lambda name, mode, *a, **k: _own(name, keep=b"a" in bytes(mode)))
        _before(file_io, "CopyFile", lambda src, dst, *a, **k: _own(dst, keep=False))
        _before(file_io, "CreateDir", lambda path, *a, **k: _own_parents_of(path))
        _before(file_io, "RecursivelyCreateDir", lambda path, *a, **k: _own_folder(path))
        _before(file_io, "RenameFile", lambda src, dst, *a, **k: (_own_parents_of(src), _own_parents_of(dst)))
        _before(file_io, "DeleteFile", lambda path, *a, **k: _own_parents_of(path))
        _before(file_io, "DeleteRecursively", lambda path, *a, **k: _own_tree(path))
    if "tensorflow" in sys.modules:
        _guard_write_file_op(sys.modules["tensorflow"], _own)
    try:
        import h5py  # Keras's .h5 files are written by the HDF5 library itself
    except ImportError:
        h5py = None
    if h5py is not None:
        original_init = h5py.File.__init__

        def h5_init(self, name, mode="r", *args, **kwargs):
            if isinstance(name, (str, bytes, os.PathLike)) and mode in ("w", "w-", "x", "a", "r+"):
                _own(name, keep=mode in ("a", "r+"))
            return original_init(self, name, mode, *args, **kwargs)

        if not getattr(original_init, "_tfk8s", False):
            h5_init._tfk8s = True
            h5py.File.__init__ = h5_init


def _before(owner, name: str, check) -> None:
    """Make ``owner.name`` call ``check`` with its arguments first."""
    original = getattr(owner, name, None)
    if original is None or getattr(original, "_tfk8s", False):
        return

    def guarded(*args, **kwargs):
        check(*args, **kwargs)
        return original(*args, **kwargs)

    guarded._tfk8s = True
    guarded.__doc__ = original.__doc__
    setattr(owner, name, guarded)


def _guard_write_file_op(tf, own) -> None:
    """``tf.io.write_file``: the file it names becomes the replica's own before the op runs (when the name is
    known while a function is traced, then; else by an op that runs first)."""
    original = tf.io.write_file
    if getattr(original, "_tfk8s", False):
        return

    def take(filename):
        own(bytes(filename), keep=False)
        return []

    def write_file(filename, contents, name=None):
        if tf.executing_eagerly():
            own(bytes(tf.convert_to_tensor(filename).numpy()), keep=False)
            return original(filename, contents, name=name)
        known = tf.get_static_value(filename)
        if known is not None:
            own(known if isinstance(known, (str, bytes)) else bytes(known), keep=False)
            return original(filename, contents, name=name)
        taken = tf.numpy_function(take, [filename], Tout=[], stateful=True)
        with tf.control_dependencies(taken or [tf.no_op()]):
            return original(filename, contents, name=name)

    write_file._tfk8s = True
    write_file.__doc__ = original.__doc__
    for module in (tf.io, getattr(tf.compat.v1, "io", None), tf.compat.v1):
        if module is not None and getattr(module, "write_file", None) is original:
            module.write_file = write_file


def share_download_cache(lock_path: str | None = None) -> None:
    """One download of a Keras dataset per machine, not one per replica.

    ``keras.utils.get_file`` (behind ``keras.datasets.*.load_data``, Keras 3 and tf_keras alike) downloads
    straight into its cache, ``~/.keras/datasets``, which the local replicas of a job share (one home): at
    the same time, each would download, and one could read another's half-written file. Every replica's
    ``get_file`` takes an exclusive file lock first, so the first downloads and the others then find the
    file in the cache. ``tensorflow_datasets`` the same way: :func:`share_tfds_preparation`.
    """
    import fcntl
    import functools

    lock_path = lock_path or os.path.join(tempfile.gettempdir(), f"tfk8s-downloads-{os.getuid()}.lock")
    share_tfds_preparation(lock_path)
    originals = []
    for modname in ("keras.src.utils.file_utils", "tf_keras.src.utils.data_utils"):
        fn = getattr(sys.modules.get(modname), "get_file", None)
        if fn is not None and not getattr(fn, "_tfk8s_shared", False):
            originals.append(fn)
    if not originals:
        return

    def shared(fn):
        @functools.wraps(fn)
        def get_file(*args, **kwargs):
            with open(lock_path, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    return fn(*args, **kwargs)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

        get_file._tfk8s_shared = True
        return get_file

    wrapped = {id(fn): shared(fn) for fn in originals}
    # The datasets modules imported get_file by name: replace it wherever it was bound (module dicts
    # only, so lazily loaded modules stay unloaded).
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if isinstance(namespace, dict) and id(namespace.get("get_file")) in wrapped:
            namespace["get_file"] = wrapped[id(namespace["get_file"])]


TFDS_BUILDER_MODULE = "tensorflow_datasets.core.dataset_builder"


def share_tfds_preparation(lock_path: str) -> None:
    """One download and preparation of a ``tensorflow_datasets`` dataset per machine, not one per replica.

    The local replicas share its data dir (``TFDS_DATA_DIR`` or ``~/tensorflow_datasets``, one home):
    every builder's ``download_and_prepare`` takes the same lock as Keras's downloads, so the first
    replica downloads and prepares, and the others then find the prepared dataset (and read its info,
    which their builder, made before it existed, lacks). Installed when the cell imports the package.
    """
    module = sys.modules.get(TFDS_BUILDER_MODULE)
    if module is not None:
        _share_tfds_builder(module, lock_path)
    elif not any(isinstance(f, _AfterImport) and f.name == TFDS_BUILDER_MODULE for f in sys.meta_path):
        sys.meta_path.insert(
            0, _AfterImport(TFDS_BUILDER_MODULE, lambda m: _share_tfds_builder(m, lock_path))
        )


def _share_tfds_builder(module, lock_path: str) -> None:
    import fcntl
    import functools

    builder = getattr(module, "DatasetBuilder", None)
    original = getattr(builder, "download_and_prepare", None)
    if original is None or getattr(original, "_tfk8s_shared", False):
        return

    @functools.wraps(original)
    def download_and_prepare(self, *args, **kwargs):
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                result = original(self, *args, **kwargs)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        try:
            if not self.info.splits and self.data_path.exists():  # another replica prepared it meanwhile
                self.info.read_from_directory(self.data_dir)
        except Exception as exc:  # its own reading says what is wrong, when the cell reads it
            log(f"the prepared dataset's info could not be read ({type(exc).__name__})")
        return result

    download_and_prepare._tfk8s_shared = True
    builder.download_and_prepare = download_and_prepare


class _AfterImport:
    """A ``sys.meta_path`` finder that calls ``then(module)`` once the module ``name`` has been executed."""

    def __init__(self, name: str, then) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        import importlib.util

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        execute = loader.exec_module

        def exec_module(module):
            execute(module)
            self.then(module)

        loader.exec_module = exec_module
        return spec


def shipped_inputs(environ) -> dict[str, bytes]:
    """The input files in the job's data mounts (``TFK8S_DATA_DIR_<i>``), reassembled from their parts."""
    parts: dict[str, list] = {}
    for name, folder in sorted(environ.items()):
        if not name.startswith(DATA_DIR_ENV_PREFIX):
            continue
        try:
            index = json.loads((Path(folder) / DATA_INDEX).read_text())
        except (OSError, ValueError) as exc:
            raise SetupError(
                f"the job's input files in {folder} cannot be read ({exc}); submit the job again."
            ) from None
        for key, (rel, part, count) in index.items():
            slots = parts.setdefault(rel, [None] * int(count))
            slots[int(part)] = (Path(folder) / key).read_bytes()
    out = {}
    for rel, slots in parts.items():
        if any(s is None for s in slots):
            raise SetupError(f"the input file {rel!r} reached this replica incomplete; submit the job again.")
        out[rel] = b"".join(slots)
    return out


_PS_CHECKPOINT_OPS = ("SaveV2", "RestoreV2", "MergeV2Checkpoints")
_NOT_FOUND_PATH = re.compile(r"([^\s\"]+); No such file")


def explain_ps_checkpoint(exc: BaseException) -> str | None:
    """A checkpoint a parameter server could not write or read, in one sentence: with parameter servers each
    ps saves and restores its own variables, so the checkpoint's path must reach the ps, not only the chief
    (a relative path is each replica's own work dir). ``None`` for any other error."""
    text = str(exc)
    if (
        type(exc).__name__ != "NotFoundError"
        or "/job:ps" not in text
        or not any(op in text for op in _PS_CHECKPOINT_OPS)
    ):
        return None
    found = _NOT_FOUND_PATH.search(text)
    path = _as_written(found.group(1)) if found else None
    named = f"the checkpoint path {path!r}" if path else "the checkpoint's path"
    where = (
        "is relative, that is inside each replica's own work dir, where the ps has no such folder"
        if path and not os.path.isabs(path)
        else "does not exist where the parameter servers run"
    )
    call = _save_call(exc)
    leaf = "model" if call and call.rsplit(".", 1)[-1] in ("save", "save_model") else "weights"
    return (
        f"NotFoundError: with parameter servers each ps saves and restores its own variables, but {named} "
        f"{where}; give {call or 'ModelCheckpoint, save_weights or tf.train.Checkpoint'} an absolute path "
        f"every replica reaches, such as os.path.join(os.environ['TFK8S_CHECKPOINT_DIR'], '{leaf}')."
    )


# What TensorFlow appends to the path a cell gave: a SavedModel's ``variables/variables``, the ``_temp``
# folder a checkpoint is written to before it is renamed.
_TF_PATH_PARTS = re.compile(r"(?:/variables/variables)?(?:_temp(?:_[0-9a-f]{32})?)?(?:/part-\d+)?$")


def _as_written(path: str) -> str:
    """``path`` as the cell wrote it: ``exported/variables/variables_temp`` -> ``exported``, ``w/ckpt_temp``
    -> ``w/ckpt`` (TensorFlow's own additions removed)."""
    return _TF_PATH_PARTS.sub("", path.rstrip("/")) or path


# A call that saves or restores variables, as a cell's line names it: ``tf.saved_model.save(``,
# ``model.save_weights(``, ``tf.keras.callbacks.ModelCheckpoint(``, ``ckpt.write(``.
_SAVE_CALL = re.compile(
    r"(?<![\w.])((?:[A-Za-z_]\w*\.)*(?:save|save_weights|save_model|load_weights|write|read|restore|"
    r"ModelCheckpoint))\s*\("
)


def _save_call(exc: BaseException) -> str | None:
    """The save (or restore) call of the cell's own line the exception came through, as the cell wrote it
    (innermost cell or prelude frame first); ``None`` when no such line names one."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if frame.filename.startswith("<tfk8s-"):  # the cell (or prelude) as the runner compiles it
            found = _SAVE_CALL.search(frame.line or "")
            if found:
                return found.group(1)
    return None


# TensorFlow's words when the workers of an all-reduce group reach different collective operations.
_COLLECTIVE_MISMATCH = re.compile(
    r"Collective instance \d+ expected|Shape mismatch in the collective instance"
)


def explain_collective_mismatch(exc: BaseException) -> str | None:
    """All-reduce workers that no longer run the same steps, in one sentence: TensorFlow's "Collective
    instance N expected ... but got ..." says their collective operations differ; after a restart that is
    workers restoring different checkpoints (a relative path is each worker's own work dir, where only the
    worker that saved it finds it). ``None`` for any other error."""
    if not _COLLECTIVE_MISMATCH.search(str(exc)):
        return None
    return (
        f"{type(exc).__name__}: the all-reduce workers ran different collective operations, so they were no "
        "longer running the same steps, as after a restart when each restores a different checkpoint (a "
        "relative checkpoint path is each worker's own work dir, and only the worker that saved there finds "
        "it); restore every worker from the chief's checkpoint under an absolute path they all reach, such as "
        "os.path.join(os.environ['TFK8S_CHECKPOINT_DIR'], 'ckpt'), as TensorFlow's multi-worker custom "
        "loop tutorial does."
    )


def explain_missing_file(exc: BaseException) -> str | None:
    """A missing file, told in one sentence: where this replica runs, what it was given, and the fix."""
    text = str(exc)
    missing = (
        isinstance(exc, FileNotFoundError)
        or (type(exc).__name__ == "NotFoundError" and "No such file" in text)  # TensorFlow's file ops
        or "No files matched pattern" in text  # tf.data.Dataset.list_files
    )
    if not missing or not _WORKDIR_FACTS:
        return None
    facts = _WORKDIR_FACTS
    what = f"{type(exc).__name__}: {' '.join(text.split())[:300]}".strip()
    name = getattr(exc, "filename", None)
    named = f"{name!r}" if name else "that path"
    if isinstance(name, str) and os.path.isabs(name) and not name.startswith(facts["workdir"]):
        return (
            f"{what} — {facts['replica']} runs on {facts['host']}, where {named} does not exist; read it by a "
            "path relative to the notebook's folder (such files reach the replicas), or use a path that "
            "exists on every replica's machine."
        )
    if facts["root"]:
        return (
            f"{what} — {facts['replica']} runs in {facts['workdir']}, which presents the notebook's folder "
            f"{facts['root']} as it was when the replica started, and {named} is not there; put the file "
            "in the notebook's folder (or a folder inside it) and read it by its relative path."
        )
    shipped = facts["shipped"]
    listed = ", ".join(shipped[:8]) + (f" and {len(shipped) - 8} more" if len(shipped) > 8 else "")
    return (
        f"{what} — {facts['replica']} runs on {facts['host']} in {facts['workdir']}, where only the input "
        f"files found at submission arrived ({listed or 'none'}); name the file by its relative path in the "
        "cell or with --files so it travels with the job, or read it from a URI inside the cell."
    )
