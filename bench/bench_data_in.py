"""Data in: what finding and shipping the files a cell reads adds to submission.

    .venv/bin/python bench/bench_data_in.py [--rounds 9]

A notebook folder holds ``data/``: 200 files, 5 MB in all. Two cells are submitted side by side, the
order flipping every round: one reads the folder by its relative path (``"data"``), the other names no
file. Submission = ``capture`` (detection; on Kubernetes also reading the bytes) + ``backend.submit``.
Prints the median of each and the difference (target: ≤ 1 s locally, ≤ 2 s on the Kubernetes test
server), the time a local replica takes to present the folder in its work dir, and the objects the
Kubernetes job carries.

Local: the real ``LocalBackend`` (record, detached supervisor) with the TensorFlow-free stand-in runner;
each job is deleted after it is timed. Kubernetes: the in-repo test API server, validating every object
against the real schemas, as in the test suite; no kubelet (submission only).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "k8s"))

from apiserver import ApiServer  # noqa: E402

from tfk8s_jupyter import replica_workdir  # noqa: E402
from tfk8s_jupyter.backends.kubernetes import KubernetesBackend  # noqa: E402
from tfk8s_jupyter.backends.local import LocalBackend, SupervisorTestHooks  # noqa: E402
from tfk8s_jupyter.capture import capture  # noqa: E402
from tfk8s_jupyter.spec import make_spec  # noqa: E402

FILES = 200
TOTAL = 5 * 1024 * 1024
READS = 'EPOCHS = 1\nSTEPS = 2\nimport os\nnames = sorted(os.listdir("data"))\n'
NO_READS = "EPOCHS = 1\nSTEPS = 2\nimport os\nnames = []\n"


def make_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="tfk8s-bench-nb-"))
    (folder / "data").mkdir()
    size = TOTAL // FILES
    for i in range(FILES):
        (folder / "data" / f"part-{i:03d}.bin").write_bytes(os.urandom(size))
    return folder


def timed_submit(backend, cell: str, name: str, kind: str, folder: Path) -> float:
    started = time.perf_counter()
    payload = capture(cell, backend=kind, root=folder).payload
    backend.submit(make_spec(cell, workers=2, name=name, backend=kind), payload)
    took = time.perf_counter() - started
    backend.delete(name)
    return took


def side_by_side(backend, kind: str, folder: Path, rounds: int) -> tuple[list[float], list[float]]:
    reads, none = [], []
    for r in range(rounds):
        order = [("r", READS), ("n", NO_READS)] if r % 2 == 0 else [("n", NO_READS), ("r", READS)]
        for tag, cell in order:
            took = timed_submit(backend, cell, f"bench-{kind[:3]}-{tag}{r}", kind, folder)
            (reads if tag == "r" else none).append(took)
    return reads, none


def report(label: str, reads: list[float], none: list[float], target: float) -> None:
    a, b = statistics.median(reads), statistics.median(none)
    verdict = "met" if a - b <= target else "NOT met"
    print(
        f"{label}: reads data/ {a:.3f} s (worst {max(reads):.3f}), names no file {b:.3f} s "
        f"(worst {max(none):.3f}); added {a - b:.3f} s (target <= {target:.0f} s: {verdict})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    folder = make_folder()
    os.chdir(folder)
    print(f"notebook folder: data/ with {FILES} files, {TOTAL / 1024 / 1024:.1f} MB; load {os.getloadavg()}")

    os.environ["TFK8S_HOME"] = tempfile.mkdtemp(prefix="tfk8s-bench-home-")
    LocalBackend.test_hooks = SupervisorTestHooks(runner=str(ROOT / "tests" / "standin_runner.py"))
    reads, none = side_by_side(LocalBackend(), "local", folder, args.rounds)
    report("local", reads, none, 1.0)
    presents = []
    for _ in range(args.rounds):
        work = Path(tempfile.mkdtemp(prefix="tfk8s-bench-work-"))
        started = time.perf_counter()
        replica_workdir._present_folder(folder, work)
        presents.append(time.perf_counter() - started)
        shutil.rmtree(work)
    print(
        f"local replica start: presenting the notebook folder in a work dir {statistics.median(presents):.3f} s "
        f"(worst {max(presents):.3f}), once per replica, in the replica"
    )

    server = ApiServer(validate=True).start()
    try:
        kubeconfig = server.kubeconfig(Path(tempfile.mkdtemp()) / "kubeconfig")
        backend = KubernetesBackend(config_file=str(kubeconfig))
        backend.cluster()  # connect once (kubeconfig parsing is not submission)
        reads, none = side_by_side(backend, "kubernetes", folder, args.rounds)
        report("kubernetes (test API server)", reads, none, 2.0)
        payload = capture(READS, backend="kubernetes", root=folder).payload
        backend.submit(make_spec(READS, workers=2, name="bench-objects", backend="kubernetes"), payload)
        cms = [o for o in server.objects("configmaps") if o["metadata"]["name"].startswith("bench-objects")]
        print(f"kubernetes job objects: {len(cms)} ConfigMaps ({len(cms) - 1} for the inputs)")
        backend.delete("bench-objects")
    finally:
        server.stop()
    shutil.rmtree(folder)
    shutil.rmtree(os.environ["TFK8S_HOME"], ignore_errors=True)
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
