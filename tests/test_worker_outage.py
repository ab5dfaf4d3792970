"""An in-process worker whose connection to the server is cut and restored: no thread of it
may die of the outage (scheduler, heartbeats, sweeper, unit threads)."""

from __future__ import annotations

import logging
import threading

import pytest
from netcut import Proxy
from waiting import until

import dtaskq
from dtaskq import Task, TaskStatus
from dtaskq.worker import LocalTasksInMemory, Recorder, UnitContext, UnitRunner, Worker


class Blocking(LocalTasksInMemory):
    """Runs each unit until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__()
        self.began = threading.Event()
        self.finish = threading.Event()

    def start_task(self, task: Task, recorder: Recorder) -> UnitRunner:
        self.remember(task)
        return UnitRunner(task, recorder, self.work)

    def work(self, ctx: UnitContext) -> None:
        self.began.set()
        self.finish.wait(30)


def logged(caplog: pytest.LogCaptureFixture, *starts: str) -> bool:
    """True once a record starting with each of ``starts`` was logged."""
    messages = [r.getMessage() for r in caplog.records]
    return all(any(m.startswith(start) for m in messages) for start in starts)


def test_a_worker_rides_out_an_outage(
    client: dtaskq.Client,
    server_url: str,
    namespace: str,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="dtaskq")
    provider = Blocking()
    with (
        Proxy(server_url) as proxy,
        dtaskq.Client.from_url(proxy.url, prefix=prefix, retry_attempts=1) as cut_off,
    ):
        # Renewals every half second and frequent sweeps, so that each loop meets the outage.
        worker = Worker(
            cut_off, {namespace: provider}, node_id="n1", lease_ms=1500, sweep_interval_s=0.2
        )
        worker.start()
        try:
            client.add_task(namespace, "t", units=["u1"], lease_ms=30_000)
            assert provider.began.wait(20)
            proxy.cut()
            until(
                lambda: logged(
                    caplog, "heartbeat failed", "scheduling pass failed", "sweep failed"
                ),
                what="every loop to meet the outage",
            )
            proxy.restore()
            provider.finish.set()
            task = until(
                lambda: (t := client.get_task(namespace, "t")) and t.status.is_terminal and t,
                what="the task to end",
            )
            assert task.status is TaskStatus.FINISHED
            alive = {t.name for t in threading.enumerate()}
            assert {"dtaskq-heartbeats", "dtaskq-sweeper", f"dtaskq-{namespace}"} <= alive
        finally:
            provider.finish.set()
            worker.stop(grace_ms=0)
