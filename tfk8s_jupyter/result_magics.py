"""The line magics that bring a job's results into the notebook: ``%tfk8s_model`` (the trained model in a
variable) and ``%tfk8s_tensorboard`` (TensorBoard inline for one or several jobs, through TensorBoard's own
notebook integration, ``tensorboard.notebook``).

They share the state of the kernel's :class:`~tfk8s_jupyter.magics.TFK8sMagics`, which
``%load_ext tfk8s_jupyter`` registers beside them. TensorFlow and TensorBoard are imported only when a
magic needs them.
"""

from __future__ import annotations

import atexit
import keyword
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from .magic_args import job_backend_argument, parse_magic_line
from .spec import SpecError

TENSORBOARD_HOST = "127.0.0.1"


def logdir_spec(dirs_by_job: dict[str, list[str]]) -> str:
    """TensorBoard's ``--logdir_spec``: one run per folder, named after its job (``job/folder`` when a job
    has several)."""
    runs = []
    for name, dirs in dirs_by_job.items():
        for d in dirs:
            run = name if len(dirs) == 1 else f"{name}/{os.path.basename(d.rstrip('/')) or 'logs'}"
            runs.append(f"{run}:{d}")
    return ",".join(runs)


@magics_class
class ResultMagics(Magics):
    """``%tfk8s_model`` and ``%tfk8s_tensorboard``; ``train`` is the kernel's ``TFK8sMagics``."""

    def __init__(self, shell, train):
        super().__init__(shell)
        self.train = train
        self.tensorboard_pids: list[int] = []  # TensorBoard servers this kernel started
        atexit.register(self.stop_tensorboards)

    def _job(self, name: str, backend: str | None = None):
        from .api import attach
        from .backends.base import TFK8sError

        known = self.train.jobs.get(name)
        if known is not None and (backend is None or known.backend.name == backend):
            return known
        try:
            job = attach(name, backend=backend)
        except LookupError:
            where = backend or self.train.defaults.backend
            raise UsageError(
                f"there is no {where} job named {name!r}; %tfk8s_jobs lists your jobs "
                "(add --backend for another backend)."
            ) from None
        except (TFK8sError, SpecError) as e:
            raise UsageError(str(e)) from None
        self.train.jobs[name] = job
        return job

    # -- %tfk8s_model -----------------------------------------------------------------------------
    @magic_arguments(name="%tfk8s_model")
    @argument("name", help="The job whose trained model to load.")
    @argument("var", nargs="?", default="model", help="The variable to put it in (default: model).")
    @job_backend_argument
    @line_magic
    def tfk8s_model(self, line: str):
        """Load a finished job's trained model into a variable (default ``model``) and say what was
        loaded: its file, size and load time. The model is loaded with the Keras flavour the job trained
        with (``tf_keras`` for parameter-server jobs, Keras 3 otherwise).

        Examples::

            %tfk8s_model mnist-ps
            model.evaluate(x_test, y_test)

            %tfk8s_model mnist-ps best
        """
        from .backends.base import TFK8sError
        from .display_text import format_bytes
        from .results import load_model

        args = parse_magic_line(self.tfk8s_model, line)
        if not (args.var.isidentifier() and not keyword.iskeyword(args.var)):
            raise UsageError(f"{args.var!r} is not a Python variable name; use one like model.")
        job = self._job(args.name, args.backend)
        try:
            loaded = load_model(job.backend, job.name, magic=f"%tfk8s_model {' '.join(line.split())}")
        except TFK8sError as e:
            raise UsageError(str(e)) from None
        self.shell.user_ns[args.var] = loaded.model
        print(
            f"tfk8s: {args.var} = the model of job {job.name} ({loaded.path}, "
            f"{format_bytes(loaded.size)}, loaded in {loaded.seconds:.1f} s)"
        )

    # -- %tfk8s_tensorboard -------------------------------------------------------------------------
    @magic_arguments(name="%tfk8s_tensorboard")
    @argument("names", nargs="*", help="Jobs whose TensorBoard logs to show (default: the last job).")
    @argument(
        "--stop", action="store_true", help="Stop the TensorBoard servers this kernel started, and show none."
    )
    @job_backend_argument
    @line_magic
    def tfk8s_tensorboard(self, line: str):
        """Show TensorBoard inline for one or several jobs, each job a run named after it (TensorBoard's own
        notebook integration; the server listens on 127.0.0.1 and is stopped when the kernel ends).

        Examples::

            %tfk8s_tensorboard mnist-ps
            %tfk8s_tensorboard mnist-ps mnist-allreduce
            %tfk8s_tensorboard --stop
        """
        from .backends.base import TFK8sError

        args = parse_magic_line(self.tfk8s_tensorboard, line)
        if args.stop:
            stopped = self.stop_tensorboards()
            print(f"tfk8s: stopped {stopped} TensorBoard server(s).")
            return
        names = list(dict.fromkeys(args.names)) or ([self.train.last_job] if self.train.last_job else [])
        if not names:
            raise UsageError(
                "no job named and none started in this kernel; give job names (see %tfk8s_jobs)."
            )
        dirs: dict[str, list[str]] = {}
        for name in names:
            job = self._job(name, args.backend)
            try:
                found = job.tensorboard_dirs()
            except TFK8sError as e:
                raise UsageError(str(e)) from None
            if not found:
                raise UsageError(
                    f"job {name!r} has no TensorBoard logs yet (they appear once its fit starts); "
                    f"run %tfk8s_tensorboard again when it trains."
                )
            dirs[name] = found
        try:
            import tensorboard.manager as tb_manager
            import tensorboard.notebook as tb_notebook
        except ImportError:
            raise UsageError(
                "TensorBoard is not installed in this kernel's environment; pip install tensorboard, then "
                "run the magic again."
            ) from None
        self._find_tensorboard_binary()
        argv = ["--logdir_spec", logdir_spec(dirs), "--host", TENSORBOARD_HOST, "--port", "0"]
        key = tb_manager.cache_key(working_directory=os.getcwd(), arguments=argv, configure_kwargs={})
        # TensorBoard's own notebook integration starts (or reuses) the server and shows it inline.
        tb_notebook.start(shlex.join(argv))
        for info in tb_manager.get_all():
            if info.cache_key == key and info.pid not in self.tensorboard_pids and _is_child(info.pid):
                self.tensorboard_pids.append(info.pid)

    @staticmethod
    def _find_tensorboard_binary() -> None:
        """TensorBoard's integration runs ``tensorboard`` from PATH: a kernel started from a virtual
        environment without activating it finds it beside its Python instead."""
        if os.environ.get("TENSORBOARD_BINARY") or shutil.which("tensorboard"):
            return
        beside = Path(sys.executable).with_name("tensorboard")
        if beside.exists():
            os.environ["TENSORBOARD_BINARY"] = str(beside)

    def stop_tensorboards(self) -> int:
        """Stop every TensorBoard server this kernel started (SIGTERM, SIGKILL after 5 s); returns how
        many were still running."""
        stopped = 0
        for pid in self.tensorboard_pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                continue
            stopped += 1
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our child: reaped
                        break
                except ChildProcessError:
                    break
                time.sleep(0.05)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
        self.tensorboard_pids.clear()
        return stopped


def _is_child(pid: int) -> bool:
    """Whether ``pid`` is a child of this process (a TensorBoard another kernel started is not ours)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return int(stat[stat.rindex(")") + 2 :].split()[1]) == os.getpid()


__all__ = ["ResultMagics", "logdir_spec"]
