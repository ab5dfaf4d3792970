"""Real ``dtaskq worker`` processes for tests, serving with tests/worker_provider.py."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from waiting import until

from dtaskq.worker.processes import WorkerProcesses

TESTS = Path(__file__).parent


class Workers:
    """Starts worker processes on one server and key prefix, reads what their providers
    logged, and kills whatever is left at the end of a test."""

    def __init__(self, url: str, prefix: str, namespace: str, r: redis.Redis) -> None:
        self.url = url
        self.prefix = prefix
        self.namespace = namespace
        self.redis = r
        self.log_key = f"{prefix}:testlog"
        pythonpath = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
        self.procs = WorkerProcesses(
            [sys.executable, "-m", "dtaskq", "worker"],
            {"PYTHONPATH": pythonpath, "DTQ_TEST_URL": url, "DTQ_TEST_LOG": self.log_key},
        )

    def start(
        self,
        node: str,
        *,
        lease_ms: int = 30_000,
        grace_ms: int = 30_000,
        concurrency: int = 2,
        host_node_id: bool = False,
        **env: str | int,
    ) -> None:
        """Starts ``dtaskq worker`` as ``node`` (with ``host_node_id``, ``node`` only names
        the process and the worker takes the default node id); ``env`` sets DTQ_TEST_<NAME>
        variables."""
        options = [
            "--url", self.url, "--prefix", self.prefix, "--namespace", self.namespace,
            "--provider", "worker_provider:factory",
            "--concurrency", str(concurrency), "--lease-ms", str(lease_ms),
            "--grace-ms", str(grace_ms), "--log-level", "INFO",
        ]  # fmt: skip
        if not host_node_id:
            options += ["--node-id", node]
        settings = {f"DTQ_TEST_{k.upper()}": str(v) for k, v in env.items()}
        self.procs.start(node, options, {"DTQ_TEST_NODE": node, **settings})

    def start_jobs(
        self,
        node: str,
        queue: str,
        *,
        concurrency: int = 4,
        grace_ms: int = 30_000,
        handlers: str = "job_handlers",
    ) -> None:
        """Starts ``dtaskq worker`` as ``node`` serving job ``queue`` with the handlers of
        tests/job_handlers.py."""
        options = [
            "--url", self.url, "--prefix", self.prefix, "--queue", queue,
            "--handlers", handlers, "--node-id", node,
            "--concurrency", str(concurrency), "--grace-ms", str(grace_ms),
            "--log-level", "INFO",
        ]  # fmt: skip
        self.procs.start(node, options, {"DTQ_TEST_NODE": node})

    def signal(self, node: str, signum: int) -> None:
        """Sends ``signum`` to ``node``'s process."""
        self.procs.signal(node, signum)

    def wait(self, node: str, timeout: float = 20) -> tuple[int, str]:
        """Waits for ``node``'s process to exit: its exit code and its log lines."""
        return self.procs.wait(node, timeout), self.procs.log(node)

    def log(self, what: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """The providers' records, in order, optionally only of one kind and matching fields."""
        entries = [json.loads(e) for e in self.redis.lrange(self.log_key, 0, -1)]
        return [
            e
            for e in entries
            if (what is None or e["what"] == what) and all(e.get(k) == v for k, v in match.items())
        ]

    def until(
        self, condition: Callable[[], Any], timeout: float = 20, what: str | Callable[[], str] = ""
    ) -> Any:
        """Polls ``condition`` until it is truthy; fails the test after ``timeout`` seconds."""
        return until(condition, timeout, what)

    def close(self) -> None:
        """Kills every process still running."""
        self.procs.close()
