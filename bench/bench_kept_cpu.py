"""Does a kept replica do more work per training step than a cold one? CPU seconds per step, per replica and
per thread, over the same epochs, cold and kept runs alternating in one run.

    .venv/bin/python bench/bench_kept_cpu.py [--rounds 3] [--strategies parameter_server,multi_worker_mirrored]
        [--epochs 8] [--steps 150]

Steps/s (``bench_engine.py``) moves with whatever else the machine runs; the CPU a process spends for a fixed
number of steps moves much less. For each strategy and round: a cold run (a job whose ``--env`` no kept set
has: fresh processes, the pool off), then the same job again on the replicas it kept. Between the end of
epoch 2 and the end of the last epoch, each replica's threads' CPU (``/proc/<pid>/task/*/stat``, user +
system) is read; printed per run: steps/s as the cell timed it, CPU ms per step per replica and its busiest
threads; then per strategy the median over rounds of kept ÷ cold for CPU per step (all replicas summed) and
for steps/s. The cell is ``bench_engine.CELL``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

TICK = os.sysconf("SC_CLK_TCK")
SHAPES = {"parameter_server": {"workers": 2, "ps": 1}, "multi_worker_mirrored": {"workers": 2, "ps": 0}}


def thread_cpu(pid: int) -> collections.Counter:
    """CPU seconds per thread name of process ``pid`` so far."""
    out: collections.Counter = collections.Counter()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] += (int(fields[11]) + int(fields[12])) / TICK
    return out


def one_run(tk, code: str, strategy: str, env: dict, epochs: int, steps: int) -> dict:
    job = tk.submit(
        code, name=f"cpu-{strategy[:2]}-{int(time.time() * 1000) % 10**8}", env=env, **SHAPES[strategy]
    )

    def epoch_count() -> int:
        return sum(1 for e in job.events() if e.get("type") == "epoch")

    while epoch_count() < 2 and not job.status.done:
        time.sleep(0.02)
    replicas = job.status.replicas
    pids = {r.name: r.pid for r in replicas}
    before = {n: thread_cpu(p) for n, p in pids.items()}
    while epoch_count() < epochs and not job.status.done:
        time.sleep(0.02)
    after = {n: thread_cpu(p) for n, p in pids.items()}
    job.wait()
    status = job.status
    counted = steps * (epochs - 2)
    reporting = "chief-0" if strategy == "parameter_server" else "worker-0"
    bench = [
        json.loads(x.split("BENCH ", 1)[1])
        for x in job.logs(reporting).splitlines()
        if x.startswith("BENCH ")
    ]
    per = {n: after[n] - before[n] for n in pids}
    return {
        "phase": status.phase,
        "launch": sorted({r.launch or "cold" for r in replicas}),
        "steps_per_s": bench[-1]["steps_per_s"] if bench else None,
        "ms_per_step": {n: 1000 * sum(d.values()) / counted for n, d in per.items()},
        "threads": {n: d.most_common(4) for n, d in per.items()},
    }


def show(label: str, run: dict) -> None:
    total = sum(run["ms_per_step"].values())
    sps = run["steps_per_s"]
    print(
        f"  {label:5s} {'/'.join(run['launch']):5s} {run['phase']:9s} steps/s {sps:7.1f}  CPU {total:6.2f} ms/step"
    )
    for n, ms in run["ms_per_step"].items():
        busiest = ", ".join(f"{name} {1000 * s:.0f}" for name, s in run["threads"][n])
        print(f"        {n:9s} {ms:6.2f} ms/step   (CPU ms over the epochs: {busiest})")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--strategies", default="parameter_server,multi_worker_mirrored")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=150)
    args = ap.parse_args()
    os.environ.setdefault("TFK8S_HOME", tempfile.mkdtemp(prefix="tfk8s-bench-cpu-"))
    from bench_engine import CELL

    import tfk8s_jupyter as tk
    from tfk8s_jupyter.backends import local_keep
    from tfk8s_jupyter.config import TFK8s, set_current_config

    set_current_config(TFK8s(keep_warm=600, warm_pool=0))
    code = CELL.replace("EPOCHS", str(args.epochs)).replace("STEPS", str(args.steps))
    load = os.getloadavg()[0]
    print(
        f"bench_kept_cpu {time.strftime('%Y-%m-%d %H:%M:%S')} UTC, load {load:.2f}, {args.rounds} rounds, "
        f"{args.epochs} epochs x {args.steps} steps, CPU counted over epochs 3..{args.epochs}"
    )
    try:
        for strategy in args.strategies.split(","):
            print(f"\n{strategy} ({SHAPES[strategy]})")
            cpu_ratios, sps_ratios = [], []
            for i in range(args.rounds):
                env = {"BENCH_ROUND": f"{strategy}-{i}"}  # a shape no kept set has: a cold start
                cold = one_run(tk, code, strategy, env, args.epochs, args.steps)
                kept = one_run(tk, code, strategy, env, args.epochs, args.steps)
                print(f" round {i + 1}")
                show("cold", cold)
                show("kept", kept)
                if kept["launch"] != ["kept"] or cold["launch"] != ["cold"]:
                    print("  (not a cold/kept pair: left out of the medians)")
                    continue
                cpu_ratios.append(sum(kept["ms_per_step"].values()) / sum(cold["ms_per_step"].values()))
                sps_ratios.append(kept["steps_per_s"] / cold["steps_per_s"])
                local_keep.stop_kept(Path(os.environ["TFK8S_HOME"]))  # memory: one kept set at a time
            if cpu_ratios:
                print(
                    f" {strategy}: kept / cold, median of {len(cpu_ratios)}: CPU per step "
                    f"{statistics.median(cpu_ratios):.3f} ({', '.join(f'{r:.3f}' for r in cpu_ratios)}); "
                    f"steps/s {statistics.median(sps_ratios):.3f} ({', '.join(f'{r:.3f}' for r in sps_ratios)})"
                )
    finally:
        local_keep.stop_kept(Path(os.environ["TFK8S_HOME"]))
    print(f"\nload at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
