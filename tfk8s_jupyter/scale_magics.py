"""``%tfk8s_scale NAME --workers N``: resize a running job (a parameter-server job's scale-down live, any
other resize by checkpoint-restart).

Registered beside the other magics by ``%load_ext tfk8s_jupyter`` (``ScaleMagics(ipython, train)`` with the
kernel's :class:`~tfk8s_jupyter.magics.TFK8sMagics`).
"""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from .magic_args import job_backend_argument, job_name_argument, parse_magic_line


def _count(text: str):
    """``--workers`` as an int when it is one; else as given, for the backend's one-sentence refusal."""
    try:
        return int(text)
    except ValueError:
        return text


@magics_class
class ScaleMagics(Magics):
    """``train`` is the kernel's :class:`~tfk8s_jupyter.magics.TFK8sMagics` (its jobs and defaults)."""

    def __init__(self, shell, train):
        super().__init__(shell)
        self.train = train

    @magic_arguments()
    @job_name_argument
    @argument("--workers", required=True, help="The number of workers the job should have.")
    @job_backend_argument
    @line_magic
    def tfk8s_scale(self, line: str):
        """Resize a running job: fewer workers in a parameter-server job are removed live (the highest
        index first; the chief carries on); more workers, or any resize of an all-reduce job, restart the
        job with the new shape from its next checkpoint (the step count and the curve continue).

        Examples::

            %tfk8s_scale mnist-ps --workers 2
            %tfk8s_scale mnist-mw --workers 3
        """
        from .backends.base import TFK8sError
        from .job_magics import JobMagics

        args = parse_magic_line(self.tfk8s_scale, line)
        job = JobMagics._job(self, args.name, args.backend)
        try:
            before = len([r for r in job.status.replicas if r.role == "worker" and r.state != "removed"])
            status = job.scale(workers=_count(args.workers))
        except TFK8sError as e:
            raise UsageError(str(e)) from None
        after = len([r for r in status.replicas if r.role == "worker" and r.state != "removed"])
        if after == before and status.message and status.message.startswith("resizing"):
            print(f"tfk8s: job {job.name} is {status.message}; job.status.history records it when done.")
            return
        if after == before:
            print(f"tfk8s: job {job.name} has {after} worker(s) already; nothing changed.")
            return
        removed = status.history[-1].get("removed", []) if status.history else []
        print(
            f"tfk8s: job {job.name} scaled down from {before} to {after} worker(s), live ({', '.join(removed)} removed)."
        )
