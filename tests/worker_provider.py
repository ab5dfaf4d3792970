"""A provider for tests that run real ``dtaskq worker`` processes.

Its behaviour comes from environment variables, and every side effect it has is appended, as
JSON, to the Redis list ``$DTQ_TEST_LOG`` on the server ``$DTQ_TEST_URL``, so that tests can
check what each node did and when:

- ``DTQ_TEST_UNIT_MS``: how long a unit works (default 50), polling ``ctx.terminated``;
  ``DTQ_TEST_WORK``: ``poll`` (default), ``progress`` (polls too, reporting its progress as
  it goes), ``sleep`` (one blocking ``time.sleep``) or ``spin`` (pure-Python CPU loop), the
  last two ignoring termination;
- ``DTQ_TEST_UNITS``: claim only named units whose id starts with this prefix (local shards);
- ``DTQ_TEST_FAIL``: a unit id whose run raises ``FatalError``; ``DTQ_TEST_FLAKY``: a unit id
  whose first attempt raises ``RuntimeError``;
- ``DTQ_TEST_CALLBACKS_DONE``: ``0`` makes ``local_callbacks_done`` answer False;
- ``DTQ_TEST_BROKEN_START``: a task id whose ``start_task`` raises;
  ``DTQ_TEST_BROKEN_SWAP``: ``1`` makes ``on_swap_requested`` raise.

Local state is a Redis set per node standing in for the node's disk.
"""

from __future__ import annotations

import json
import os
import time

from support import raw_client

from dtaskq import Task
from dtaskq.worker import FatalError, Recorder, TaskDescriptor, UnitContext, UnitRunner


class TestProvider:
    """Logs every callback and runs units as the environment says."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.redis = raw_client(os.environ["DTQ_TEST_URL"])
        self.log_key = os.environ["DTQ_TEST_LOG"]
        self.node = os.environ["DTQ_TEST_NODE"]
        self.unit_s = int(os.environ.get("DTQ_TEST_UNIT_MS", "50")) / 1000
        self.work = os.environ.get("DTQ_TEST_WORK", "poll")
        self.prefix = os.environ.get("DTQ_TEST_UNITS")
        self.fail = os.environ.get("DTQ_TEST_FAIL")
        self.flaky = os.environ.get("DTQ_TEST_FLAKY")
        self.callbacks_done = os.environ.get("DTQ_TEST_CALLBACKS_DONE", "1") == "1"
        self.local_key = f"{self.log_key}:local:{self.node}"
        self.broken_start = os.environ.get("DTQ_TEST_BROKEN_START")
        self.broken_swap = os.environ.get("DTQ_TEST_BROKEN_SWAP") == "1"

    def record(self, what: str, **fields: object) -> None:
        entry = {"what": what, "node": self.node, "t": time.time(), **fields}
        self.redis.rpush(self.log_key, json.dumps(entry))

    def get_local_tasks(self) -> list[TaskDescriptor]:
        found = []
        for member in self.redis.smembers(self.local_key):
            task_id, version = member.decode().rsplit(" ", 1)
            found.append(TaskDescriptor(task_id, int(version)))
        return found

    def cleanup_task(self, desc: TaskDescriptor) -> None:
        self.redis.srem(self.local_key, f"{desc.task_id} {desc.version}")
        self.record("cleanup", task=desc.task_id, version=desc.version)

    def start_task(self, task: Task, recorder: Recorder) -> UnitRunner:
        if task.task_id == self.broken_start:
            raise RuntimeError("provider bug")
        self.redis.sadd(self.local_key, f"{task.task_id} {task.version}")
        self.record("start", task=task.task_id)
        units = None
        if self.prefix is not None and task.unit_count is None:
            units = [u for u in task.units if u.startswith(self.prefix)]
        return UnitRunner(task, recorder, self.run_unit, units=units)

    def run_unit(self, ctx: UnitContext) -> None:
        self.record("begin", task=ctx.task.task_id, unit=ctx.unit, token=ctx.token)
        if ctx.unit == self.fail:
            time.sleep(self.unit_s)
            raise FatalError("unit broke")
        if ctx.unit == self.flaky and ctx.token == 1:
            raise RuntimeError("first attempt broke")
        if self.work == "sleep":
            time.sleep(self.unit_s)
        elif self.work == "spin":
            deadline = time.monotonic() + self.unit_s
            n = 0
            while time.monotonic() < deadline:
                n += 1
        else:
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < self.unit_s:
                if self.work == "progress":
                    ctx.progress(elapsed / self.unit_s)
                if ctx.terminated:
                    self.record("terminated", task=ctx.task.task_id, unit=ctx.unit)
                    return
                time.sleep(0.01)
        ctx.progress(0.5)
        self.record("done", task=ctx.task.task_id, unit=ctx.unit, token=ctx.token)

    def on_group_completed(self, task: Task, group: str, local_unit_ids: list[str]) -> None:
        self.record("group", task=task.task_id, group=group, units=local_unit_ids)

    def on_swap_requested(self, task: Task, group: str, local_unit_ids: list[str]) -> None:
        self.record("swap", task=task.task_id, group=group, units=local_unit_ids)
        if self.broken_swap:
            raise OSError("swap target missing")

    def on_task_completed(self, task: Task) -> None:
        self.record("completed", task=task.task_id, status=task.status.value)

    def local_callbacks_done(self, task: Task, node: str) -> bool:
        self.record("asked", task=task.task_id)
        return self.callbacks_done


def factory(namespace: str) -> TestProvider:
    """The ``--provider worker_provider:factory`` of the tests."""
    return TestProvider(namespace)
