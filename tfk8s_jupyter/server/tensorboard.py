"""TensorBoard servers the Jupyter server starts for the side panel's job view (``POST .../tensorboard``).

One TensorBoard per job, on 127.0.0.1 and a free port (``python -m tensorboard.main --logdir_spec ...``), a
child of the Jupyter server: reused while it runs, and stopped when the server stops (``stop_all``, also
registered with ``atexit``).
"""

from __future__ import annotations

import atexit
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from ..backends.base import TFK8sError

HOST = "127.0.0.1"
START_TIMEOUT = 90.0  # TensorBoard imports TensorFlow when it can; on a busy machine that takes a while


class TensorBoardError(TFK8sError):
    """A TensorBoard server that could not start."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class TensorBoardServers:
    """The TensorBoard servers of this Jupyter server, one per (backend, job)."""

    def __init__(self, python: str = sys.executable):
        self.python = python
        self._lock = threading.Lock()
        self._servers: dict[tuple[str, str], tuple[subprocess.Popen, int]] = {}
        atexit.register(self.stop_all)

    def start(self, key: tuple[str, str], logdir_spec: str) -> dict:
        """Start (or reuse) the TensorBoard of ``key``; returns ``{"url", "port", "pid", "reused"}``.

        Blocks until it answers; raises :class:`TensorBoardError` (one sentence) if it exits or does not
        answer in time, leaving no process behind.
        """
        with self._lock:
            known = self._servers.get(key)
            if known is not None and known[0].poll() is None:
                proc, port = known
                return {"url": f"http://{HOST}:{port}/", "port": port, "pid": proc.pid, "reused": True}
            port = _free_port()
            log = tempfile.TemporaryFile()
            argv = ["--logdir_spec", logdir_spec, "--host", HOST, "--port", str(port)]
            proc = subprocess.Popen(
                [self.python, "-m", "tensorboard.main", *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl+C reaches the Jupyter server, which stops it
            )
            url = f"http://{HOST}:{port}/"
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                if _answers(url):
                    self._servers[key] = (proc, port)
                    log.close()
                    return {"url": url, "port": port, "pid": proc.pid, "reused": False}
                time.sleep(0.3)
            _stop(proc)
            log.seek(0)
            tail = " ".join(log.read().decode(errors="replace").strip().splitlines()[-1:]) or "no output"
            log.close()
            raise TensorBoardError(
                f"TensorBoard for job {key[1]} did not start ({tail}); check that tensorboard is installed "
                "in the Jupyter server's environment and try again."
            )

    def stop(self, key: tuple[str, str]) -> bool:
        """Stop the TensorBoard of ``key`` (its job was deleted); whether one was running."""
        with self._lock:
            known = self._servers.pop(key, None)
        if known is None or known[0].poll() is not None:
            return False
        _stop(known[0])
        return True

    def stop_all(self) -> int:
        """Stop every TensorBoard this server started; returns how many were running."""
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        running = [proc for proc, _ in servers if proc.poll() is None]
        for proc in running:
            _stop(proc)
        return len(running)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 5 s; reaped either way."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass


__all__ = ["HOST", "TensorBoardError", "TensorBoardServers"]
