"""``dtaskq library``: the administrator loads this version's function library once, checks
that every server has it, and the application runs as a user who may not load it, with the
rules ``dtaskq library acl`` prints (docs/cli.md). Run in subprocesses (tests/cli_procs.py)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
import redis
from cli_procs import (
    DTASKQ,
    ENV,
    closed_port_url,
    make_project,
    one_line,
    run,
    start_worker,
    stop,
    with_user,
)
from conftest import is_cluster
from redis.cluster import RedisCluster
from waiting import until

import dtaskq
import dtaskq.urls
from dtaskq import TaskStatus
from dtaskq.cli.acl import commands_called
from dtaskq.scripts import LIBRARY
from dtaskq.server import ENV_URL


def primaries(url: str) -> list[redis.Redis]:
    """A plain client on the server of ``url``, or one on each primary of its cluster."""
    plain, cluster = dtaskq.urls.parse(url)
    if not cluster:
        return [redis.Redis.from_url(plain)]
    with RedisCluster.from_url(plain) as nodes:
        return [redis.Redis(host=n.host, port=n.port) for n in nodes.get_primaries()]


def has_library(server: redis.Redis) -> bool:
    """Whether ``server`` has this version's library, asked of it alone."""
    return bool(server.function_list(library=LIBRARY.name))


@pytest.fixture
def servers(server_url: str) -> Iterator[list[redis.Redis]]:
    """Plain clients on the test's server, or on each primary of its cluster."""
    found = primaries(server_url)
    yield found
    for server in found:
        server.close()


@pytest.fixture
def no_library(servers: list[redis.Redis]) -> None:
    """No function library on any server (clients of later tests load it again)."""
    for server in servers:
        server.function_flush()


def test_show_names_the_library_and_each_function(tmp_path: Path) -> None:
    result = run(tmp_path, "library", "show")
    assert result.returncode == 0, result.stderr
    name, *rows = result.stdout.splitlines()
    assert name == LIBRARY.name
    shown = {row.split()[0]: row.split()[1:3] for row in rows}
    assert shown == {
        fn.server_name: ["FCALL_RO" if fn.read_only else "FCALL", str(fn.num_keys)]
        for fn in LIBRARY.functions.values()
    }


def test_a_reader_that_goes_away_ends_the_output_quietly(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # as `dtaskq library show | head -1` once head has its line
    with os.fdopen(write, "wb") as gone:
        result = subprocess.run(
            [*DTASKQ, "library", "show"],
            env=ENV,
            cwd=tmp_path,
            stdout=gone,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    assert (result.returncode, result.stderr) == (1, "")


def test_show_source_prints_what_function_load_takes(
    tmp_path: Path, server_url: str, servers: list[redis.Redis], no_library: None
) -> None:
    result = run(tmp_path, "library", "show", "--source")
    assert result.returncode == 0, result.stderr
    assert result.stdout == LIBRARY.source
    for server in servers:
        assert server.function_load(result.stdout) == LIBRARY.name.encode()
    assert run(tmp_path, "library", "status", "--url", server_url).returncode == 0


def status_lines(tmp_path: Path, url: str, code: int) -> list[str]:
    """What ``dtaskq library status`` printed, which must have exited with ``code``."""
    result = run(tmp_path, "library", "status", "--url", url)
    assert (result.returncode, result.stderr) == (code, ""), result
    return result.stdout.splitlines()


def test_status_says_whether_every_server_has_the_library(
    tmp_path: Path, server_url: str, servers: list[redis.Redis], no_library: None
) -> None:
    missing = status_lines(tmp_path, server_url, 1)
    assert len(missing) == len(servers)
    assert all(line.startswith(f"{LIBRARY.name} is not loaded on ") for line in missing)

    result = run(tmp_path, "library", "load", "--url", server_url)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{LIBRARY.name}\n", "")

    loaded = status_lines(tmp_path, server_url, 0)
    assert len(loaded) == len(servers)
    assert all(line.startswith(f"{LIBRARY.name} is loaded on ") for line in loaded)


def test_load_puts_the_library_on_every_primary_of_a_cluster(
    tmp_path: Path, server_url: str, servers: list[redis.Redis], no_library: None
) -> None:
    if not is_cluster(server_url):
        pytest.skip("a single server has no primaries to cover")
    assert len(servers) == 3 and not any(has_library(s) for s in servers)
    assert run(tmp_path, "library", "load", "--url", server_url).returncode == 0
    assert all(has_library(s) for s in servers)


def test_status_names_the_primary_that_lacks_the_library(
    tmp_path: Path, server_url: str, servers: list[redis.Redis]
) -> None:
    if not is_cluster(server_url):
        pytest.skip("a single server has no primaries to tell apart")
    assert run(tmp_path, "library", "load", "--url", server_url).returncode == 0
    servers[1].function_delete(LIBRARY.name)
    lines = status_lines(tmp_path, server_url, 1)
    port = servers[1].get_connection_kwargs()["port"]
    assert [line for line in lines if "not loaded" in line] == [
        f"{LIBRARY.name} is not loaded on 127.0.0.1:{port}"
    ]


@pytest.mark.parametrize("action", ["load", "status"])
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("localhost:6379", "argument --url: not a server URL: 'localhost:6379'"),
        ("http://h:1/0", "argument --url: not a server URL: 'http://h:1/0'"),
        ("redis://h:1/0?cluster=maybe", "argument --url: cluster= takes 1 or 0"),
    ],
)
def test_a_bad_url_is_one_line_and_status_2(
    tmp_path: Path, action: str, url: str, says: str
) -> None:
    result = run(tmp_path, "library", action, "--url", url)
    assert result.returncode == 2, result.stderr
    line = one_line(result)
    assert line.startswith(f"dtaskq library {action}: ") and says in line, line


@pytest.mark.parametrize("action", ["load", "status"])
def test_the_url_comes_from_the_environment(tmp_path: Path, action: str, server_url: str) -> None:
    result = run(tmp_path, "library", action, env={ENV_URL: server_url})
    assert result.returncode == 0, result.stderr
    missing = run(tmp_path, "library", action)
    assert missing.returncode == 2
    assert one_line(missing) == f"dtaskq library {action}: needs --url or ${ENV_URL}"


@pytest.mark.parametrize("cluster", [False, True], ids=["server", "cluster"])
@pytest.mark.parametrize("action", ["load", "status"])
def test_an_unreachable_server_is_one_line_and_status_1(
    tmp_path: Path, action: str, cluster: bool
) -> None:
    url = closed_port_url(cluster)
    result = run(tmp_path, "library", action, "--url", url, "--connect-timeout", "1")
    assert result.returncode == 1, result.stderr
    line = one_line(result)
    assert line.startswith(f"dtaskq library {action}: cannot reach the server: "), line


def test_the_commands_of_the_library_are_named_literally() -> None:
    assert commands_called("redis.call('HGET', k, f) redis.pcall(\"del\", k)") == ["del", "hget"]
    with pytest.raises(RuntimeError, match="not named by a string literal"):
        commands_called("local verb = 'DEL' redis.call(verb, k)")
    assert {"hget", "xadd", "zadd"} <= set(commands_called(LIBRARY.source))


# --- an application user who may not load the library ---


def refusals(servers: list[redis.Redis], user: str) -> list[str]:
    """What the servers' ACL logs say they refused ``user``, but for CLIENT SETINFO, which
    redis-py sends on each new connection and gets on without (dtaskq/cli/acl.py)."""
    return [
        e["object"]
        for s in servers
        for e in s.acl_log()
        if e["username"] == user and e["object"] != "client|setinfo"
    ]


@pytest.fixture
def app_url(
    tmp_path: Path, server_url: str, prefix: str, servers: list[redis.Redis]
) -> Iterator[str]:
    """The test's server as a new user with the rules ``dtaskq library acl`` prints for the
    test's prefix, on every server; a user the ACL log has refused nothing yet."""
    printed = run(tmp_path, "library", "acl", "--prefix", prefix)
    assert printed.returncode == 0, printed.stderr
    user, password = f"app{uuid4().hex[:8]}", uuid4().hex
    for server in servers:
        server.execute_command(
            "ACL", "SETUSER", user, "on", f">{password}", *printed.stdout.split()
        )
    yield with_user(server_url, user, password)
    for server in servers:
        server.acl_deluser(user)


def user_of(url: str) -> str:
    """The user a URL names."""
    return url.split("://", 1)[1].split(":", 1)[0]


def test_a_user_who_may_not_load_the_library_runs_once_an_administrator_did(
    tmp_path: Path,
    server_url: str,
    app_url: str,
    client: dtaskq.Client,
    prefix: str,
    namespace: str,
    servers: list[redis.Redis],
    no_library: None,
) -> None:
    with dtaskq.Client.from_url(app_url, prefix=prefix) as app:
        with pytest.raises(dtaskq.ConfigurationError, match="dtaskq library load --url URL"):
            app.add_task(namespace, "t", units=["a"])
        refused = run(tmp_path, "library", "load", "--url", app_url)
        assert refused.returncode == 2
        assert "may not load it" in one_line(refused)
        worker = run(
            make_project(tmp_path),
            *("worker", "--url", app_url, "--prefix", prefix, "--namespace", namespace),
            *("--provider", "mypkg.merge:factory", "--connect-timeout", "60"),
        )
        assert worker.returncode == 2
        assert "have an administrator run 'dtaskq library load" in one_line(worker)

        assert run(tmp_path, "library", "load", "--url", server_url).returncode == 0
        for server in servers:
            server.acl_log_reset()
        ref = app.add_task(namespace, "t", units=["a", "b"], ack_barrier=True)
        for unit in ("a", "b"):
            token = app.claim_unit(ref, node="n1", unit=unit)
            app.heartbeat(node="n1", claims=[(ref, unit, token)])
            app.complete_unit(ref, node="n1", unit=unit, token=token)
        app.record_post_ack(ref, node="n1")
        app.finalize_task(ref)
        task = app.get_task(namespace, "t")
        assert task is not None and task.status is TaskStatus.FINISHED
        assert app.list_tasks(namespace)[namespace] == [task]
        app.sweep(namespace)
    assert refusals(servers, user_of(app_url)) == []


def test_a_worker_runs_as_a_user_who_may_not_load_the_library(
    tmp_path: Path,
    server_url: str,
    app_url: str,
    client: dtaskq.Client,
    prefix: str,
    namespace: str,
    servers: list[redis.Redis],
) -> None:
    project = make_project(tmp_path)
    assert run(project, "library", "load", "--url", server_url).returncode == 0
    for server in servers:
        server.acl_log_reset()
    log = project / "worker.log"
    proc = start_worker(
        project,
        log,
        *("--url", app_url, "--prefix", prefix, "--namespace", namespace),
        *("--node-id", "n1", "--provider", "mypkg.merge:factory"),
    )
    try:
        client.add_task(namespace, "range", unit_count=5)
        client.add_task(namespace, "named", units=["a", "b"])
        for task_id in ("range", "named"):
            task = until(
                lambda t=task_id: (
                    (x := client.get_task(namespace, t)) and x.status.is_terminal and x
                ),
                what=lambda: f"the task to end; worker log:\n{log.read_text()}",
            )
            assert task.status is TaskStatus.FINISHED
    finally:
        stop(proc, log)
    assert refusals(servers, user_of(app_url)) == [], log.read_text()
