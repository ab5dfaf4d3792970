"""The provider of ``bench/runtime.py``: units that do nothing, counted per node.

``dtaskq worker --provider noop_provider:factory`` loads it with ``bench/`` on PYTHONPATH. Its
settings come from the environment: ``$DTASKQ_REDIS_URL`` (the server), ``$NOOP_NODE`` (the
node id; providers are not told it), ``$NOOP_KEYS`` (a key prefix for its records) and
``$NOOP_THREADS`` (unit threads per task, default 4) and ``$NOOP_BATCH`` (range units each
thread claims per call, default 1).

So that counting costs the units next to nothing, each node counts in memory and a thread
writes the counts every :data:`FLUSH_S` seconds: per task, the hash ``<keys>:stats:<task>:<node>``
holds ``units``, ``first`` and ``last`` (unix times of the first unit begun and the last unit
finished). A SIGKILLed node loses at most its last interval of counts. Only units run again
after a lease ran out (token above 1, which is rare) cost a round trip each: their begin
(first time only) and end go to the hashes ``<keys>:retaken:<task>`` and ``<keys>:redone:<task>``
as ``"<node> <token> <unix time>"`` per unit.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import redis

from dtaskq import Task
from dtaskq.server import ENV_URL
from dtaskq.worker import LocalTasksInMemory, Recorder, UnitContext, UnitRunner

FLUSH_S = 0.1


@dataclass
class _Count:
    units: int = 0
    first: float = 0.0
    last: float = 0.0
    flushed: int = -1


class NoopProvider(LocalTasksInMemory):
    """Runs every range unit it can claim with a function that does nothing."""

    def __init__(self, r: redis.Redis, node: str, keys: str, threads: int, batch: int) -> None:
        self.redis = r
        self.node = node
        self.keys = keys
        self.threads = threads
        self.batch = batch
        self._lock = threading.Lock()
        self._counts: dict[str, _Count] = {}
        super().__init__()
        threading.Thread(target=self._flush_forever, name="noop-flush", daemon=True).start()

    def start_task(self, task: Task, recorder: Recorder) -> UnitRunner:
        """Runs the task's units on ``threads`` threads."""
        self.remember(task)
        return UnitRunner(task, recorder, self._run, concurrency=self.threads, batch=self.batch)

    def _run(self, ctx: UnitContext) -> None:
        task_id = ctx.task.task_id
        begun = time.time()
        if ctx.token > 1:
            self._note("retaken", ctx, begun, first_only=True)
        with self._lock:
            count = self._counts.setdefault(task_id, _Count(first=begun))
            count.units += 1
            count.last = time.time()
        if ctx.token > 1:
            self._note("redone", ctx, time.time(), first_only=False)

    def _note(self, what: str, ctx: UnitContext, at: float, *, first_only: bool) -> None:
        key = f"{self.keys}:{what}:{ctx.task.task_id}"
        entry = f"{self.node} {ctx.token} {at:.6f}"
        if first_only:
            self.redis.hsetnx(key, ctx.unit, entry)
        else:
            self.redis.hset(key, ctx.unit, entry)

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_S)
            with self._lock:
                due = {
                    t: (c.units, c.first, c.last)
                    for t, c in self._counts.items()
                    if c.units != c.flushed
                }
                for task_id, (units, _, _) in due.items():
                    self._counts[task_id].flushed = units
            try:
                for task_id, (units, first, last) in due.items():
                    key = f"{self.keys}:stats:{task_id}:{self.node}"
                    self.redis.hset(key, mapping={"units": units, "first": first, "last": last})
            except redis.RedisError:
                with self._lock:  # written again at the next flush
                    for task_id in due:
                        self._counts[task_id].flushed = -1


def factory(namespace: str) -> NoopProvider:
    """The ``--provider noop_provider:factory`` of the benchmark's workers."""
    return NoopProvider(
        redis.Redis.from_url(os.environ[ENV_URL]),
        os.environ["NOOP_NODE"],
        os.environ["NOOP_KEYS"],
        int(os.environ.get("NOOP_THREADS", "4")),
        int(os.environ.get("NOOP_BATCH", "1")),
    )
