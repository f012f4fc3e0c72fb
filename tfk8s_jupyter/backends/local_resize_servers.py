"""Parameter-server scale-up that keeps the servers: only the chief restarts (and the added workers start).

The ps and the workers of a parameter-server job are TensorFlow servers that hold nothing of their own
cluster until a coordinator connects: the coordinator (the chief) sends its ``ServerDef`` to every task
when it connects, and each server makes a new session from it. So a server started with a 2-worker
cluster spec serves a coordinator whose cluster names 3 workers (measured with TensorFlow 2.21: a second
chief connected in 0.07 s to a ps and two workers started for 2 workers plus a third worker started for 3,
and its closures ran on all three workers). A scale-up therefore restarts only the chief, on a warm pool
process, and starts the added workers; the ps and the workers that stay keep serving, untouched:

- the restart needs one warm process per replica it starts (the chief and the added workers), not one per
  replica of the new shape (:func:`starts_of`), and saves the servers' start and connection;
- the cluster (:func:`cluster_keeping`): the servers keep their address, the chief and the added workers get
  new ports (the old chief's port is held, see below);
- serving replicas exit once the chief's address stops answering (the runner's watchdog probes the chief
  address of *their* cluster spec, the old one): the supervisor holds the old chief's port with a listener
  that answers those probes (:class:`ChiefStandIn`) from the moment the old chief is stopped until the job
  ends (:func:`release_stand_ins`).

The old coordinator's variables on the ps belong to the eager context it made there; the chief is killed,
so the ps frees them when that context expires without keep-alives (``_KEEP_ALIVE_SECS``, 600 s, in
``tensorflow/python/eager/context.py``; read, not measured). Falls back to the restart of every replica when
a server is not alive and up at the safe point, or the old chief's address cannot be held.
"""

from __future__ import annotations

import socket
import threading
import time

STAND_INS = "chief_stand_ins"  # the supervisor's attribute: the listeners holding old chiefs' ports
HOLD_WAIT = (
    2.0  # seconds to bind the old chief's port (the servers' watchdog allows 3 missed probes, 1 s apart)
)


def servers_kept(sup, workers: int) -> list | None:
    """The replicas a scale-up of ``sup``'s job to ``workers`` workers keeps serving (the ps and the
    workers that stay), or ``None`` when every replica must restart (not a parameter-server scale-up, or a
    server, or the chief, is not alive and up)."""
    spec = sup.spec
    if spec.strategy != "parameter_server" or sup.reporting.status.role != "chief":
        return None
    from .base import R_REMOVED

    live_workers = [r for r in sup.replicas if r.status.role == "worker" and r.status.state != R_REMOVED]
    if workers <= len(live_workers):
        return None
    servers = [r for r in sup.replicas if r.status.role == "ps"] + live_workers
    if not sup.reporting.alive or not all(r.alive and r.up for r in servers):
        return None
    return servers


def starts_of(spec, workers: int, servers: list | None) -> list[str]:
    """The replica names a restart to ``workers`` workers starts: every one, or all but the kept servers."""
    names = spec.with_(workers=workers).replica_names
    kept = {r.name for r in servers or []}
    return [n for n in names if n not in kept]


def cluster_keeping(spec, servers: list, ports: list[int], host: str) -> dict[str, list[str]]:
    """The new shape's cluster (``spec``): the kept ``servers`` at their address, every other replica on one
    of ``ports`` (as many as replicas started)."""
    at = {r.name: r.status.host for r in servers}
    free = iter(ports)
    return {
        r.role: [at.get(f"{r.role}-{i}") or f"{host}:{next(free)}" for i in range(r.count)]
        for r in spec.replicas
    }


class ChiefStandIn:
    """A listener on an old chief's address that accepts (and closes) the serving replicas' probes."""

    def __init__(self, address: str):
        host, port = address.rsplit(":", 1)
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host.strip("[]"), int(port)))
        self.sock.listen(64)
        self.closed = False
        threading.Thread(target=self._serve, name="tfk8s-chief-stand-in", daemon=True).start()

    def _serve(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def hold_chief_port(sup, address: str) -> bool:
    """Hold the stopped chief's ``address`` for the serving replicas' probes; False when it cannot be bound
    within :data:`HOLD_WAIT` seconds (the servers would exit: the restart takes every replica)."""
    from .local_supervisor import say

    deadline = time.monotonic() + HOLD_WAIT
    while True:
        try:
            stand_in = ChiefStandIn(address)
            break
        except OSError as e:
            # a killed process's sockets close as it exits, which takes a moment for a large one under load
            if time.monotonic() > deadline:
                say(f"could not hold the old chief's address {address} ({e}); restarting every replica")
                return False
            time.sleep(0.02)
    holders = getattr(sup, STAND_INS, None)
    if holders is None:
        holders = []
        setattr(sup, STAND_INS, holders)
    holders.append(stand_in)
    return True


def release_stand_ins(sup) -> None:
    """Close every listener held for old chiefs (the job ends: its serving replicas may exit)."""
    for stand_in in getattr(sup, STAND_INS, None) or []:
        stand_in.close()
    setattr(sup, STAND_INS, [])
