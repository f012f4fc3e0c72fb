"""IPython magics: ``%%tfk8s_train`` here, the line magics that follow jobs
(``%tfk8s_jobs/check/attach/logs/stop/delete/wait/config``) in :mod:`.job_magics`, and those that bring
results back (``%tfk8s_model``, ``%tfk8s_tensorboard``) in :mod:`.result_magics`.

``%load_ext tfk8s_jupyter`` registers both; :class:`TFK8sMagics` holds the state they share (the defaults,
this kernel's jobs and panels). Defaults come from the ``TFK8s`` configurable (config files
and ``%config TFK8s.<option> = ...``); flags override them per call. The arguments and their translation
into job options live in :mod:`.magic_args`; the text the magics print in :mod:`.display_text`.
"""

from __future__ import annotations

import keyword
import os
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import magic_arguments

from .capture import CaptureError, capture, check_cell
from .config import TFK8s, set_current_config
from .job_origin import CELL_KEY_LABEL, cell_key_label, origin_job_name, origin_labels
from .magic_args import (
    job_options,
    parse_magic_line,
    split_files,
    train_arguments,
)
from .spec import SpecError, make_spec


def _in_kernel(shell) -> bool:
    return getattr(shell, "kernel", None) is not None


def _interactive(shell) -> bool:
    """Whether someone watches the cell in a front end that stays after it: a kernel whose current request
    allows stdin (JupyterLab, Notebook and VS Code send ``allow_stdin``; nbclient - hence nbconvert and
    papermill - never does). Terminal IPython has no kernel and counts as a batch run too: there the
    cell's own output is the only place progress can go."""
    kernel = getattr(shell, "kernel", None)
    return kernel is not None and bool(getattr(kernel, "_allow_stdin", False))


@magics_class
class TFK8sMagics(Magics):
    """The tfk8s magics; one instance per shell holds the ``TFK8s`` defaults and this kernel's jobs."""

    def __init__(self, shell):
        super().__init__(shell)
        files = ", ".join(os.path.basename(f) for f in self._loaded_config_files()) or "the config"
        self.defaults, problems = TFK8s.from_config(parent=shell, where=files)
        if problems:
            raise UsageError(problems[0])
        if self.defaults not in shell.configurables:
            shell.configurables.append(self.defaults)
        set_current_config(self.defaults)
        self._file_config = dict(shell.config.get("TFK8s", {})) if shell is not None else {}
        self._config_files = self._loaded_config_files()
        self._runtime: dict[str, Any] = {}
        self.defaults.observe(self._on_default_changed)
        self.jobs: dict[str, Any] = {}
        self.panels: dict[str, list] = {}
        self.progress: dict[str, Any] = {}
        self.last_job: str | None = None
        # the job each training cell started last (by the front end's cell id, else the cell's text)
        self.cell_jobs: dict[str, str] = {}

    # -- config provenance ------------------------------------------------------------------------
    @staticmethod
    def _loaded_config_files() -> list[str]:
        try:
            from traitlets.config import Application

            if Application.initialized():
                return list(getattr(Application.instance(), "loaded_config_files", []) or [])
        except Exception:
            pass
        return []

    def _on_default_changed(self, change) -> None:
        self._runtime[change["name"]] = change["new"]

    def config_sources(self) -> list[tuple[str, Any, str]]:
        """``(option, value, where it came from)`` for every ``TFK8s`` default."""
        where_file = "config file"
        if self._config_files:
            where_file = "config file " + ", ".join(os.path.basename(p) for p in self._config_files)
        out = []
        for name in sorted(self.defaults.trait_names(config=True)):
            value = getattr(self.defaults, name)
            if name in self._runtime:
                source = "%config"
            elif name in self._file_config:
                source = where_file
            else:
                source = "default"
            out.append((name, value, source))
        return out

    # -- building jobs ----------------------------------------------------------------------------
    def job_options(self, args, overrides: dict | None = None) -> dict:
        """Config defaults overridden by flags (and by ``overrides``, e.g. the settings form), plus the
        labels saying which notebook and cell the job came from."""
        opts = job_options(self.defaults, args, overrides)
        if opts.get("backend") == "local" and getattr(args, "storage", None) is None:
            if not (overrides or {}).get("storage"):
                opts["storage"] = None  # the configured storage is for Kubernetes jobs
        opts["labels"] = {**origin_labels(self.shell), **dict(opts.get("labels") or {})}
        if getattr(args, "cell_key", None):  # a re-run after a kernel restart finds the cell's job by it
            opts["labels"][CELL_KEY_LABEL] = cell_key_label(args.cell_key)
        return opts

    def build(self, code: str, args, overrides: dict | None = None):
        """Validate the flags and the cell and capture its context: ``(spec, capture)``; nothing starts.

        Raises:
            UsageError: one sentence naming the problem and the fix.
        """
        try:
            check_cell(code)
            name = getattr(args, "name", None) or origin_job_name(self.shell, code)
            spec = make_spec(code, name=name, **self.job_options(args, overrides))
            cap = capture(
                code,
                self.shell,
                files=split_files(getattr(args, "files", None)),
                max_bytes=self.defaults.max_payload_bytes,
                backend=spec.backend,
            )
        except (SpecError, CaptureError) as e:
            raise UsageError(str(e)) from None
        return spec, cap

    def launch(self, spec, cap, args):
        """Submit and remember the job; ``--out`` and ``_tfk8s_job`` get the handle."""
        from .api import submit_spec
        from .backends.base import TFK8sError

        try:
            job = submit_spec(spec, cap.payload)
        except (TFK8sError, SpecError) as e:
            raise UsageError(str(e)) from None
        self.jobs[job.name] = job
        self.last_job = job.name
        self.shell.user_ns["_tfk8s_job"] = job
        out = getattr(args, "out", None)
        if out:
            self.shell.user_ns[out] = job
        return job

    def frontend(self, args=None) -> str:
        mode = self.defaults.frontend
        if mode == "auto":
            mode = "widgets" if _interactive(self.shell) else "text"
        return mode

    def batch_wait(self, args) -> bool:
        """Whether ``%%tfk8s_train`` blocks until its job ends: with ``--wait``; without an interactive
        front end (nbconvert, papermill, terminal IPython) unless ``--no-wait``, ``--no-panel`` or
        ``TFK8s.batch_wait = False`` say otherwise."""
        if args.wait:
            return True
        if args.no_wait or args.no_panel or not self.defaults.panel or not self.defaults.batch_wait:
            return False
        return not _interactive(self.shell)

    def show(self, job, args=None, attached: bool = False) -> None:
        """The live panel under the cell (or progress lines without widgets); ``attached``: an existing
        job, not one this cell just submitted."""
        if (args is not None and getattr(args, "no_panel", False)) or not self.defaults.panel:
            print(f"tfk8s: submitted job {job.name}; %tfk8s_attach {job.name} shows its panel.")
            return
        if self.frontend() == "widgets":
            from .job_panel import JobPanel

            panel = JobPanel(job)
            self.panels.setdefault(job.name, []).append(panel)
            panel.show()
        else:
            from .text_progress import TextProgress

            verb = "following" if attached else "submitted"
            print(f"tfk8s: {verb} job {job.name} ({job.backend.name}); progress follows.")
            write, finish = self._text_writer()
            self.progress[job.name] = TextProgress(
                job.state, write=write, finish=finish, monitor_done=job.monitor().done
            )

    def _text_writer(self):
        """Where progress lines go: stdout in a terminal; in a kernel, one output of this cell updated by
        display id (a print from the monitor thread would land in whatever cell runs at that moment),
        which ends as the progress lines plus the summary in text and HTML (for a saved notebook)."""
        if not _in_kernel(self.shell):
            return None, None
        import html

        from IPython.display import display

        from .display_text import summary_html, summary_text

        handle = display({"text/plain": ""}, raw=True, display_id=True)
        lines: list[str] = []

        def write(text: str) -> None:
            lines.extend(text.splitlines())
            del lines[:-40]
            handle.update({"text/plain": "\n".join(lines)}, raw=True)

        def finish(state) -> None:
            progress = "\n".join(lines)
            summary = summary_text(state)
            handle.update(
                {
                    "text/plain": "\n".join(x for x in (progress, summary) if x),
                    "text/html": (f"<pre>{html.escape(progress)}</pre>" if progress else "")
                    + summary_html(state),
                },
                raw=True,
            )

        return write, finish

    def wait_for(self, job, timeout: float | None = None) -> str:
        """Block until ``job`` ends, then render its final state in this cell's context."""
        try:
            phase = job.wait(timeout=timeout)
        except TimeoutError:
            raise UsageError(
                f"job {job.name} is still {job.phase} after {timeout:g} s and keeps running; "
                f"%tfk8s_wait {job.name} waits longer and %tfk8s_stop {job.name} stops it."
            ) from None
        except KeyboardInterrupt:
            raise UsageError(
                f"stopped waiting; job {job.name} keeps running (the panel still follows it), "
                f"and %tfk8s_stop {job.name} stops it."
            ) from None
        mon = job.monitor()
        mon.done.wait(timeout=30)
        for panel in self.panels.get(job.name, []):
            panel.flush()
        progress = self.progress.get(job.name)
        if progress is not None:
            progress.summary_written.wait(timeout=15)
        return phase

    # -- %%tfk8s_train --------------------------------------------------------------------------
    @magic_arguments(name="%tfk8s_train")
    @train_arguments
    @cell_magic
    def tfk8s_train(self, line: str, cell: str):
        """Train this cell as a distributed TensorFlow job and show a live panel under it.

        The cell runs unchanged on every replica. Names it uses from earlier cells (functions, classes,
        constants, small values, imports, local .py modules) travel with it. In JupyterLab the cell returns
        at once; in a batch run (nbconvert, papermill, terminal IPython) it waits and writes text progress
        and the final summary (``--no-wait`` or ``TFK8s.batch_wait = False`` return at once). The
        handle is in ``_tfk8s_job`` (and in ``--out VAR``). Defaults come from ``%config TFK8s.<option>``
        (see ``%tfk8s_config``); flags override them.

        Examples::

            %%tfk8s_train --ps 1 --workers 2
            model = build_model(LR)          # defined in earlier cells
            model.fit(train_ds(), epochs=5, steps_per_epoch=100)

            %%tfk8s_train --workers 2 --strategy multi_worker_mirrored --wait --out job
            ...

            %%tfk8s_train --backend kubernetes --gpus 1 --memory 8Gi --env WANDB_MODE=offline --dry-run
            ...

            %%tfk8s_train --panel            # choose the cluster shape in a form, then Launch
            ...
        """
        args = parse_magic_line(self.tfk8s_train, line)
        if args.panel and args.no_panel:
            raise UsageError("--panel and --no-panel contradict each other; pass only one of them.")
        if args.panel and (args.dry_run or args.wait):
            raise UsageError(
                "--panel launches from the form, so it cannot be combined with --dry-run or --wait."
            )
        if args.wait and args.no_wait:
            raise UsageError("--wait and --no-wait contradict each other; pass only one of them.")
        if args.out is not None and not (args.out.isidentifier() and not keyword.iskeyword(args.out)):
            raise UsageError(f"--out {args.out!r} is not a Python variable name; use one like --out job.")
        cell_key = args.cell_key = self._cell_key(line, cell)
        if not args.dry_run and self._running_job_of_cell(cell_key, args):
            return None
        if args.panel:
            return self._settings_panel(cell, args, cell_key)
        spec, cap = self.build(cell, args)
        if args.dry_run:
            if args.name:
                self._check_name_free(spec)
            self._print_dry_run(spec, cap)
            return None
        job = self.launch(spec, cap, args)
        self.cell_jobs[cell_key] = job.name
        self.show(job, args)
        if self.batch_wait(args):
            phase = self.wait_for(job, args.timeout)
            if phase == "failed":
                error = job.state.error or job.status.message or "see %tfk8s_logs " + job.name
                raise UsageError(f"job {job.name} failed: {error}")
        return None

    def _cell_key(self, line: str, cell: str) -> str:
        """Which cell this is: the front end's cell id (JupyterLab and nbclient send one), else its text."""
        import hashlib

        kernel = getattr(self.shell, "kernel", None)
        if kernel is not None:
            try:
                cell_id = (kernel.get_parent().get("metadata") or {}).get("cellId")
            except Exception:
                cell_id = None
            if cell_id:
                return f"cell:{cell_id}"
        flags = " ".join(w for w in line.split() if w != "--replace")
        return "text:" + hashlib.sha1(f"{flags}\n{cell}".encode()).hexdigest()

    def _running_job_of_cell(self, cell_key: str, args) -> bool:
        """A re-run of a cell whose job still runs launches nothing: it says so in one line and shows
        that job's panel again (``--replace`` stops it and lets the cell start anew). True if handled."""
        from .backends.base import TFK8sError

        name = self.cell_jobs.get(cell_key)
        job = self.jobs.get(name) if name else None
        restarted = job is None
        if job is None and (job := self._job_of_cell_on_backend(cell_key, args)) is None:
            return False
        try:
            done = job.status.done
        except TFK8sError:
            return False
        if done:
            return False
        if args.replace:
            try:
                job.stop()
            except TFK8sError as e:
                raise UsageError(f"could not stop job {job.name} to replace it: {e}") from None
            print(f"tfk8s: stopped job {job.name}; starting the cell anew.")
            return False
        since = " (started before the kernel restarted)" if restarted else ""
        print(
            f"tfk8s: job {job.name} from this cell is still running{since}, so nothing new was started; "
            f"its panel follows (re-run with --replace to stop it and start anew)."
        )
        self.last_job = job.name
        self.shell.user_ns["_tfk8s_job"] = job
        if not args.no_panel:
            self.show(job, attached=True)
        if self.batch_wait(args):
            self.wait_for(job, args.timeout)
        return True

    def _job_of_cell_on_backend(self, cell_key: str, args):
        """The cell's running job as the backend knows it (labelled with the cell's key), when this kernel
        does not: it was restarted since the cell ran. None when there is none or the backend cannot say."""
        from . import api
        from .backends.base import TFK8sError
        from .config import current_owner
        from .job_origin import running_job_of_cell

        try:
            backend = api.backend_for(getattr(args, "backend", None) or self.defaults.backend)
            name = running_job_of_cell(backend, cell_key, current_owner())
        except (TFK8sError, OSError):
            return None
        if name is None:
            return None
        job = self.jobs[name] = api.Job(name, backend)
        self.cell_jobs[cell_key] = name
        return job

    def _check_name_free(self, spec) -> None:
        """``--dry-run --name X`` is only valid if X is free: a real launch would be refused. Kubernetes is
        asked only once this kernel has talked to it (a dry run must work without a cluster)."""
        from . import api
        from .backends.base import JobNotFound, TFK8sError

        if spec.backend != "local" and spec.backend not in api._backends:
            return
        try:
            api.backend_for(spec.backend).get(spec.name)
        except (JobNotFound, LookupError):
            return
        except TFK8sError:
            return  # unreachable: the launch will say so
        raise UsageError(
            f"a job named {spec.name!r} exists already; choose another --name, or delete the old job with "
            f"%tfk8s_delete {spec.name}."
        )

    def _print_dry_run(self, spec, cap) -> None:
        import json

        from .results import resume_line

        try:
            resume = resume_line(spec)
        except SpecError as e:
            raise UsageError(str(e)) from None
        print(f"# tfk8s dry run: job {spec.name} is valid; nothing was started.")
        d = spec.to_json()
        d.pop("code", None)
        shown = {k: v for k, v in d.items() if v not in (None, {}, [], ())}
        print("# spec")
        print(json.dumps(shown, indent=1, sort_keys=True))
        print(f"# replicas: {', '.join(spec.replica_names)} (reporting: {spec.reporting_replica})")
        print("# " + cap.summary().replace("\n", "\n# "))
        if resume:
            print(resume)
        if spec.backend == "kubernetes":
            from .backends.kubernetes import manifests_yaml, render_manifests

            try:
                objs = render_manifests(spec, cap.payload, flavor=spec.flavor)
            except Exception as e:
                raise UsageError(str(e)) from None
            print("# manifests")
            print(manifests_yaml(objs))

    def _settings_panel(self, cell: str, args, cell_key: str | None = None):
        from .display_text import Summary
        from .job_panel import JobPanel
        from .settings_form import SETTINGS_FIELDS, SettingsPanel

        try:
            check_cell(cell)
        except CaptureError as e:
            raise UsageError(str(e)) from None
        opts = self.job_options(args)
        defaults = {k: opts.get(k) for k in SETTINGS_FIELDS}

        def on_launch(options: dict):
            spec, cap = self.build(cell, args, overrides=options)
            job = self.launch(spec, cap, args)
            if cell_key is not None:
                self.cell_jobs[cell_key] = job.name
            return job

        summary = {}

        def make_panel(job):
            panel = JobPanel(job)
            self.panels.setdefault(job.name, []).append(panel)
            handle = summary.get("handle")
            if handle is not None:
                panel.on_done(lambda p: handle.update(Summary(p.state)))
            return panel

        form = SettingsPanel(defaults, on_launch, panel_factory=make_panel)
        self.shell.user_ns["_tfk8s_settings"] = form
        # --panel asks for the form itself: in a kernel it is shown even in a batch run (where code can
        # fill and launch it); only a frontend set to "text", or no kernel, has none.
        if self.frontend() == "widgets" or (_in_kernel(self.shell) and self.defaults.frontend == "auto"):
            from IPython.display import display

            display(form)
            summary["handle"] = display({"text/plain": ""}, raw=True, display_id=True)
            return None
        raise UsageError(
            "--panel needs a widget frontend (JupyterLab or Notebook); pass the options as flags instead."
        )


def load_ipython_extension(ipython) -> None:
    """Register the magics on ``ipython`` (``%load_ext tfk8s_jupyter``)."""
    from .job_magics import JobMagics
    from .pool_magics import register as register_pool_magics
    from .result_magics import ResultMagics
    from .scale_magics import ScaleMagics

    magics = TFK8sMagics(ipython)
    ipython.register_magics(magics)
    ipython.register_magics(JobMagics(ipython, magics))
    ipython.register_magics(ResultMagics(ipython, magics))
    ipython.register_magics(ScaleMagics(ipython, magics))
    register_pool_magics(ipython)  # %tfk8s_pool (pool_magics.py)


def unload_ipython_extension(ipython) -> None:
    pass


__all__ = ["TFK8sMagics", "load_ipython_extension"]
