"""A TCP proxy in front of the test server whose link a test can cut and restore.

Clients connected through it see real connection failures, as a network outage or a server
restart causes them: while the link is cut, open connections are closed and new ones are
accepted and closed at once, so every command fails with a connection error.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit

import pytest

_CHUNK = 65536


class Proxy:
    """Forwards connections from a free loopback port to the server at ``url``."""

    def __init__(self, url: str) -> None:
        if "cluster=1" in url:
            # A cluster client follows the cluster's own addresses, around any proxy.
            pytest.skip("a proxy fronts a single server")
        target = urlsplit(url)
        self._target = (target.hostname or "127.0.0.1", target.port or 6379)
        self._db = target.path or "/0"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        self.accepted = 0
        """Connections accepted so far, forwarded or not."""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="netcut-accept", daemon=True).start()

    @property
    def url(self) -> str:
        """The URL clients use to reach the server through the proxy."""
        return f"redis://127.0.0.1:{self.port}{self._db}"

    def cut(self) -> None:
        """Closes every forwarded connection and refuses to forward new ones."""
        with self._lock:
            self._cut = True
            doomed, self._open = self._open, set()
        for sock in doomed:
            _close(sock)

    def restore(self) -> None:
        """Forwards new connections again."""
        with self._lock:
            self._cut = False

    def close(self) -> None:
        """Stops listening and closes every connection."""
        self.cut()
        self._closed = True
        _close(self._listener)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                cut = self._cut
                self.accepted += 1
            if cut:
                _close(client)
                continue
            try:
                server = socket.create_connection(self._target)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, server))
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(_CHUNK):
                dst.sendall(data)
        except OSError:
            pass
        # One side ended: end the other, so the client sees the connection drop.
        with self._lock:
            self._open.difference_update((src, dst))
        _close(src)
        _close(dst)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
