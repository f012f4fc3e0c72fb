"""How ``bench_engine.py``'s engine mode launches its tfk8s runs, and the idle floor of a TensorFlow process.

Launch kinds (``--launch cold,warm,kept``), each a tfk8s job paired with a hand-launched run beside it:

* **cold**: ``c.TFK8s.warm_pool = 0``, ``keep_warm = 0``: every replica a fresh interpreter.
* **warm**: no kept set of the shape, a warm pool filled for it beforehand (``LocalBackend().warm_up``, not
  timed), then the defaults (``warm_pool = None``, ``keep_warm = 600``): the replicas are pool processes.
  The pool refills as it does by default (``local_pool.wait_refill_moment``: at the first metric point
  when the job's replicas leave a core free, else once the job ended); the CPU the refill took before the
  job ended is reported, and the hand run waits until the refill is over.
* **kept**: ``warm_pool = 0``, ``keep_warm = 600``: the job runs on the replicas the previous job of the
  shape kept (the warm kind's, an earlier kept run's, or else a short untimed priming job's); reported as
  the how-many-th job those processes run.

After a tfk8s job whose replicas are kept, the bench waits until they finished resetting what the run left
(``bench_kept.reset_done``) before the next run starts, so the reset's CPU is not charged to that run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

KEEP_SECONDS = 600.0
PRIMER = (2, 20)  # epochs, steps of the untimed job that leaves a kept set when none is there
KINDS = ("cold", "warm", "kept")

# A fresh interpreter that imports ``what`` and then idles; it says "ready" once imported.
FLOOR = """\
import sys
{what}
print("ready", flush=True)
sys.stdin.read()
"""
FLOORS = {
    "import tensorflow": "import tensorflow",
    "+ tf_keras and tf.keras's submodules": (
        "import tensorflow as tf\nimport tf_keras\n"
        "from tfk8s_jupyter.backends.local_pool_preload import TF_KERAS_ATTRIBUTES\n"
        "for a in TF_KERAS_ATTRIBUTES:\n    getattr(tf.keras, a, None)"
    ),
    "+ everything a pool process preloads": (
        "from tfk8s_jupyter.backends.local_pool_preload import preload\npreload('tf_keras')"
    ),
}


class Launches:
    """Sets the local backend up for each launch kind and tracks the kept set of the shape being measured."""

    def __init__(self, primer_code: str) -> None:
        from tfk8s_jupyter.backends.local_pool import owned_pool
        from tfk8s_jupyter.records import records_root

        self.root = records_root()
        self.pool = owned_pool(self.root)
        self.primer_code = primer_code
        self.kept_jobs = 0  # jobs the current kept set's processes have run (0: no kept set)

    def configure(self, warm_pool: int | None, keep_warm: float) -> None:
        from tfk8s_jupyter.config import TFK8s, set_current_config

        set_current_config(TFK8s(warm_pool=warm_pool, keep_warm=keep_warm))

    def stop_kept(self) -> None:
        from tfk8s_jupyter.backends.local_keep import stop_kept

        stop_kept(self.root)
        self.kept_jobs = 0

    def reset(self) -> None:
        """No kept set, no pool: between shapes and at the end."""
        self.stop_kept()
        self.pool.stop()

    def prepare(self, kind: str, strategy: str, setup: dict) -> None:
        from tfk8s_jupyter.backends.local import LocalBackend
        from tfk8s_jupyter.spec import make_spec

        if kind == "cold":
            self.pool.stop()
            self.configure(0, 0)  # a kept set of the shape, if any, stays idle (keep_warm 0 never claims)
        elif kind == "warm":
            self.stop_kept()  # a kept set would be claimed before the pool
            self.configure(None, KEEP_SECONDS)
            spec = make_spec(self.primer_code, workers=setup["workers"], ps=setup["ps"], strategy=strategy)
            if not LocalBackend().warm_up(spec, timeout=300):
                raise RuntimeError("the warm pool did not get ready within 300 s; see its pool.log files")
            time.sleep(2.0)  # let the machine settle after the pool's imports
        elif kind == "kept":
            self.pool.stop()
            self.configure(0, KEEP_SECONDS)
            if not self.kept_jobs:
                self._prime(strategy, setup)
        else:
            raise ValueError(f"unknown launch kind {kind!r}; use cold, warm or kept")

    def _prime(self, strategy: str, setup: dict) -> None:
        """An untimed short job of the shape whose replicas stay as the kept set."""
        import tfk8s_jupyter as tk

        job = tk.submit(self.primer_code, workers=setup["workers"], ps=setup["ps"], strategy=strategy)
        if job.wait(timeout=600) != "succeeded":
            raise RuntimeError(f"the priming job {job.name} ended {job.phase}: {job.status.message}")
        self._settle(job)
        self.kept_jobs = 1

    def _settle(self, job) -> None:
        """Wait until the replicas ``job`` left kept have reset what its run left."""
        from bench_kept import reset_done

        reset_done(sorted(r.pid for r in job.status.replicas if r.pid), timeout=120)

    def job_number(self, kind: str) -> int:
        """The how-many-th job the replicas of the next ``kind`` launch run (1: a fresh or pool process)."""
        return self.kept_jobs + 1 if kind == "kept" else 1

    def after(self, kind: str, job) -> dict:
        """Once the tfk8s job of ``kind`` ended: what the pool's refill took meanwhile (warm), then wait for
        the refill and the kept replicas' reset, so the next run starts on a settled machine."""
        from tfk8s_jupyter.backends.local_processes import process_cpu_seconds

        extra = {}
        if kind == "warm":
            pids = [self.pool.children[s].pid for s in self.pool.waiting()]  # started since the claim
            extra["refill_cpu"] = sum(process_cpu_seconds(pid) or 0.0 for pid in pids)
            extra["refill_procs"] = len(pids)
            settle_refill(self.pool)
            self.pool.stop()
        if kind in ("warm", "kept"):
            self._settle(job)
            self.kept_jobs += 1
        return extra


def settle_refill(pool) -> None:
    """Once a job that left its pool to refill ended: wait until the refill (which may wait for the job's
    end, then starts within ``local_pool.ENDED_POLL``) has started and every process it started is idle."""
    deadline = time.monotonic() + 5.0
    while not pool.waiting() and time.monotonic() < deadline:
        time.sleep(0.05)
    pool.ready(300)


def smaps(pid: int) -> dict[str, float]:
    """RSS, private and PSS MB of process ``pid`` from ``/proc/<pid>/smaps_rollup``."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) / 1024
    return {
        "rss": fields["Rss"],
        "private": fields["Private_Clean"] + fields["Private_Dirty"],
        "pss": fields["Pss"],
    }


def pool_env(pid: int) -> dict[str, str]:
    """The environment process ``pid`` (a pool process) was started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def start_floors(env: dict[str, str], cwd: str) -> dict[str, subprocess.Popen]:
    """One fresh interpreter per :data:`FLOORS` row, in ``env`` (a pool process's), importing in turns
    (as the pool does) so that each import has the cores it would have."""
    procs = {}
    for label, what in FLOORS.items():
        proc = subprocess.Popen(
            [sys.executable, "-c", FLOOR.format(what=what)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            text=True,
        )
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(
                f"the floor process ({label}) did not import; run its imports by hand to see why"
            )
        procs[label] = proc
    return procs


def floors(procs: dict[str, subprocess.Popen]) -> dict[str, dict[str, float]]:
    """Measure each idle floor process, then end it."""
    out = {label: smaps(proc.pid) for label, proc in procs.items()}
    for proc in procs.values():
        proc.stdin.close()
        proc.wait(10)
    return out
