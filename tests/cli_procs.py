"""Running the ``dtaskq`` command in subprocesses, as the ``dtaskq`` script runs: with
``python -P``, so that the current directory is not on ``sys.path`` unless dtaskq puts it
there; and a provider module for the workers it starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from dtaskq.server import ENV_URL

DTASKQ = [sys.executable, "-P", "-m", "dtaskq"]
ENV = {k: v for k, v in os.environ.items() if k != ENV_URL}
"""The environment of the commands: without ``$DTASKQ_REDIS_URL``, so each names its server."""

PROVIDER = """\
from dtaskq.worker import LocalTasksInMemory, UnitRunner


class Merger(LocalTasksInMemory):
    def start_task(self, task, recorder):
        self.remember(task)
        return UnitRunner(task, recorder, lambda ctx: None)


def factory(namespace):
    return Merger()
"""


HANDLERS = """\
import dtaskq

jobs = dtaskq.Registry("emails")


@jobs.handler("send_welcome")
def send_welcome(user_id):
    return f"welcome {user_id}"

nothing_here = 42
"""


def make_project(directory: Path) -> Path:
    """Writes the provider module ``mypkg.merge`` (factory ``mypkg.merge:factory``) and the
    handlers module ``mypkg.jobs`` (registry ``mypkg.jobs:jobs``) into ``directory``, for
    commands run in it; returns ``directory``."""
    (directory / "mypkg").mkdir()
    (directory / "mypkg" / "__init__.py").write_text("")
    (directory / "mypkg" / "merge.py").write_text(PROVIDER)
    (directory / "mypkg" / "jobs.py").write_text(HANDLERS)
    return directory


def closed_port_url(cluster: bool = False) -> str:
    """A URL on which nothing listens (a cluster's, with ``cluster``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0" + ("?cluster=1" if cluster else "")


def with_user(url: str, user: str, password: str) -> str:
    """``url``, of a server it names without credentials, as ``user``."""
    return url.replace("://", f"://{user}:{password}@", 1)


def run(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs ``dtaskq`` in ``cwd`` to its end (``env`` adds variables)."""
    return subprocess.run(
        [*DTASKQ, *args],
        env={**ENV, **(env or {})},
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
