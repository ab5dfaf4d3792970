"""The ``dtaskq`` command line and ``dtaskq worker``, run in subprocesses as the ``dtaskq``
script runs (tests/cli_procs.py); ``dtaskq library`` has tests/test_cli_library.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_procs import (
    closed_port_url,
    make_project,
    one_line,
    run,
    start_worker,
    stop,
    with_user,
)
from netcut import Proxy
from waiting import until

import dtaskq
from dtaskq import TaskStatus
from dtaskq.server import ENV_URL


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory holding the provider module ``mypkg.merge``, for commands run in it."""
    return make_project(tmp_path)


WORKER = ["worker", "--namespace", "ns", "--provider", "mypkg.merge:factory"]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--url", "localhost:6379"], "argument --url: not a server URL: 'localhost:6379'"),
        (["--url", "redis://h:1?cluster=2"], "argument --url: cluster= takes 1 or 0"),
        (["--concurrency", "0"], "argument --concurrency: must be at least 1, got 0"),
        (["--concurrency", "many"], "argument --concurrency: not an integer: 'many'"),
        (["--lease-ms", "0"], "argument --lease-ms: must be at least 1"),
        (["--grace-ms", "-1"], "argument --grace-ms: must be at least 0"),
        (["--connect-timeout", "-1"], "argument --connect-timeout: must be at least 0"),
        (["--namespace", "bad name"], "argument --namespace: namespace must be 1-64"),
        (["--prefix", "a{b}"], "argument --prefix: namespace must be 1-64"),
        (["--node-id", "a b"], "argument --node-id: node id must be 1-200 bytes"),
        (["--log-level", "loud"], "argument --log-level: invalid choice: 'LOUD'"),
        (["--provider", "no_such_module:factory"], "no module named 'no_such_module'"),
        (["--provider", "os.no_such_module:f"], "no module named 'os.no_such_module'"),
        (["--provider", "os:sep"], "--provider os:sep: os has no callable 'sep'"),
        (["--provider", "os"], "--provider must be MODULE:FACTORY, got 'os'"),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, list) else "",
)
def test_a_bad_option_is_one_line_and_status_2(
    project: Path, options: list[str], says: str
) -> None:
    result = run(project, *WORKER, "--url", closed_port_url(), *options)
    assert result.returncode == 2, result.stderr
    line = one_line(result)
    assert line.startswith("dtaskq worker: ") and says in line, line


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--queue", "emails"], "--queue and --handlers go together"),
        (["--handlers", "mypkg.jobs"], "--queue and --handlers go together"),
        (["--namespace", "ns"], "--namespace and --provider go together"),
        ([], "serve --namespace with a --provider, or --queue with --handlers"),
        (["--queue", "a b", "--handlers", "mypkg.jobs"], "argument --queue: namespace must"),
        (["--queue", "q", "--handlers", "no_such_module"], "no module named 'no_such_module'"),
        (["--queue", "q", "--handlers", "mypkg.merge"], "no handlers registered there"),
        (["--queue", "q", "--handlers", "mypkg.jobs:nothing_here"], "is not a Registry"),
        (["--queue", "q", "--handlers", "mypkg.jobs:"], "must be MODULE or MODULE:REGISTRY"),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, list) else "",
)
def test_a_bad_job_option_is_one_line_and_status_2(
    project: Path, options: list[str], says: str
) -> None:
    result = run(project, "worker", "--url", closed_port_url(), *options)
    assert result.returncode == 2, result.stderr
    line = one_line(result)
    assert line.startswith("dtaskq worker: ") and says in line, line


def test_a_job_worker_serves_the_handlers_of_a_module(
    server_url: str, project: Path, tmp_path: Path, prefix: str
) -> None:
    log = tmp_path / "worker.log"
    worker = start_worker(
        project, log, "--url", server_url, "--prefix", prefix, "--queue", "emails",
        "--handlers", "mypkg.jobs", "--node-id", "n1",
    )  # fmt: skip
    try:
        with dtaskq.Client.from_url(server_url, prefix=prefix) as client:
            job = client.enqueue("emails", "send_welcome", args=(42,))
            assert job.result(timeout=30) == "welcome 42"
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, log.read_text()


def test_a_missing_url_is_one_line_and_status_2(project: Path) -> None:
    result = run(project, *WORKER)
    assert result.returncode == 2, result.stderr
    assert one_line(result) == f"dtaskq worker: needs --url or ${ENV_URL}"


def test_a_bad_url_in_the_environment_is_one_line_and_status_2(project: Path) -> None:
    result = run(project, *WORKER, env={ENV_URL: "localhost:6379"})
    assert result.returncode == 2, result.stderr
    line = one_line(result)
    assert line.startswith(f"dtaskq worker: ${ENV_URL}: not a server URL: "), line


def test_a_bad_command_is_one_line_and_status_2(project: Path) -> None:
    result = run(project, "work")
    assert result.returncode == 2, result.stderr
    assert "invalid choice: 'work'" in one_line(result)


@pytest.mark.parametrize("cluster", [False, True], ids=["server", "cluster"])
def test_a_worker_gives_up_on_an_unreachable_server_at_start_up(
    project: Path, cluster: bool
) -> None:
    url = closed_port_url(cluster)
    result = run(project, *WORKER, "--url", url, "--connect-timeout", "1")
    assert result.returncode == 1, result.stderr
    line = one_line(result)
    assert line.startswith("dtaskq worker: cannot reach the server: "), line
    assert "tried for 1 s; see --connect-timeout" in line


def test_a_worker_refused_by_the_server_exits_at_once(server_url: str, project: Path) -> None:
    url = with_user(server_url, "nobody", "wrong")
    result = run(project, *WORKER, "--url", url, "--connect-timeout", "60")
    assert result.returncode == 2, result.stderr
    line = one_line(result)
    assert line.startswith("dtaskq worker: the server refused the connection: "), line


def test_the_command_line_loads_neither_the_worker_nor_the_demo_until_it_runs() -> None:
    code = (
        "import contextlib, json, sys\n"
        "import dtaskq.cli\n"
        "with contextlib.redirect_stdout(None), contextlib.suppress(SystemExit):\n"
        "    dtaskq.cli.main(['--help'])\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(result.stdout)
    heavy = ("rich", "dtaskq.worker", "dtaskq.demo", "dtaskq.cli.connect")
    assert [m for m in loaded for h in heavy if m == h or m.startswith(f"{h}.")] == []


def test_a_worker_waits_at_start_up_for_a_server_that_comes_back(
    server_url: str, prefix: str, project: Path
) -> None:
    log = project / "worker.log"
    with Proxy(server_url) as proxy:
        proxy.cut()
        proc = start_worker(
            project,
            log,
            *("--url", proxy.url, "--prefix", prefix, "--node-id", "n1"),
            *WORKER[1:],
            *("--connect-timeout", "60"),
        )
        try:
            until(lambda: proxy.accepted >= 2, what="two refused attempts to connect")
            assert proc.poll() is None and "worker started" not in log.read_text()
            proxy.restore()
            until(lambda: "worker started" in log.read_text(), what="the worker to start")
        finally:
            stop(proc, log)


def test_a_provider_module_in_the_current_directory_is_found(
    client: dtaskq.Client, server_url: str, prefix: str, namespace: str, project: Path
) -> None:
    log = project / "worker.log"
    proc = start_worker(
        project,
        log,
        *("--url", server_url, "--prefix", prefix, "--namespace", namespace),
        *("--node-id", "n1", "--provider", "mypkg.merge:factory"),
    )
    try:
        client.add_task(namespace, "t", unit_count=3)
        task = until(
            lambda: (t := client.get_task(namespace, "t")) and t.status.is_terminal and t,
            what=lambda: f"the task to end; worker log:\n{log.read_text()}",
        )
        assert task.status is TaskStatus.FINISHED
    finally:
        stop(proc, log)
