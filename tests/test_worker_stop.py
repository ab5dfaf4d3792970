"""A worker that stops past its grace period completes what its threads finished but had not
reported yet (they report with their next claim), and gives back only the rest."""

from __future__ import annotations

import threading

from waiting import until

import dtaskq
from dtaskq import Task, TaskStatus, UnitStatus
from dtaskq.worker import LocalTasksInMemory, Recorder, UnitContext, UnitRunner, Worker


class SecondUnitHangs(LocalTasksInMemory):
    """Claims two units at a time on one thread: the first ends at once, the second runs until
    told to stop."""

    def __init__(self) -> None:
        super().__init__()
        self.second_began = threading.Event()

    def start_task(self, task: Task, recorder: Recorder) -> UnitRunner:
        self.remember(task)
        return UnitRunner(task, recorder, self.work, concurrency=1, batch=2)

    def work(self, ctx: UnitContext) -> None:
        if ctx.unit_number == 1:
            self.second_began.set()
            until(lambda: ctx.terminated, timeout=30, what="the stop")


def test_units_done_but_unreported_are_completed_at_shutdown(
    client: dtaskq.Client, namespace: str
) -> None:
    ref = client.add_task(namespace, "t", unit_count=2)
    provider = SecondUnitHangs()
    worker = Worker(client, {namespace: provider}, node_id="n1", concurrency=1)
    worker.start()
    try:
        assert provider.second_began.wait(20)
        # Unit 0 is done, and waits to be reported with the thread's next claim.
        assert client.get_task(namespace, "t").counts[UnitStatus.COMPLETED] == 0  # type: ignore[union-attr]
    finally:
        worker.stop(grace_ms=100)
    task = client.get_task(namespace, "t")
    assert task is not None and task.status is TaskStatus.STARTED
    assert task.counts[UnitStatus.COMPLETED] == 1
    assert task.units["1"].status is UnitStatus.PENDING  # given back, not completed
    assert client.claim_first(ref, "n2") == 1
