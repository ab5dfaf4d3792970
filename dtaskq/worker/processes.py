"""A harness for local worker processes: it starts, kills and stops ``dtaskq worker``
processes on this machine for the demo, the benchmarks and the tests. It is no part of the
worker runtime, which runs one process per node."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

KILL_SETTLE_S = 0.2


class WorkerProcesses:
    """Worker processes on this machine, one per node id: started, killed, stopped, and never
    left behind (:meth:`close`, or leaving the ``with`` block, kills what still runs). Each
    process's stderr (its log) goes to a file of a temporary directory that :meth:`close`
    removes. The demo and ``bench/runtime.py`` run their workers with it.

    ``command`` starts a worker without its options, such as ``[sys.executable, "-m",
    "dtaskq", "worker"]``; ``env`` is added to this process's environment for every worker.
    """

    def __init__(self, command: Sequence[str], env: Mapping[str, str]) -> None:
        self.command = list(command)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.exits: dict[str, int | None] = {}
        """Exit codes of the workers that were killed or stopped (None: still running)."""
        self._env = {**os.environ, **env}
        self._starts: dict[str, tuple[list[str], dict[str, str]]] = {}
        self._runs: Counter[str] = Counter()
        self._logs = tempfile.TemporaryDirectory(prefix="dtaskq-workers-")

    def __enter__(self) -> WorkerProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, node: str, options: Sequence[str], env: Mapping[str, str]) -> int:
        """Starts ``node``'s worker with ``options`` and ``env`` of its own; returns its pid."""
        self._starts[node] = (list(options), dict(env))
        self._runs[node] += 1
        with open(self._log(node), "ab") as log:
            proc = subprocess.Popen(
                [*self.command, *options],
                env={**self._env, **env},
                stdin=subprocess.DEVNULL,
                stderr=log,
            )
        self.procs[node] = proc
        self.exits.pop(node, None)
        return proc.pid

    def restart(self, node: str) -> int:
        """Starts ``node``'s worker again, as :meth:`start` did last; returns its pid."""
        options, env = self._starts[node]
        return self.start(node, options, env)

    def wait_started(self, timeout: float, nodes: Sequence[str] | None = None) -> None:
        """Waits until every worker (or those of ``nodes``) has logged that it started; raises
        RuntimeError if one exits or stays silent for ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for node in self.procs if nodes is None else nodes:
            proc = self.procs[node]
            # A restarted worker logs to the same file: count its starts.
            while (
                self._log(node).read_text(errors="replace").count("worker started")
                < self._runs[node]
            ):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker {node} did not start:\n{self.log_tail(node)}")
                time.sleep(0.02)

    def kill(self, node: str, settle: float = KILL_SETTLE_S) -> float:
        """SIGKILLs ``node``'s worker and reaps it; returns the unix time of the signal.

        Then waits ``settle`` seconds: what the worker had written to its sockets still reaches
        the server after its death (a unit completed posthumously), so the server shows what
        the dead worker left only a moment later."""
        proc = self.procs[node]
        proc.send_signal(signal.SIGKILL)
        at = time.time()
        self.exits[node] = proc.wait()
        time.sleep(settle)
        return at

    def stop(self, timeout: float) -> None:
        """SIGTERMs the live workers and waits up to ``timeout`` seconds for them (each lets
        its units finish, or releases them)."""
        alive = {n: p for n, p in self.procs.items() if p.poll() is None}
        for proc in alive.values():
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node, proc in alive.items():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.exits[node] = proc.wait(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        """Kills whatever still runs and removes the logs."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self._logs.cleanup()

    def signal(self, node: str, signum: int) -> None:
        """Sends ``signum`` to ``node``'s worker."""
        self.procs[node].send_signal(signum)

    def wait(self, node: str, timeout: float) -> int:
        """Waits up to ``timeout`` seconds for ``node``'s worker to exit; its exit code."""
        self.exits[node] = code = self.procs[node].wait(timeout)
        return code

    def log(self, node: str) -> str:
        """Everything ``node``'s workers have logged, restarts included."""
        return self._log(node).read_text(errors="replace")

    def log_tail(self, node: str, lines: int = 15) -> str:
        """The end of ``node``'s log."""
        return "\n".join(self.log(node).splitlines()[-lines:])

    def _log(self, node: str) -> Path:
        return Path(self._logs.name) / f"{node}.log"
