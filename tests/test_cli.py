"""The ``dtaskq`` command line, run in subprocesses as the ``dtaskq`` script runs: with
``python -P``, so that the current directory is not on ``sys.path`` unless dtaskq puts it
there."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from netcut import Proxy
from waiting import until

import dtaskq
from dtaskq import TaskStatus
from dtaskq.server import ENV_URL

DTASKQ = [sys.executable, "-P", "-m", "dtaskq"]
ENV = {k: v for k, v in os.environ.items() if k != ENV_URL}


def closed_port_url() -> str:
    """A URL on which nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


PROVIDER = """\
from dtaskq.worker import LocalTasksInMemory, UnitRunner


class Merger(LocalTasksInMemory):
    def start_task(self, task, recorder):
        self.remember(task)
        return UnitRunner(task, recorder, lambda ctx: None)


def factory(namespace):
    return Merger()
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory holding the provider module ``mypkg.merge``, for commands run in it."""
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "merge.py").write_text(PROVIDER)
    return tmp_path


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs ``dtaskq`` in ``cwd`` to its end."""
    return subprocess.run(
        [*DTASKQ, *args],
        env=ENV,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The only line the command wrote, to stderr."""
    assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


WORKER = ["worker", "--namespace", "ns", "--provider", "mypkg.merge:factory"]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--url", "localhost:6379"], "argument --url: Redis URL must specify"),
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


def test_a_missing_url_is_one_line_and_status_2(project: Path) -> None:
    result = run(project, *WORKER)
    assert result.returncode == 2, result.stderr
    assert one_line(result) == f"dtaskq worker: needs --url or ${ENV_URL}"


def test_a_bad_command_is_one_line_and_status_2(project: Path) -> None:
    result = run(project, "work")
    assert result.returncode == 2, result.stderr
    assert "invalid choice: 'work'" in one_line(result)


def test_a_worker_gives_up_on_an_unreachable_server_at_start_up(project: Path) -> None:
    result = run(project, *WORKER, "--url", closed_port_url(), "--connect-timeout", "1")
    assert result.returncode == 1, result.stderr
    line = one_line(result)
    assert line.startswith("dtaskq worker: cannot reach the server: "), line
    assert "tried for 1 s; see --connect-timeout" in line


def start_worker(cwd: Path, log: Path, *options: str) -> subprocess.Popen[bytes]:
    """Starts ``dtaskq worker`` in ``cwd``, its output going to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [*DTASKQ, "worker", "--log-level", "INFO", *options],
            env=ENV,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Stops a worker with SIGTERM, which must end it with status 0; kills it otherwise."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


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
