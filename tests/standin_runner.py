"""A TensorFlow-free stand-in for the runner, for fast tests of the local supervisor's lifecycle rules.

It follows the runner contract's environment and behaves like a replica in the ways the supervisor can
see: it listens on its port; the reporting replica waits for its peers, prints ``start``, per-step
``metric`` and ``epoch`` lines, a ``checkpoint`` per epoch (resuming from it after a restart) and ``end``;
a lost peer ends a replica with an ``UnavailableError``; an exception in the cell prints an ``error`` event
and exits 1; ps and PS workers serve until SIGTERM or until the chief is gone (watchdog, exit 0).

``STANDIN_CRASH=<role>-<index>`` makes that replica exit 1 as soon as it listens (every time it starts);
``STANDIN_START_DELAY`` delays the reporting replica's start event by that many seconds.

The payload's code runs first and may set ``EPOCHS``, ``STEPS``, ``STEP_SECONDS`` and ``HANG_AFTER_END``
(never exit after ``end``) or raise.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tfk8s_jupyter.protocol import encode  # noqa: E402

RUN = secrets.token_hex(4)
SEQ = 0
KEY = os.environ.pop("TFK8S_PROTOCOL_KEY", "")  # as the runner: the job's key, out of the cell's sight


def emit(event_type: str, **fields) -> None:
    global SEQ
    SEQ += 1
    print(encode(event_type, KEY, run=RUN, seq=SEQ, t=time.time(), **fields), flush=True)


def reachable(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def serve(server: socket.socket) -> None:
    while True:
        conn, _ = server.accept()
        conn.close()


def main() -> int:
    role, index = os.environ["TFK8S_ROLE"], int(os.environ["TFK8S_INDEX"])
    cluster = json.loads(os.environ["TFK8S_CLUSTER"])
    strategy = os.environ["TFK8S_STRATEGY"]
    me = cluster[role][index]
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("127.0.0.1", int(me.rsplit(":", 1)[1])))
    except OSError as e:
        print(f"UnknownError: Could not start gRPC server on {me}: {e}", file=sys.stderr, flush=True)
        return 1
    os.makedirs(os.environ["TFK8S_WORKDIR"], exist_ok=True)
    server.listen(64)
    threading.Thread(target=serve, args=(server,), daemon=True).start()
    print(f"stand-in {role}-{index} listening on {me}", file=sys.stderr, flush=True)
    reporting = (role, index) == (("chief", 0) if strategy == "parameter_server" else ("worker", 0))
    if os.environ.get("STANDIN_CRASH") == f"{role}-{index}":  # a replica that crashes right after it starts
        print(f"stand-in {role}-{index}: crashing as told", file=sys.stderr, flush=True)
        return 1
    peers = [a for r, addrs in cluster.items() for a in addrs if a != me]
    chief = cluster["chief"][0] if strategy == "parameter_server" else cluster["worker"][0]

    if not reporting:
        seen = False
        misses = 0
        while True:  # serve; exit 0 once the chief (or worker 0) was seen and is gone
            time.sleep(0.2)
            if reachable(chief):
                seen, misses = True, 0
            elif seen:
                misses += 1
                if misses >= 3:
                    print(f"stand-in {role}-{index}: {chief} is gone; exiting", file=sys.stderr, flush=True)
                    return 0

    # STANDIN_WAIT_FOR=ps,chief: start without waiting for the workers (as if it tolerated missing ones).
    wait_roles = os.environ.get("STANDIN_WAIT_FOR")
    if wait_roles:
        peers = [a for r, addrs in cluster.items() if r in wait_roles.split(",") for a in addrs if a != me]
    while not all(reachable(p) for p in peers):
        time.sleep(0.1)
    time.sleep(float(os.environ.get("STANDIN_START_DELAY", 0)))  # a slow set-up before the start event
    payload = json.loads(open(os.environ["TFK8S_PAYLOAD"]).read())
    os.chdir(os.environ["TFK8S_WORKDIR"])
    ckpt = os.path.join(os.environ["TFK8S_CHECKPOINT_DIR"], "standin.json")
    initial_epoch = json.load(open(ckpt))["epoch"] if os.path.exists(ckpt) else 0
    emit("start", role=role, index=index, initial_epoch=initial_epoch, replicas=len(peers) + 1)
    ns = {"EPOCHS": 2, "STEPS": 10, "STEP_SECONDS": 0.05}
    try:
        exec(compile(payload["code"], "<cell>", "exec"), ns)
    except Exception as e:
        innermost = traceback.extract_tb(e.__traceback__)[-1].filename
        emit(
            "error",
            message=f"{type(e).__name__}: {e}",
            traceback=traceback.format_exc(),
            error_type=f"{type(e).__module__}.{type(e).__qualname__}",
            raised_in_cell=innermost == "<cell>",
        )
        return 1
    must = [
        a for r, addrs in cluster.items() if r != "worker" or strategy != "parameter_server" for a in addrs
    ]
    step = initial_epoch * ns["STEPS"]
    loss = 1.0 / (1 + step)
    for epoch in range(initial_epoch, ns["EPOCHS"]):
        for _ in range(ns["STEPS"]):
            time.sleep(ns["STEP_SECONDS"])
            lost = [a for a in must if a != me and not reachable(a)]
            if lost:
                emit(
                    "error",
                    message=f"UnavailableError: peer {lost[0]} is gone",
                    traceback="",
                    error_type="tensorflow.python.framework.errors_impl.UnavailableError",
                    raised_in_cell=False,
                )
                return 1
            step += 1
            loss = 1.0 / (1 + step)
            emit("metric", epoch=epoch, step=step, values={"loss": loss})
        emit("epoch", epoch=epoch, step=step, values={"loss": loss}, last_epoch=epoch + 1 >= ns["EPOCHS"])
        with open(ckpt, "w") as f:
            json.dump({"epoch": epoch + 1}, f)
        emit("checkpoint", epoch=epoch, path=ckpt)
    time.sleep(ns.get("AFTER_FIT_SECONDS", 0))  # like a fit whose tf.data teardown takes a while
    emit("end", status="succeeded", step=step)
    while ns.get("HANG_AFTER_END"):  # like a process whose threads keep it from exiting
        time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
