"""No starvation: under a flood of high-priority jobs a low-priority job still starts, and only
jobs enqueued before its own enqueue time plus the aging bound (docs/jobs.md, rule J3) start
before it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from waiting import until

import dtaskq
from dtaskq import JobSpec, JobStatus, Registry

AGING_MS = 200
HIGH = 5


@pytest.fixture
def worker(client: dtaskq.Client, namespace: str) -> Iterator[dtaskq.Worker]:
    jobs = Registry(namespace)

    @jobs.handler("work")
    def work() -> None:
        time.sleep(0.005)

    running = dtaskq.Worker(client, handlers=jobs, node_id="n1", concurrency=2)
    running.start()
    yield running
    running.stop(grace_ms=0)


def test_a_low_priority_job_starts_within_the_aging_bound_under_a_flood(
    client: dtaskq.Client, worker: dtaskq.Worker, namespace: str
) -> None:
    client.configure_queue(namespace, aging_ms=AGING_MS)
    flood: list[dtaskq.Job] = []
    stop = threading.Event()

    def produce() -> None:
        # About twice what the worker runs: the high lane never empties.
        while not stop.is_set():
            flood.extend(client.enqueue_many(namespace, [JobSpec("work", priority=HIGH)] * 20))
            time.sleep(0.03)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        until(lambda: len(flood) >= 100, what="a backlog of high-priority jobs")
        low = client.enqueue(namespace, "work")
        low.result(timeout=60)
    finally:
        stop.set()
        producer.join()
    mine = client.get_job(namespace, low.id)
    assert mine is not None and mine.token is not None
    # Each priority step is worth AGING_MS / 2 per lane rank (2 ranks per priority).
    bound = mine.enqueued_at + timedelta(milliseconds=HIGH * AGING_MS)
    overtaken = later = 0
    for job in flood:
        info = client.get_job(namespace, job.id)
        assert info is not None
        done = info.status is JobStatus.COMPLETED and info.token is not None
        if done and info.token < mine.token:  # type: ignore[operator]
            assert info.enqueued_at <= bound, "only jobs within the bound go first"
            overtaken += 1
        if info.enqueued_at > bound and (info.token is None or info.token > mine.token):
            later += 1
    assert overtaken > 0, "the flood went first for a while"
    assert later > 0, "the low job went ahead of high-priority jobs enqueued past its bound"
