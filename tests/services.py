"""Real services the integration tests start and stop themselves, by PID.

- `MotoS3`: moto's S3-compatible HTTP server on 127.0.0.1 (a subprocess).
- `TcpProxy`: a loopback TCP proxy in front of it that can refuse connections for a while,
  which is what an outage of the storage endpoint looks like to a client.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

# Ports for the tests' servers come from below Linux's ephemeral range (32768+) and above Ray's
# default worker ports (10002-19999): a port the kernel hands to an outgoing connection, or a
# Ray worker binds, between our draw and our server's bind would make a test fail now and then.
# The test clusters' worker ports sit at 24000+ (see test_cluster.py), so these stop at 23999.
PORT_RANGE = range(20000, 24000)
_next_port = PORT_RANGE.start + random.Random(os.getpid()).randrange(len(PORT_RANGE))


def _bindable(port: int) -> bool:
    with socket.socket() as s:  # no SO_REUSEADDR: a port in TIME_WAIT counts as taken
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def free_ports(count: int = 1) -> int:
    """The first of `count` consecutive TCP ports nobody holds now, none handed out before."""
    global _next_port
    for _ in range(len(PORT_RANGE)):
        base = _next_port
        if base + count > PORT_RANGE.stop:
            base = PORT_RANGE.start
        _next_port = base + 1
        if all(_bindable(base + k) for k in range(count)):
            _next_port = base + count
            return base
    raise RuntimeError(f"no {count} consecutive free ports in {PORT_RANGE}")


def free_port() -> int:
    """A TCP port nobody holds now, never handed out before by this process."""
    return free_ports(1)


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port that refuses every connection while the block runs: bound here and never
    listened on, so no other process (a parallel test part, a Ray worker) can take it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0) -> None:
    """Wait until `url` answers (any HTTP status)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout} s") from None
            time.sleep(0.2)


class MotoS3:
    """moto's server as a subprocess on 127.0.0.1."""

    def __init__(self, log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        moto = Path(sys.executable).with_name("moto_server")
        self.log = open(log, "w")
        self.proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        wait_http(self.url)

    def stop(self) -> None:
        """Terminate exactly the process this object started."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; `block()` refuses and cuts connections."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server: socket.socket | None = None
        self.unblock()

    def _listen(self) -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        return s

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # closed by block()/stop()
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with self._lock:
                    self._conns.discard(s)
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def block(self) -> None:
        """Refuse new connections and cut open ones (the endpoint is 'down')."""
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def unblock(self) -> None:
        """Accept connections again."""
        if self._server is None:
            self._server = self._listen()
            threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def stop(self) -> None:
        self.block()
