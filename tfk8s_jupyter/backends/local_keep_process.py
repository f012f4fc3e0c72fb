"""The replica side of kept replicas (see :mod:`.local_keep`): a replica whose job succeeded, or whose cell
raised an error that left the process healthy (:func:`note_failure`), stays, idle on a FIFO, and runs the
next job of the same shape in the same process.

A replica is keepable when its environment carries ``TFK8S_KEEP`` (JSON: its member directory in the job's
kept set, the owner's pid and start time, the seconds to stay). Training replicas come here when the
runner's ``main`` returned (:func:`after_run`, from the runner's ``__main__`` and from a pool process): 0, or
1 after a cell error :func:`note_failure` judged harmless (outside any training call, or while Keras
traced a first step: :func:`raised_while_first_traced`) — the replica then also writes ``failed.json``
(its pid and code) into its member directory: for its supervisor it has ended its run with that code, and
the job fails as it would have, while the process waits to be kept with the others
(:func:`.local_keep.keep_after_error`); serving replicas (ps, and workers of parameter-server jobs) when they start serving
(:func:`keep_serving`, a thread beside ``server.join()``: their server simply stays).

While kept, a process:

- has given up dying with its supervisor by ``PR_SET_PDEATHSIG``: a pidfd watch kills it when the
  supervisor ends *unless* the supervisor marked it kept (``kept`` in its member directory);
- dies with its owner (the kernel that submitted: a pidfd watch), and after ``seconds`` without a job;
- blocks on its FIFO ``go`` (no CPU): ``exit`` ends it, ``go`` hands it a new assignment (environment,
  working directory, log file, the new supervisor's pid) which it accepts (``accepted``), then it resets what
  a run leaves in a process (:func:`reset_process`) and runs ``main`` again as the new job's replica.

A replica whose cell left a thread running or a file open (measured against the baseline taken before the
cell, :func:`before_cell`; see :mod:`.local_keep_hygiene`) is not kept: threads are looked at before it
says it can be kept (its supervisor then keeps nothing and ends the job as usual), files once the reset
collected the cell's objects (a set already kept is withdrawn: its idle marker taken back, its other
members told to exit). It writes one line into its log naming what was left and exits as a cold replica
would (``os._exit``: a non-daemon thread holds nothing up).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import random
import select
import signal
import sys
import threading
import time
from pathlib import Path

from . import local_keep_hygiene as hygiene
from . import local_keep_settings as keep_settings
from .local_keep_hygiene import own
from .local_keep_judge import judge_failure
from .local_processes import release_file_pages

KEEP_VAR = "TFK8S_KEEP"
CLAIMED_WAIT = 10.0  # seconds to wait for the assignment when a claimer took the set as it expired
PR_SET_PDEATHSIG = 1


class _State:
    failure: tuple[str | None] | None = None  # the last run's cell error, judged: (why not,) or (None,)
    supervisor: int | None = None  # the supervisor this process currently serves
    slot: Path | None = None  # its member directory in the current job's kept set
    owner_watched = False
    owner_gone = False  # the owner ended while this process served a job: keep nothing after it
    claimed = False  # this process runs a job it was kept for (not its first)
    modules: frozenset[str] | None = None  # the modules imported before this process's first cell
    lock = threading.Lock()


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def config(environ=None) -> dict | None:
    """The keep settings of the current run, or None (not keepable)."""
    text = (os.environ if environ is None else environ).get(KEEP_VAR)
    if not text:
        return None
    try:
        cfg = json.loads(text)
        return cfg if float(cfg.get("seconds") or 0) > 0 and cfg.get("slot") else None
    except (ValueError, TypeError, AttributeError):
        return None


def survives(supervisor_pid: int) -> bool:
    """Whether this process outlives the end of supervisor ``supervisor_pid``: it was kept by it, or it
    serves another supervisor by now."""
    with _State.lock:
        if _State.supervisor is None:
            return False
        if _State.supervisor != supervisor_pid:
            return True
        return _State.slot is not None and (_State.slot / "kept").exists()


def _on_exit_of(pid: int, ticks: int | None, action) -> None:
    """Call ``action()`` in a daemon thread once process ``pid`` (started at ``ticks``) ends."""
    if _start_ticks(pid) != ticks:
        action()
        return
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        action()
        return

    def watch() -> None:
        select.select([fd], [], [])
        os.close(fd)
        action()

    own(threading.Thread(target=watch, name="tfk8s-keep-watch", daemon=True)).start()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _owner_gone() -> None:
    """The kernel that submitted ended: a kept process (idle between jobs) ends with it; one that serves a
    running job does not (a job outlives its kernel: a restarted kernel attaches to it), and its
    supervisor keeps nothing once the job ends (:func:`.local_keep.keep_at_end`)."""
    with _State.lock:
        _State.owner_gone = True
        slot = _State.slot
    if slot is not None and (slot / "kept").exists():
        _die()


def _serve_supervisor(pid: int, ticks: int | None, slot: Path) -> None:
    """From now on this process serves supervisor ``pid``: it dies with it unless kept."""
    with _State.lock:
        _State.supervisor, _State.slot = pid, slot
    _on_exit_of(pid, ticks, lambda: None if survives(pid) else _die())


def release_parent_death() -> None:
    """No SIGKILL when the supervisor (the parent) ends: the pidfd watch of :func:`_serve_supervisor`
    decides instead. The setting belongs to the thread that made it: call it in the main thread."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0)


def _prepare(cfg: dict) -> int:
    """Make this process keepable under ``cfg``; returns the FIFO's fd."""
    release_parent_death()
    if _State.supervisor is None or _State.slot != Path(cfg["slot"]):
        supervisor = int(cfg.get("supervisor") or os.getppid())
        _serve_supervisor(supervisor, cfg.get("supervisor_ticks"), Path(cfg["slot"]))
    if not _State.owner_watched:
        _State.owner_watched = True
        _on_exit_of(int(cfg["owner"]), cfg.get("owner_ticks"), _owner_gone)
    slot = Path(cfg["slot"])
    slot.mkdir(parents=True, exist_ok=True)
    fifo = slot / "go"
    if not fifo.exists():
        os.mkfifo(fifo)
    return os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # never EOF: this process holds a writer too


def _announce(cfg: dict, serving: bool, code: int = 0) -> None:
    from tfk8s_jupyter.backends.local_pool import import_key

    _write_json(
        Path(cfg["slot"]) / "ready.json",
        {
            "pid": os.getpid(),
            "start_ticks": _start_ticks(os.getpid()),
            "key": import_key(os.environ, sys.executable),
            "serving": serving,
            "keras": _keras_flavour(),
            "code": code,
            "job": os.environ.get("TFK8S_JOB"),
            "replica": f"{os.environ.get('TFK8S_ROLE')}-{os.environ.get('TFK8S_INDEX')}",
            "at": time.time(),
        },
    )


def _keras_flavour() -> str | None:
    """The Keras this replica's runs use, as ``%tfk8s_pool`` lists it (None when its contract is unreadable)."""
    from tfk8s_jupyter.replica_env import SetupError, read_env

    try:
        return "tf_keras" if read_env().uses_tf_keras else "keras3"
    except SetupError:
        return None


def wait_for_assignment(cfg: dict, fifo_fd: int) -> dict | None:
    """Block (no CPU) until the next job's assignment (its dict) or the end of keeping (None)."""
    slot = Path(cfg["slot"])
    deadline = time.monotonic() + float(cfg["seconds"])
    expired = False
    while True:
        if _State.owner_gone and (slot / "kept").exists():
            return None  # kept after its owner ended: nobody can claim it
        if not slot.is_dir():
            return None  # its kept set's directory was removed: nobody can claim it (looked at every 5 s)
        timeout = min(max(0.0, deadline - time.monotonic()), 5.0)
        readable, _, _ = select.select([fifo_fd], [], [], timeout)
        if readable:
            try:
                data = os.read(fifo_fd, 64)
            except BlockingIOError:
                continue
            if b"exit" in data:
                return None
            if b"go" in data:
                path = slot / "assignment.json"
                try:
                    assignment = json.loads(path.read_text())
                    path.unlink()  # it holds the job's protocol key: in this process only now
                except (OSError, ValueError):
                    continue
                return assignment
            continue
        if time.monotonic() < deadline:
            continue  # a look at the owner every 5 s
        if expired:
            return None
        # keep_warm is over: withdraw the set, unless a claimer took it a moment ago
        expired = True
        marker = cfg.get("marker")
        if not marker or not (slot / "kept").exists():
            return None
        try:
            os.rename(marker, Path(marker).parent.parent / "retired" / Path(marker).name)
            return None
        except FileNotFoundError:
            if not (Path(marker).parent.parent / "claimed" / Path(marker).name).exists():
                return None
            deadline = time.monotonic() + CLAIMED_WAIT
        except OSError:
            return None


def _accept(cfg: dict, assignment: dict) -> None:
    new = config(assignment["env"]) or {}
    _serve_supervisor(
        int(assignment["watch_pid"]),
        assignment.get("watch_ticks"),
        Path(new.get("slot") or cfg["slot"]),
    )
    _State.claimed = True
    (Path(cfg["slot"]) / "accepted").touch()


def _redirect(log_path: str) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)


def become(assignment: dict) -> None:
    """Take the assignment's environment, working directory and log, as a pool process does."""
    os.environ.clear()
    os.environ.update(assignment["env"])
    os.chdir(assignment["cwd"])
    sys.path[0] = os.getcwd()
    _redirect(assignment["log"])


def after_run(code: int, main) -> int:
    """Called when ``main`` returned ``code``: keep the process for the next run of the same shape while
    the job allows it (``code`` 0, or 1 after a harmless cell error, :func:`note_failure`), running ``main``
    again for each assignment; returns the exit code to leave with."""
    claimed = False
    while True:
        cfg = config()
        if cfg is None:
            break
        why = _take_failure(code)
        if why is not None:
            if why:
                _say_not_kept(cfg, why)
            break
        sys.stdout.flush()
        sys.stderr.flush()
        # threads the cell left running: not kept, and the job's supervisor learns it before keeping anything
        _stop_coordinator(_default_strategy())  # the previous run's coordinator threads are the runner's
        left = hygiene.leftovers(files=False)
        if left:
            _not_kept(cfg, left)
            break
        fifo_fd = _prepare(cfg)
        _announce(cfg, serving=False, code=code)  # the job can end now
        if code != 0:  # for the supervisor, this run has ended with ``code``; the process waits to be kept
            _write_json(Path(cfg["slot"]) / "failed.json", {"pid": os.getpid(), "code": code})
        # reset before reading the FIFO, not once the next job waits for this process (measured: ~1 s, more
        # under load: a claimer waits for a member that says it is resetting)
        resetting = Path(cfg["slot"]) / "resetting"
        resetting.touch()
        reset_process(dict(os.environ), os.getcwd())
        left = hygiene.leftovers()  # files still open once the cell's objects are collected are held
        if left:
            os.close(fifo_fd)
            _not_kept(cfg, left)
            _withdraw(cfg)
            resetting.unlink(missing_ok=True)
            break
        release_file_pages()  # idle: TensorFlow's code pages back to the page cache (RSS ~700 -> ~350 MB)
        _verdict(cfg, "ok")  # the job's supervisor says "kept" once every member said this
        resetting.unlink(missing_ok=True)
        assignment = wait_for_assignment(cfg, fifo_fd)
        os.close(fifo_fd)
        if assignment is None:
            break
        _accept(cfg, assignment)
        claimed = True
        become(assignment)
        code = main()
    cfg = config()
    if claimed and cfg is not None:  # the claiming supervisor is not this process's parent
        Path(cfg["slot"]).mkdir(parents=True, exist_ok=True)
        _write_json(Path(cfg["slot"]) / "exit.json", {"code": code})
    return code


# ------------------------------------------------------------------------------------- after a cell error
EXIT_CELL_ERROR = 1  # the runner's exit status for an error the cell raised


def note_failure(exc: BaseException, event: dict, fits: int | None = None) -> None:
    """The runner, when the cell raised ``exc`` (``fits``: the fits its run began): whether the process
    may be kept after it (:func:`judge_failure`), read by :func:`after_run`."""
    try:
        why = judge_failure(exc, event, fits)
    except Exception as e:  # noqa: BLE001 (judging must never hide the cell's error: not kept)
        why = f"its cell's error could not be judged ({type(e).__name__})"
    _State.failure = (why,)


def _take_failure(code: int) -> str | None:
    """None when a run that returned ``code`` may be kept; else why not ("" when nothing is to be said)."""
    noted, _State.failure = _State.failure, None
    if code == 0:
        return None
    if code != EXIT_CELL_ERROR or noted is None:
        return ""  # a set-up error, or an error nobody judged: its supervisor ends the job as ever
    return noted[0]


def _say_not_kept(cfg: dict, why: str) -> None:
    line = (
        f"tfk8s: {os.environ.get('TFK8S_ROLE')}-{os.environ.get('TFK8S_INDEX')} is not kept for the next run: "
        f"{why} (this process exits now, as a cold replica would)."
    )
    sys.stdout.flush()
    print(line, file=sys.stderr, flush=True)
    _verdict(cfg, line)


def write_fifo(path: Path, message: bytes) -> bool:
    """Write ``message`` into a kept member's FIFO; False when nobody reads it (the process died)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: nobody reads it
        return False
    try:
        os.write(fd, message)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _default_strategy():
    tf = sys.modules.get("tensorflow")
    return tf.distribute.get_strategy() if tf is not None else None


def _verdict(cfg: dict, text: str) -> None:
    """Tell the job's supervisor whether this member can be kept: ``ok``, or the line saying why not. It
    goes into the job's record (``cfg["verdict"]``), not the kept set's directory, which the supervisor or a
    claimer may remove at any moment; written before this process exits, so its exit bookkeeping finds it."""
    path = Path(cfg.get("verdict") or Path(cfg["slot"]) / "verdict")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(path, {"pid": os.getpid(), "verdict": text})
    except OSError:
        pass


def _not_kept(cfg: dict, left: hygiene.Leftovers) -> None:
    """Say in the job's log (this replica's) why this process is not kept; the same sentence goes to the
    job's supervisor (:func:`_verdict`)."""
    line = hygiene.sentence(f"{os.environ.get('TFK8S_ROLE')}-{os.environ.get('TFK8S_INDEX')}", left)
    sys.stdout.flush()
    print(line, file=sys.stderr, flush=True)
    _verdict(cfg, line)


def _withdraw(cfg: dict) -> None:
    """This member will not serve: when its set was kept already, take the set's idle marker back (nobody
    can claim it then) and tell the other members to exit. A job claiming it this very moment finds this
    member gone and starts cold; a set not kept yet is not kept (its supervisor sees this process exit)."""
    slot = Path(cfg["slot"])
    marker = cfg.get("marker")
    if not marker or not (slot / "kept").exists():
        return
    retired = Path(marker).parent.parent / "retired" / Path(marker).name
    try:
        retired.parent.mkdir(parents=True, exist_ok=True)
        os.rename(marker, retired)
    except OSError:
        return  # claimed a moment ago (the claimer sees this process gone), or retired already
    for member in slot.parent.iterdir():
        if member.is_dir() and member != slot:
            write_fifo(member / "go", b"exit\n")  # False: nobody reads it, that member is gone
    try:
        os.unlink(retired)
    except OSError:
        pass


def keep_serving(log) -> None:
    """A serving replica: publish it as keepable and take assignments in a thread (its server stays)."""
    cfg = config()
    if cfg is None:
        return
    release_parent_death()

    def run(cfg: dict) -> None:
        while cfg is not None:
            fifo_fd = _prepare(cfg)
            _announce(cfg, serving=True)
            assignment = wait_for_assignment(cfg, fifo_fd)
            os.close(fifo_fd)
            if assignment is None:
                os._exit(0)
            _accept(cfg, assignment)
            os.environ.clear()
            os.environ.update(assignment["env"])
            _redirect(assignment["log"])
            log(
                f"{os.environ.get('TFK8S_ROLE')}-{os.environ.get('TFK8S_INDEX')} kept from the previous run: "
                f"serving job {os.environ.get('TFK8S_JOB')} with the same server"
            )
            cfg = config()

    threading.Thread(target=run, args=(cfg,), name="tfk8s-keep", daemon=True).start()


def before_cell() -> None:
    """The baseline of this process's threads and open files, taken once the runner's set-up is done and
    the cell is about to run: what the cell leaves beyond it makes the process not kept
    (:mod:`.local_keep_hygiene`)."""
    hygiene.snapshot()
    keep_settings.snapshot()  # once: the settings a cold start of any run has
    if _State.modules is None:
        _State.modules = frozenset(sys.modules)  # once: the modules a cold start of any run has
    if _State.claimed:
        # a kept run's set-up logs what a cold one does not (TensorFlow: "Enabling collective ops after
        # program startup"), and absl's first line calls logging.basicConfig(): the cell's own
        # basicConfig would then do nothing. Its logging starts as a cold run's.
        keep_settings.restore(keep_settings.LOGGING)


def strategy_barrier(tf, timeout: float = 60.0) -> None:
    """A kept all-reduce worker, once its new MultiWorkerMirroredStrategy is set up: wait until every peer's
    is too. Setting the strategy up again resets the process's collective state; a peer that already sent
    its first collective (the variables' broadcast) into the old state would see it aborted ("Delete called
    on non-empty BufRendezvous", measured)."""
    cfg = config()
    if not _State.claimed or cfg is None or os.environ.get("TFK8S_STRATEGY") != "multi_worker_mirrored":
        return
    from tensorflow.python.eager import context

    context.context().ensure_initialized()
    slot = Path(cfg["slot"])
    (slot / "strategy").touch()
    try:
        workers = len(json.loads(os.environ["TF_CONFIG"])["cluster"]["worker"])
    except (KeyError, ValueError):
        return
    peers = [slot.parent / f"worker-{i}" / "strategy" for i in range(workers)]
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in peers) and time.monotonic() < deadline:
        time.sleep(0.002)


# ---------------------------------------------------------------------------------------------------- reset
def _unwrap(obj, name: str) -> None:
    fn = vars(obj).get(name) if isinstance(obj, type) else getattr(obj, name, None)
    while fn is not None and getattr(fn, "_tfk8s", False) and getattr(fn, "__wrapped__", None) is not None:
        fn = fn.__wrapped__
        setattr(obj, name, fn)


def _undo_patches() -> None:
    """Put back what the runner patched for the previous run (each patch is bound to that run's strategy,
    reporter and metrics), so the next run patches afresh."""
    import inspect

    tf = sys.modules.get("tensorflow")
    for mod_name in ("keras", "tf_keras"):
        mod = sys.modules.get(mod_name)
        model = getattr(mod, "Model", None) if mod is not None else None
        if isinstance(model, type):
            for name in list(vars(model)):  # every method the runner patched (fit, predict, evaluate, ...)
                _unwrap(model, name)
    # clear_session, tf.summary.scalar / create_file_writer in every public alias
    for name, mod in list(sys.modules.items()):
        if mod is None or not name.startswith(("keras", "tf_keras", "tensorflow")):
            continue
        try:
            names = [n for n in ("clear_session", "scalar", "create_file_writer") if n in vars(mod)]
        except TypeError:
            continue
        for n in names:
            _unwrap(mod, n)
    if tf is not None:
        fn = tf.distribute.experimental_set_strategy
        closure = inspect.getclosurevars(fn).nonlocals if hasattr(fn, "__code__") else {}
        adoption = closure.get("adoption")
        if adoption is not None:
            tf.distribute.experimental_set_strategy = adoption.original_set_strategy
            for cls in list(adoption.kinds):
                original = vars(cls).get("_tfk8s_original_init")
                if original is not None:
                    cls.__init__ = original
                    del cls._tfk8s_original_init
                    # a neutral __new__, not a deleted one: CPython keeps the patched slot after a del
                    cls.__new__ = staticmethod(_plain_new)
    for mod_name in ("tfk8s_jupyter.cell_report", "cell_report"):
        mod = sys.modules.get(mod_name)
        if mod is not None and hasattr(mod, "_sink"):
            mod._sink = None


def _stop_coordinator(strategy) -> None:
    """Stop the ClusterCoordinator of the previous run's ParameterServerStrategy: its worker threads hold
    the run's functions, and through them its variables, which would otherwise stay on the ps."""
    coordinator = getattr(strategy, "_cluster_coordinator", None)
    if coordinator is None:
        return
    try:
        coordinator._cluster.stop()
    except Exception:  # noqa: BLE001 (already stopped)
        pass
    strategy._cluster_coordinator = None


def _plain_new(klass, *args, **kwargs):
    return object.__new__(klass)


def _forget_cell_modules(*dirs: str) -> None:
    """Modules the previous cell imported from its folders, or from any folder that holds no installed
    package (one the cell put on ``sys.path``: ``sys.path.insert(0, "/home/me/project/src")``) since this
    process's first cell: the next run imports them afresh, as a cold one would (their files may have
    changed since)."""
    roots = tuple({os.path.join(f(d), "") for d in dirs if d for f in (os.path.abspath, os.path.realpath)})
    installed = tuple(
        os.path.join(f(p), "")
        for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(__file__).resolve().parents[2])}
        for f in (os.path.abspath, os.path.realpath)
    )
    before = _State.modules
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__file__", None)
        if not path or not isinstance(path, str):
            continue
        if path.startswith(installed) or "site-packages" in path or "dist-packages" in path:
            continue
        if path.startswith(roots) or (before is not None and name not in before):
            del sys.modules[name]


def reset_process(old_env: dict, old_cwd: str) -> None:
    """Reset what a run leaves in the process before the next one: the runner's patches, Keras sessions,
    process-wide settings (:mod:`.local_keep_settings`: dtype policy, floatx, eager functions, ...), the
    default strategy, random seeds (unseeded, as at a cold start), modules the cell imported from its
    folders or from any other folder outside the installed packages, and every object of the previous run
    (collected, so its TensorFlow resources are freed)."""
    _undo_patches()
    _forget_cell_modules(old_cwd, old_env.get("TFK8S_WORKDIR", ""), old_env.get("TFK8S_INPUT_DIR", ""))
    sys.modules.pop("__main__", None)
    sys.stdout = sys.__stdout__
    sys.stderr = sys.__stderr__
    for mod_name in ("tf_keras", "keras"):
        mod = sys.modules.get(mod_name)
        try:
            if mod is not None:
                mod.backend.clear_session()
        except Exception:  # noqa: BLE001 (a Keras that cannot clear has nothing to clear)
            pass
    keep_settings.restore()  # mixed precision, floatx, eager functions, ... as the first cell found them
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        _stop_coordinator(tf.distribute.get_strategy())
        tf.distribute.experimental_set_strategy(None)
        tf.random.set_seed(None)
    random.seed()
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed()
    gc.collect()
    # Objects of the runner's previous run can stay reachable from outside Python's view (a callback class
    # the runner defined is kept by TensorFlow/Keras); empty the run's Runtime, which holds the model.
    for obj in gc.get_objects():
        if type(obj).__name__ == "Runtime" and type(obj).__module__.endswith("replica_runtime"):
            vars(obj).clear()
    gc.collect()
    if tf is not None and old_env.get("TFK8S_KEEP_DEBUG"):
        alive = sum(1 for o in gc.get_objects() if isinstance(o, tf.Variable))
        print(f"tfk8s: {alive} variable(s) of the previous run left in this process", file=sys.stderr)
