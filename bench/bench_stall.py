"""Hung-replica recovery on the local backend, with real TensorFlow.

    .venv/bin/python bench/bench_stall.py [--rounds 1] [--stall-timeout 15]

Per round and mode (parameter servers: chief + 2 workers + 1 ps, SIGSTOP worker-1; all-reduce: 2 workers,
SIGSTOP worker-1), after the second epoch: seconds from SIGSTOP to the restart (the job's message says
"restarting ..."), what the message said, the job's outcome, and whether the curve is continuous (every
epoch reported, steps never going backwards within a run). Target: recovery starts <= stall_timeout + 10 s
and the job succeeds.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from local_helpers import epoch_events, tf_keras_cell, wait_for  # noqa: E402


def one(tk, mode: str, stall_timeout: float, n: int) -> dict:
    kw = {"ps": 1, "workers": 2} if mode == "ps" else {"workers": 2}
    job = tk.submit(
        tf_keras_cell(epochs=6, steps=30, step_sleep=0.05),
        name=f"bench-stall-{mode.replace('_', '-')}-{n}",
        setup_timeout=180,
        stall_timeout=stall_timeout,
        **kw,
    )
    wait_for(lambda: len(epoch_events(job.events())) >= 2, 300, "two epochs")
    frozen = job.status.replica("worker-1").pid
    os.kill(frozen, signal.SIGSTOP)
    t0 = time.monotonic()
    message = wait_for(
        lambda: (m := job.status.message) and m.startswith("restarting") and m, 300, "the restart", poll=0.2
    )
    recovery = time.monotonic() - t0
    phase = job.wait(timeout=600)
    events = job.events()
    epochs = sorted({e["epoch"] for e in epoch_events(events)})
    runs = [e["run"] for e in events if e["type"] == "start"]
    monotonic = all(
        (s := [e["step"] for e in events if e["type"] == "metric" and e["run"] == r]) == sorted(s)
        for r in runs
    )
    return {
        "mode": mode,
        "recovery_s": round(recovery, 1),
        "phase": phase,
        "continuous": epochs == list(range(6)) and monotonic,
        "message": message,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--stall-timeout", type=float, default=15.0)
    args = ap.parse_args()
    os.environ.setdefault("TFK8S_HOME", tempfile.mkdtemp(prefix="tfk8s-bench-stall-"))
    import tfk8s_jupyter as tk

    print(f"stall_timeout={args.stall_timeout:g} s; target: recovery <= {args.stall_timeout + 10:g} s")
    for n in range(args.rounds):
        for mode in ("ps", "all_reduce"):
            r = one(tk, mode, args.stall_timeout, n)
            ok = r["recovery_s"] <= args.stall_timeout + 10 and r["phase"] == "succeeded" and r["continuous"]
            print(
                f"{r['mode']:<10} recovery {r['recovery_s']:>5} s  {r['phase']:<9} "
                f"continuous={r['continuous']}  {'OK' if ok else 'MISSED'}\n    {r['message']}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
