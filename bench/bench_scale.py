"""Resizing a job on the local backend, with real TensorFlow: live scale-down and scale-up by
checkpoint-restart, side by side.

    .venv/bin/python bench/bench_scale.py [--rounds 1] [--only down|up]

Scale-down, per round: a PS job (chief + 3 workers + 1 ps, tf_keras fit) scaled 3 -> 2 after its first epoch. Printed:
seconds from the call until a separate reader of the record (a fresh LocalBackend, as the panel or another
kernel reads it) sees worker-2 "removed" in the replica table, seconds until the call returned, the
chief's steps/s in the 10 s before and after the resize side by side (training continues, no restart:
one run), and the job's outcome. Target: the table shows the change <= 5 s after the call.

Scale-up, per round: a PS job (chief + 2 workers + 1 ps) and an all-reduce job (2 workers), each scaled to 3
workers (the warm pool on, as by default), in two cases: the call right after the job's first checkpoint
(the pool's refill after the launch still importing TensorFlow), and the call once the pool settled (no pool
process importing: a user who watched the curve a while). Printed: the job's launch time
(submit -> first metric point) and how its replicas started (warm pool or cold), seconds from the call to
the safe point (the latest checkpoint asked for, at an epoch end, once the new shape's warm processes are
idle) with when they were ready, and from the call to the first metric point of the new
shape with how the replicas the restart started came up (and which served on: a PS scale-up restarts only
the chief), against the target: first point <= launch time + 5 s after the call.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from local_helpers import epoch_events, tf_keras_cell, wait_for  # noqa: E402

WINDOW = 10.0


def steps_per_s(events: list[dict], start: float, end: float) -> float:
    steps = [
        (e["t"], e["step"])
        for e in events
        if e.get("type") == "metric" and isinstance(e.get("step"), int) and start <= e.get("t", 0) <= end
    ]
    if len(steps) < 2:
        return 0.0
    (t0, s0), (t1, s1) = steps[0], steps[-1]
    return (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0


def one(tk, n: int) -> dict:
    from tfk8s_jupyter.backends.local import LocalBackend

    name = f"bench-scale-{n}"
    job = tk.submit(
        tf_keras_cell(epochs=12, steps=40, step_sleep=0.05), ps=1, workers=3, name=name, setup_timeout=240
    )
    wait_for(lambda: epoch_events(job.events()), 300, "the first epoch")
    time.sleep(WINDOW)  # a window of steps before the resize
    reader = LocalBackend()
    seen: dict = {}

    def watch(t0: float) -> None:
        while time.monotonic() - t0 < 60:
            r = reader.get(name).replica("worker-2")
            if r is not None and r.state == "removed":
                seen["s"] = time.monotonic() - t0
                return
            time.sleep(0.02)

    t0 = time.monotonic()
    at = time.time()
    watcher = threading.Thread(target=watch, args=(t0,))
    watcher.start()
    job.backend.scale(name, 2)
    returned = time.monotonic() - t0
    watcher.join()
    time.sleep(WINDOW)
    events = job.events()
    before = steps_per_s(events, at - WINDOW, at)
    after = steps_per_s(events, at + 0.5, at + WINDOW)
    phase = job.wait(timeout=900)
    runs = {e.get("run") for e in events if e.get("type") == "metric"}
    return {
        "shown_s": seen.get("s"),
        "returned_s": returned,
        "before": before,
        "after": after,
        "runs": len(runs),
        "phase": phase,
        "history": job.status.history,
    }


def one_up(tk, n: int, ps: int, settled: bool = False) -> dict:
    kind = "ps" if ps else "ar"
    name = f"bench-up-{kind}-{n}" + ("-settled" if settled else "")
    submitted = time.time()
    job = tk.submit(
        tf_keras_cell(epochs=40, steps=30, step_sleep=0.05), ps=ps, workers=2, name=name, setup_timeout=240
    )
    first = wait_for(lambda: [e for e in job.events() if e.get("type") == "metric"], 300, "the first point")
    launch = first[0]["t"] - submitted
    launched = kinds(job)
    wait_for(lambda: [e for e in job.events() if e.get("type") == "checkpoint"], 300, "the first checkpoint")
    if settled:  # a user who watched the curve a while: the pool's refill after the launch is idle
        wait_for(lambda: importing() == 0, 300, "the warm pool to settle", poll=0.5)
        time.sleep(2.0)
    pool = pool_state()
    at = time.time()
    job.scale(workers=3)
    wait_for(lambda: len(job.status.history) >= 1, 600, "the restart")
    entry = job.status.history[0]

    def new_points() -> list[dict]:
        events = job.events()
        marker = next((i for i, e in enumerate(events) if e.get("type") == "resize"), None)
        return [] if marker is None else [e for e in events[marker:] if e.get("type") == "metric"]

    point = wait_for(new_points, 600, "a point of the new shape")[0]
    # said once every replica the restart starts was given a process (after the history entry, when the
    # restart starts them as they become ready)
    asked = re.search(r"the new shape's processes are ready \(([0-9.]+) s", job.logs("supervisor"))
    steps = [e["step"] for e in job.events() if e.get("type") == "metric"]
    kept = entry.get("kept") or []
    started = kinds(job, skip=kept)
    job.stop()
    return {
        "kind": "PS" if ps else "all-reduce",
        "settled": settled,
        "kept": kept,
        "launch": launch,
        "safe": entry["time"] - at,
        "first": point["t"] - at,
        "step": (entry["step"], point["step"]),
        "doubled": len(steps) - len(set(steps)),
        "launched": launched,
        "restarted": started,
        "pool_wait": float(asked.group(1)) if asked else None,
        "pool": pool,
    }


def pool_counts() -> tuple[int, int]:
    """The warm pool's processes (any shape): idle, and still importing TensorFlow."""
    from tfk8s_jupyter.backends.local_pool import list_pool, pool_dir

    home = os.environ["TFK8S_HOME"]
    rows = list_pool(home)
    try:
        slots = os.listdir(pool_dir(home) / "slots")
    except OSError:
        slots = []
    idle = sum(1 for r in rows if r["state"] == "idle")
    return idle, max(0, len(slots) - len(rows))


def importing() -> int:
    return pool_counts()[1]


def pool_state() -> str:
    """The warm pool's processes by state (any shape), e.g. ``2 idle, 3 importing TensorFlow``."""
    idle, starting = pool_counts()
    return f"{idle} idle, {starting} importing TensorFlow"


def kinds(job, skip: list[str] = ()) -> str:
    """How the job's replicas (but ``skip``) started: e.g. ``3 warm`` or ``2 warm + 1 cold``."""
    counts: dict[str, int] = {}
    for r in job.status.replicas:
        if r.state != "removed" and r.name not in skip:
            counts[r.launch or "?"] = counts.get(r.launch or "?", 0) + 1
    return " + ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: kv[0] != "warm"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--only", choices=("down", "up"), help="run only the scale-down or the scale-up part")
    args = ap.parse_args()
    os.environ.setdefault("TFK8S_HOME", tempfile.mkdtemp(prefix="tfk8s-bench-scale-"))
    import tfk8s_jupyter as tk

    for n in range(args.rounds if args.only != "up" else 0):
        if n == 0:
            print(
                "PS 3 -> 2 workers live; target: the replica table shows the change <= 5 s after the call; "
                f"load {os.getloadavg()[0]:.1f}"
            )
        r = one(tk, n)
        shown = r["shown_s"]
        ok = shown is not None and shown <= 5 and r["phase"] == "succeeded" and r["runs"] == 1
        print(
            f"round {n}: shown after {shown if shown is None else round(shown, 2)} s, call returned after "
            f"{r['returned_s']:.2f} s; chief steps/s before {r['before']:.1f} | after {r['after']:.1f} "
            f"(ratio {r['after'] / r['before'] if r['before'] else float('nan'):.2f}); runs {r['runs']}; "
            f"{r['phase']}; history {[(h['from'], h['to'], h['how']) for h in r['history']]}  "
            f"{'OK' if ok else 'MISSED'}",
            flush=True,
        )
    for n in range(args.rounds if args.only != "down" else 0):
        if n == 0:
            print(
                "scale-up 2 -> 3 workers by checkpoint-restart; target: the first metric point of the new shape "
                f"<= launch time + 5 s after the call; load {os.getloadavg()[0]:.1f}"
            )
        for settled in (False, True):
            print(
                "  call once the warm pool settled (no process importing TensorFlow)"
                if settled
                else "  call right after the first checkpoint (the pool's refill still importing)",
                flush=True,
            )
            for r in (one_up(tk, n, ps=1, settled=settled), one_up(tk, n, ps=0, settled=settled)):
                target = r["launch"] + 5
                wait = "?" if r["pool_wait"] is None else f"{r['pool_wait']:.1f}"
                kept = f"; kept serving {', '.join(r['kept'])}" if r["kept"] else ""
                print(
                    f"round {n} {r['kind']:>10}: launch {r['launch']:.1f} s ({r['launched']}); warm pool at the "
                    f"call: {r['pool']} | call -> safe point "
                    f"{r['safe']:.1f} s (warm processes ready {wait} s after the resize was accepted) | call -> "
                    f"first point of 3 workers {r['first']:.1f} s (target <= {target:.1f} s; restart alone "
                    f"{r['first'] - r['safe']:.1f} s, started {r['restarted']}{kept}); steps {r['step'][0]} -> "
                    f"{r['step'][1]}, doubled {r['doubled']}  {'OK' if r['first'] <= target else 'MISSED'}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
