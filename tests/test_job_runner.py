"""The job runner in a worker of this process: handlers with and without a context, sync and
async, timeouts, cancellation, retries, and jobs that cannot run."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from waiting import until

import dtaskq
from dtaskq import Fail, JobContext, JobStatus, Registry, Retry


class Seen:
    """What handlers saw, for the test to read."""

    def __init__(self) -> None:
        self.threads: set[int] = set()
        self.loops: set[int] = set()
        self.cancelled = threading.Event()
        self.started = threading.Event()
        self.release = threading.Event()
        self.fixed = threading.Event()


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def registry(namespace: str, seen: Seen) -> Registry:
    jobs = Registry(namespace)

    @jobs.handler("add")
    def add(a: int, b: int = 0) -> int:
        seen.threads.add(threading.get_ident())
        return a + b

    @jobs.handler("context")
    def context(ctx: JobContext, tag: str) -> list[Any]:
        return [ctx.queue, ctx.job_id, ctx.attempt, ctx.max_attempts, tag]

    @jobs.handler("aadd")
    async def aadd(a: int, b: int) -> int:
        seen.loops.add(id(asyncio.get_running_loop()))
        await asyncio.sleep(0)
        return a + b

    @jobs.handler("polls")
    def polls(ctx: JobContext) -> str:
        seen.started.set()
        until(lambda: ctx.cancelled, timeout=30, what="the cancellation")
        seen.cancelled.set()
        return "saw it"

    @jobs.handler("asleep")
    async def asleep(seconds: float) -> str:
        seen.started.set()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            seen.cancelled.set()
            raise
        return "slept"

    @jobs.handler("blocks")
    def blocks() -> str:
        seen.started.set()
        seen.release.wait(30)
        return "too late"

    @jobs.handler("retries")
    def retries(ctx: JobContext) -> int:
        if ctx.attempt < 3:
            raise Retry(delay=0.01)
        return ctx.attempt

    @jobs.handler("fails")
    def fails() -> None:
        raise Fail("not today")

    @jobs.handler("crashes")
    def crashes() -> None:
        raise RuntimeError("boom")

    @jobs.handler("until_fixed")
    def until_fixed() -> str:
        if not seen.fixed.is_set():
            raise RuntimeError("not fixed yet")
        return "fixed"

    @jobs.handler("unpackable")
    def unpackable() -> object:
        return object()

    return jobs


@pytest.fixture
def worker(client: dtaskq.Client, registry: Registry, seen: Seen) -> Iterator[dtaskq.Worker]:
    running = dtaskq.Worker(client, handlers=registry, node_id="n1", concurrency=4)
    running.start()
    yield running
    seen.release.set()
    running.stop(grace_ms=0)


def test_a_handler_runs_with_its_arguments_and_returns_its_result(
    client: dtaskq.Client, registry: Registry, worker: dtaskq.Worker, namespace: str
) -> None:
    add = registry.get("add")
    assert add is not None
    assert client.enqueue(namespace, "add", args=(2,), kwargs={"b": 3}).result(timeout=20) == 5
    assert add.enqueue(client, 4, b=5).result(timeout=20) == 9
    job = client.enqueue(namespace, "context", args=("t",), max_attempts=2)
    assert job.result(timeout=20) == [namespace, job.id, 1, 2, "t"]
    info = client.get_job(namespace, job.id)
    assert info is not None and info.node == "n1" and info.status is JobStatus.COMPLETED


def test_async_handlers_share_one_event_loop(
    client: dtaskq.Client, worker: dtaskq.Worker, namespace: str, seen: Seen
) -> None:
    jobs = client.enqueue_many(namespace, [dtaskq.JobSpec("aadd", (i, 1)) for i in range(20)])
    assert [job.result(timeout=20) for job in jobs] == [i + 1 for i in range(20)]
    assert len(seen.loops) == 1


def test_jobs_that_cannot_run_fail_for_good_and_the_worker_goes_on(
    client: dtaskq.Client, worker: dtaskq.Worker, namespace: str
) -> None:
    cases = {
        "nobody": "UnknownHandler: no handler named nobody",
        "add": "InvalidArgument: bad arguments for handler add",
        "unpackable": "BadResult: the handler's return value cannot be encoded",
        "fails": "not today",
    }
    for handler, error in cases.items():
        job = client.enqueue(namespace, handler, max_attempts=3)
        with pytest.raises(dtaskq.JobFailed) as failed:
            job.result(timeout=20)
        assert failed.value.error.startswith(error)
        assert client.get_job(namespace, job.id).failures == 1  # type: ignore[union-attr]
    assert {dead.handler for dead in client.dead_jobs(namespace)} == set(cases)
    assert client.enqueue(namespace, "add", args=(1, 1)).result(timeout=20) == 2


def test_retry_and_errors_use_the_attempts_then_the_dead_letter_set(
    client: dtaskq.Client, worker: dtaskq.Worker, namespace: str
) -> None:
    assert client.enqueue(namespace, "retries", max_attempts=3).result(timeout=20) == 3
    job = client.enqueue(namespace, "crashes", max_attempts=2, backoff=0.01)
    with pytest.raises(dtaskq.JobFailed, match="RuntimeError: boom"):
        job.result(timeout=20)
    assert [dead.id for dead in client.dead_jobs(namespace)] == [job.id]
    assert client.get_job(namespace, job.id).failures == 2  # type: ignore[union-attr]


def test_a_sync_handler_sees_its_job_cancelled(
    client: dtaskq.Client, worker: dtaskq.Worker, namespace: str, seen: Seen
) -> None:
    job = client.enqueue(namespace, "polls")
    assert seen.started.wait(20)
    assert job.cancel()
    assert seen.cancelled.wait(20)
    with pytest.raises(dtaskq.JobCancelled):
        job.result(timeout=20)


def test_an_async_handler_is_cancelled_with_its_job(
    client: dtaskq.Client, worker: dtaskq.Worker, namespace: str, seen: Seen
) -> None:
    job = client.enqueue(namespace, "asleep", args=(60,))
    assert seen.started.wait(20)
    job.cancel()
    assert seen.cancelled.wait(20)
    until(lambda: worker.jobs is not None and worker.jobs.running == 0, what="a free slot")


def test_an_async_handler_is_cancelled_at_its_timeout(
    client: dtaskq.Client, worker: dtaskq.Worker, namespace: str, seen: Seen
) -> None:
    job = client.enqueue(namespace, "asleep", args=(60,), timeout=0.5)
    with pytest.raises(dtaskq.JobFailed, match="TimeoutError"):
        job.result(timeout=20)
    assert seen.cancelled.is_set()


def test_a_sync_handler_past_its_timeout_fails_and_its_late_result_is_dropped(
    client: dtaskq.Client, worker: dtaskq.Worker, namespace: str, seen: Seen
) -> None:
    job = client.enqueue(namespace, "blocks", timeout=0.5)
    with pytest.raises(dtaskq.JobFailed, match="TimeoutError"):
        job.result(timeout=20)
    jobs = worker.jobs
    assert jobs is not None and jobs.free_slots == 3, "the thread holds its slot"
    seen.release.set()
    # The thread returns "too late" after the failure: the record keeps the failure.
    until(lambda: jobs.free_slots == 4, what="the thread to return")
    info = client.get_job(namespace, job.id)
    assert info is not None and info.status is JobStatus.FAILED and info.result is None


def test_an_exhausted_job_is_requeued_from_the_dead_letter_set_and_completes(
    client: dtaskq.Client, worker: dtaskq.Worker, namespace: str, seen: Seen
) -> None:
    job = client.enqueue(namespace, "until_fixed", max_attempts=2, backoff=0.01)
    with pytest.raises(dtaskq.JobFailed, match="not fixed yet"):
        job.result(timeout=20)
    assert [dead.id for dead in client.dead_jobs(namespace)] == [job.id]
    seen.fixed.set()
    assert client.requeue_dead(namespace, [job.id]) == 1
    assert job.result(timeout=20) == "fixed"
    assert client.dead_jobs(namespace) == []
    info = client.get_job(namespace, job.id)
    assert info is not None and info.status is JobStatus.COMPLETED and info.attempt == 1
