"""Waiting for a job's result: ``Job.result`` and ``AsyncJob.result`` block on the server until
the job ends, then answer its result or raise its outcome (docs/jobs.md, rule J9)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest
import redis
import redis.asyncio
from jobs_support import (
    QUEUE,
    awaited,
    claim_one,
    completed,
    failed,
    failed_for_good,
    info,
    part0,
    server_ms,
    settle,
)
from waiting import until

import dtaskq
from dtaskq import JobStatus
from dtaskq.job_client import wait_seconds
from dtaskq.job_models import ClaimedJob
from dtaskq.job_ops import Report

VALUES: list[Any] = [None, 0, "text", b"\x00bytes", [1, [2.5, None]], {"k": {"n": True}}]


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


def awaited_by(r: redis.Redis, client: dtaskq.Client, job_id: str) -> Callable[[], object]:
    """A condition: a caller waits for the job (await_job put it in the partition's
    ``waiting`` set)."""
    part = part0(client)
    return lambda: awaited(r, part, job_id)


def later(
    pool: ThreadPoolExecutor, condition: Callable[[], object], act: Callable[[], Any]
) -> Future[Any]:
    """Runs ``act`` on another thread once ``condition`` holds."""

    def run() -> Any:
        until(condition, what="a waiter")
        return act()

    return pool.submit(run)


@pytest.mark.parametrize("value", VALUES, ids=[type(v).__name__ for v in VALUES])
def test_result_wakes_when_the_job_completes(
    client: dtaskq.Client, r: redis.Redis, pool: ThreadPoolExecutor, value: Any
) -> None:
    job = client.enqueue(QUEUE, "h")
    claimed = claim_one(client)
    done = later(
        pool, awaited_by(r, client, job.id), lambda: settle(client, [completed(claimed, value)])
    )
    assert job.result(timeout=30) == value
    assert done.result() == [True]
    # Once ended, the result is answered at once, as often as asked.
    assert job.result(timeout=0) == value
    assert client.wait_for_job(QUEUE, job.id).result == value


def test_every_waiter_wakes(
    client: dtaskq.Client, r: redis.Redis, pool: ThreadPoolExecutor
) -> None:
    job = client.enqueue(QUEUE, "h")
    claimed = claim_one(client)
    waiters = [pool.submit(client.job(QUEUE, job.id).result, 30) for _ in range(3)]
    until(awaited_by(r, client, job.id))
    settle(client, [completed(claimed, "all")])
    assert [w.result() for w in waiters] == ["all"] * 3


def test_a_waiter_waits_through_retries(
    client: dtaskq.Client, r: redis.Redis, pool: ThreadPoolExecutor
) -> None:
    job = client.enqueue(QUEUE, "h", max_attempts=2)
    first = claim_one(client)

    def retry_then_complete() -> None:
        assert settle(client, [failed(first, "flaky")]) == [True]
        assert awaited(r, part0(client), job.id)  # a retry does not end the job
        settle(client, [completed(claim_one(client), "second try")])

    done = later(pool, awaited_by(r, client, job.id), retry_then_complete)
    assert job.result(timeout=30) == "second try"
    done.result()
    assert info(client, job.id).failures == 1
    # Its end took it out of the set and left the end marker.
    assert not awaited(r, part0(client), job.id)
    assert r.lrange(part0(client).done_key(job.id), 0, -1) == [b"1"]


@pytest.mark.parametrize(
    ("end", "error"),
    [
        (lambda c, j: settle(c, [failed_for_good(j, "bad input")]), dtaskq.JobFailed),
        (lambda c, j: settle(c, [failed(j, "last try")]), dtaskq.JobFailed),
        (lambda c, j: c.cancel_job(QUEUE, j.id), dtaskq.JobCancelled),
    ],
    ids=["fail", "attempts-out", "cancel"],
)
def test_a_waiter_learns_how_the_job_ended(
    client: dtaskq.Client,
    r: redis.Redis,
    pool: ThreadPoolExecutor,
    end: Callable[[dtaskq.Client, ClaimedJob], object],
    error: type[dtaskq.JobError],
) -> None:
    job = client.enqueue(QUEUE, "h")
    claimed = claim_one(client)
    later(pool, awaited_by(r, client, job.id), lambda: end(client, claimed))
    with pytest.raises(error) as caught:
        job.result(timeout=30)
    assert type(caught.value) is error
    assert (caught.value.queue, caught.value.job_id) == (QUEUE, job.id)
    if error is dtaskq.JobFailed:
        assert caught.value.error in ("bad input", "last try")


def test_a_waiter_learns_of_a_missed_deadline(
    client: dtaskq.Client, r: redis.Redis, pool: ThreadPoolExecutor
) -> None:
    deadline_ms = server_ms(r) + 300
    deadline = datetime.fromtimestamp(deadline_ms / 1000, UTC)
    job = client.enqueue(QUEUE, "h", deadline=deadline)
    dropped = client.enqueue(QUEUE, "h", deadline=deadline, on_deadline="drop")

    def sweep() -> int:
        until(awaited_by(r, client, dropped.id))
        until(lambda: server_ms(r) > deadline_ms)
        return client.sweep_jobs(part0(client)).expired

    dropped_waiter = pool.submit(dropped.result, 30)
    swept = later(pool, awaited_by(r, client, job.id), sweep)
    with pytest.raises(dtaskq.DeadlineExceeded):
        job.result(timeout=30)
    with pytest.raises(dtaskq.JobNotFound):
        dropped_waiter.result()
    assert swept.result() == 2


def test_a_waiter_of_a_job_kept_zero_seconds(
    client: dtaskq.Client, r: redis.Redis, pool: ThreadPoolExecutor
) -> None:
    """Its record is deleted as it ends: the waiter wakes and finds nothing."""
    job = client.enqueue(QUEUE, "h", result_ttl=0)
    claimed = claim_one(client)
    later(pool, awaited_by(r, client, job.id), lambda: settle(client, [completed(claimed, 1)]))
    with pytest.raises(dtaskq.JobNotFound):
        job.result(timeout=30)


def test_result_times_out(client: dtaskq.Client) -> None:
    job = client.enqueue(QUEUE, "h")
    for timeout in (0, 0.2):
        with pytest.raises(dtaskq.JobTimeout) as caught:
            job.result(timeout=timeout)
        assert isinstance(caught.value, TimeoutError)
        assert (caught.value.queue, caught.value.job_id) == (QUEUE, job.id)
    with pytest.raises(TimeoutError):
        client.wait_for_job(QUEUE, job.id, timeout=0.1)
    # The job itself goes on.
    assert job.status() is JobStatus.QUEUED
    settle(client, [completed(claim_one(client), "late")])
    assert job.result(timeout=0) == "late"


def test_result_of_an_unknown_job(client: dtaskq.Client) -> None:
    client.enqueue(QUEUE, "h")
    for queue, job_id in ((QUEUE, "nothing"), ("never-used", "nothing")):
        with pytest.raises(dtaskq.JobNotFound) as caught:
            client.job(queue, job_id).result(timeout=5)
        assert isinstance(caught.value, dtaskq.PermanentRejection)
        assert (caught.value.queue, caught.value.job_id) == (queue, job_id)
        assert client.job(queue, job_id).status() is None
        assert client.job(queue, job_id).info() is None
        assert not client.job(queue, job_id).cancel()


# --- blocking reads and the socket timeout ---------------------------------------------------


@pytest.mark.parametrize(
    ("options", "longest"),
    [({}, 4.5), ({"socket_timeout": 2}, 1.5), ({"socket_timeout": None}, 30.0)],
    ids=["default", "2s", "none"],
)
def test_a_blocking_read_stays_under_the_socket_timeout(
    options: dict[str, Any], longest: float
) -> None:
    """One read lasts at most 30 s and half a second less than the socket timeout (redis-py
    8's default is 5 s), and no longer than what is left of the caller's timeout (rule J9)."""
    for connection in (redis.Redis(**options), redis.asyncio.Redis(**options)):
        assert wait_seconds(None, connection) == longest
        assert 0 < wait_seconds(time.monotonic() + 0.2, connection) <= min(0.2, longest)
        assert wait_seconds(time.monotonic() - 1, connection) == 0
    assert wait_seconds(None, redis.Redis(socket_timeout=0.3)) == 0.05


def with_socket_timeout(url: str, seconds: float) -> str:
    return f"{url}{'&' if '?' in url else '?'}socket_timeout={seconds}"


def test_a_wait_longer_than_the_socket_timeout(
    server_url: str, prefix: str, r: redis.Redis, pool: ThreadPoolExecutor
) -> None:
    """A waiter on a connection with a 1 s socket timeout blocks in reads of half a second:
    it waits out its longer timeout, and wakes when the job ends."""
    url = with_socket_timeout(server_url, 1)
    with dtaskq.Client.from_url(url, prefix=prefix) as client:
        job = client.enqueue(QUEUE, "h")
        with pytest.raises(dtaskq.JobTimeout):
            job.result(timeout=2)
        claimed = claim_one(client)
        waiter = pool.submit(job.result, 30)
        until(awaited_by(r, client, job.id))
        settle(client, [completed(claimed, "done")])
        assert waiter.result() == "done"


async def test_an_async_wait_longer_than_the_socket_timeout(server_url: str, prefix: str) -> None:
    url = with_socket_timeout(server_url, 1)
    async with dtaskq.AsyncClient.from_url(url, prefix=prefix) as aclient:
        job = await aclient.enqueue(QUEUE, "h")
        with pytest.raises(dtaskq.JobTimeout):
            await job.result(timeout=2)


# --- the asyncio client ----------------------------------------------------------------------


async def aclaim(aclient: dtaskq.AsyncClient, node: str = "n1") -> ClaimedJob:
    (part,) = await aclient.queue_partitions(QUEUE)
    (job,) = (await aclient.claim_jobs(part, node, 1)).jobs
    return job


async def asettle(aclient: dtaskq.AsyncClient, *reports: Report) -> list[bool]:
    (part,) = await aclient.queue_partitions(QUEUE)
    return (await aclient.claim_jobs(part, "n1", 0, reports)).settled


async def await_marked(r: redis.Redis, part: dtaskq.QueuePartition, job_id: str) -> None:
    while not awaited(r, part, job_id):
        await asyncio.sleep(0.01)


async def test_async_result_wakes_when_the_job_completes(
    aclient: dtaskq.AsyncClient, r: redis.Redis, prefix: str
) -> None:
    job = await aclient.enqueue(QUEUE, "h")
    claimed = await aclaim(aclient)
    part = dtaskq.QueuePartition(prefix, QUEUE, 0)

    async def complete() -> list[bool]:
        await asyncio.wait_for(await_marked(r, part, job.id), 20)
        return await asettle(aclient, completed(claimed, {"n": 1}))

    settler = asyncio.create_task(complete())
    assert await job.result(timeout=30) == {"n": 1}
    assert await settler == [True]
    assert (await aclient.wait_for_job(QUEUE, job.id)).status is JobStatus.COMPLETED
    assert msgpack.unpackb(claimed.arguments) == [[], {}]


async def test_async_result_outcomes(
    aclient: dtaskq.AsyncClient, r: redis.Redis, prefix: str
) -> None:
    job = await aclient.enqueue(QUEUE, "h")
    with pytest.raises(dtaskq.JobTimeout):
        await job.result(timeout=0.1)
    claimed = await aclaim(aclient)
    part = dtaskq.QueuePartition(prefix, QUEUE, 0)

    async def cancel() -> bool:
        await asyncio.wait_for(await_marked(r, part, job.id), 20)
        return await job.cancel()

    canceller = asyncio.create_task(cancel())
    with pytest.raises(dtaskq.JobCancelled):
        await job.result(timeout=30)
    assert await canceller
    assert await job.status() is JobStatus.CANCELLED
    assert not await job.cancel()
    assert await asettle(aclient, completed(claimed, 1)) == [False]
    failing = await aclient.enqueue(QUEUE, "h")
    await asettle(aclient, failed_for_good(await aclaim(aclient), "broken"))
    with pytest.raises(dtaskq.JobFailed, match="broken"):
        await failing.result(timeout=5)
    with pytest.raises(dtaskq.JobNotFound):
        await aclient.job(QUEUE, "nothing").result(timeout=5)
    with pytest.raises(dtaskq.JobNotFound):
        await aclient.job("never-used", "nothing").result()
    assert await aclient.cancel_job(QUEUE, "nothing") is None
