"""The provider that ``dtaskq demo`` runs in its worker processes.

``dtaskq worker --provider dtaskq.demo_provider:factory`` loads it; it lives in the package so
that an installed dtaskq can run the demo anywhere. Its settings come from the environment,
which the demo sets and the worker passes on:

- ``$DTASKQ_REDIS_URL``: the server (also where the demo keeps its side effects);
- ``$DTASKQ_DEMO_NODE``: the node id (callbacks are not told it);
- ``$DTASKQ_DEMO_PREFIX``: the key prefix of the side effects (see :class:`DemoKeys`);
- ``$DTASKQ_DEMO_SHARDS``: comma-separated ids of the named units (shards) whose data this
  node holds; it claims only those.

Range units (task :data:`MERGE_TASK`) sleep for :data:`MERGE_UNIT_MS`; shards (task
:data:`REINDEX_TASK`) work for :data:`SHARD_UNIT_MS` in a few progress steps. A finished unit
writes its node into a hash field named after the unit: a unit run again after a crash
overwrites its entry, so the hash counts each unit once whoever ran it. A unit that begins
again after its lease ran out (token 2 or more) records when and where, the first time only.
Group, swap and task callbacks append a JSON line to a log list.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import redis

from .models import Task
from .server import ENV_URL
from .worker import LocalTasksInMemory, Recorder, UnitContext, UnitRunner

NAMESPACE = "demo"
MERGE_TASK = "merge-files"
"""The range task: one unit per file."""
MERGE_UNITS = 600
MERGE_UNIT_MS = 25
REINDEX_TASK = "reindex-tenants"
"""The named-unit task: two tenants' shards, a group per tenant, a prepare barrier."""
TENANTS = {
    "tenant-a": ("a-1", "a-2", "a-3", "a-4"),
    "tenant-b": ("b-1", "b-2", "b-3", "b-4"),
}
SHARD_UNIT_MS = 800
SHARD_STEPS = 4
UNIT_THREADS = 2
"""Threads each worker runs per task (the worker's --concurrency caps the total)."""

PREFIX_ENV = "DTASKQ_DEMO_PREFIX"
SHARDS_ENV = "DTASKQ_DEMO_SHARDS"
NODE_ENV = "DTASKQ_DEMO_NODE"


@dataclass(frozen=True)
class DemoKeys:
    """Where the demo's side effects live, under the demo's key prefix."""

    prefix: str

    def done(self, task_id: str) -> str:
        """Hash: unit id -> the node whose run of it finished last."""
        return f"{self.prefix}:demo:done:{task_id}"

    def retaken(self, task_id: str) -> str:
        """Hash: unit id -> ``"<node> <token> <unix time>"`` of its first run with a token
        above 1, i.e. after another node's lease on it ran out."""
        return f"{self.prefix}:demo:retaken:{task_id}"

    def log(self) -> str:
        """List of JSON callback records: ``{"node", "what", "task", ...}``."""
        return f"{self.prefix}:demo:log"


class DemoProvider(LocalTasksInMemory):
    """Runs the demo's two tasks on one node and records what it did (module docstring)."""

    def __init__(
        self, namespace: str, node: str, r: redis.Redis, keys: DemoKeys, shards: set[str]
    ) -> None:
        self.namespace = namespace
        self.node = node
        self.redis = r
        self.keys = keys
        self.shards = shards
        super().__init__()

    def start_task(self, task: Task, recorder: Recorder) -> UnitRunner:
        """Runs range units of any task, and of a named task only the shards held here."""
        self.remember(task)
        if task.unit_count is not None:
            return UnitRunner(task, recorder, self._merge, concurrency=UNIT_THREADS)
        local = [unit for unit in task.units if unit in self.shards]
        return UnitRunner(task, recorder, self._reindex, concurrency=UNIT_THREADS, units=local)

    def _begin(self, ctx: UnitContext) -> None:
        if ctx.token > 1:
            entry = f"{self.node} {ctx.token} {time.time():.6f}"
            self.redis.hsetnx(self.keys.retaken(ctx.task.task_id), ctx.unit, entry)

    def _finish(self, ctx: UnitContext) -> None:
        self.redis.hset(self.keys.done(ctx.task.task_id), ctx.unit, self.node)

    def _merge(self, ctx: UnitContext) -> None:
        self._begin(ctx)
        time.sleep(MERGE_UNIT_MS / 1000)
        self._finish(ctx)

    def _reindex(self, ctx: UnitContext) -> None:
        self._begin(ctx)
        for step in range(1, SHARD_STEPS + 1):
            time.sleep(SHARD_UNIT_MS / SHARD_STEPS / 1000)
            if ctx.terminated:
                return  # the runner leaves the unit to its next claimer
            ctx.progress(step / SHARD_STEPS)
        self._finish(ctx)

    def _record(self, what: str, task: Task, **fields: object) -> None:
        entry = {"node": self.node, "what": what, "task": task.task_id, **fields}
        self.redis.rpush(self.keys.log(), json.dumps(entry))

    def on_group_completed(self, task: Task, group: str, local_unit_ids: list[str]) -> None:
        """Records that this node's shards of ``group`` are ready to go live."""
        self._record("group completed", task, group=group)

    def on_swap_requested(self, task: Task, group: str, local_unit_ids: list[str]) -> None:
        """Records that this node made its shards of ``group`` live."""
        self._record("swapped", task, group=group)

    def on_task_completed(self, task: Task) -> None:
        """Records the task's status as this node saw it."""
        self._record("task completed", task, status=task.status.value)


def factory(namespace: str) -> DemoProvider:
    """The ``--provider dtaskq.demo_provider:factory`` of the demo's workers."""
    shards = {s for s in os.environ.get(SHARDS_ENV, "").split(",") if s}
    return DemoProvider(
        namespace,
        os.environ[NODE_ENV],
        redis.Redis.from_url(os.environ[ENV_URL]),
        DemoKeys(os.environ[PREFIX_ENV]),
        shards,
    )
