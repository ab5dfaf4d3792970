"""Enqueueing jobs: what a job's record holds, batches, idempotency keys and their lifetime,
and delayed jobs (docs/jobs.md, rules J1-J2)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgpack
import pytest
import redis
from jobs_support import (
    QUEUE,
    claim,
    claim_one,
    completed,
    failed_for_good,
    info,
    make_due,
    ms,
    part0,
    server_ms,
    settle,
    status,
)
from support import LossyConnection, Unchanged, lose_next_reply
from waiting import until

import dtaskq
from dtaskq import Backoff, JobSpec, JobStatus


def test_a_job_record_holds_what_was_enqueued(client: dtaskq.Client, r: redis.Redis) -> None:
    before = server_ms(r)
    deadline = datetime.now(UTC) + timedelta(hours=1)
    job = client.enqueue(
        QUEUE,
        "reports.build",
        (1, "two", b"three"),
        {"four": [4.0, None]},
        priority=5,
        deadline=deadline,
        timeout=2.5,
        max_attempts=3,
        backoff=Backoff(0.5, 10),
    )
    after = server_ms(r)
    assert job.created and job.queue == QUEUE
    assert repr(job) == f"Job({QUEUE!r}, {job.id!r})"
    found = info(client, job.id)
    assert (found.queue, found.id, found.handler) == (QUEUE, job.id, "reports.build")
    assert found.status is JobStatus.QUEUED and job.status() is JobStatus.QUEUED
    assert (found.attempt, found.failures, found.max_attempts) == (0, 0, 3)
    assert found.priority == 5
    assert before <= ms(found.enqueued_at) <= after
    assert found.deadline is not None and ms(found.deadline) == round(deadline.timestamp() * 1000)
    assert (found.run_at, found.started_at, found.finished_at) == (None, None, None)
    assert (found.error, found.node, found.idempotency_key, found.result) == ("", None, None, None)
    assert found.leases_lost == 0

    claimed = claim_one(client, node="node-7")
    assert (claimed.id, claimed.handler, claimed.attempt) == (job.id, "reports.build", 1)
    assert msgpack.unpackb(claimed.arguments) == [[1, "two", b"three"], {"four": [4.0, None]}]
    assert (claimed.timeout_ms, claimed.deadline_ms) == (2500, ms(found.deadline))
    assert (claimed.failures, claimed.max_attempts) == (0, 3)
    assert claimed.backoff == Backoff(0.5, 10)
    assert (claimed.queue, claimed.partition) == (QUEUE, 0)
    running = info(client, job.id)
    assert running.status is JobStatus.RUNNING
    assert (running.attempt, running.node, running.token) == (1, "node-7", claimed.token)
    assert found.token is None  # never claimed
    assert running.started_at is not None and running.started_at >= found.enqueued_at


def test_defaults_are_not_stored(client: dtaskq.Client, r: redis.Redis) -> None:
    """A plain job's hash holds only its handler, arguments, status and enqueue time."""
    job = client.enqueue(QUEUE, "h")
    fields = r.hgetall(part0(client).job_key(job.id))
    assert sorted(fields) == [b"a", b"e", b"h", b"s"]
    claimed = claim_one(client)
    assert (claimed.timeout_ms, claimed.deadline_ms, claimed.max_attempts) == (None, None, 1)
    assert claimed.backoff == Backoff()
    assert msgpack.unpackb(claimed.arguments) == [[], {}]


def test_enqueue_many_answers_in_order_across_batches(client: dtaskq.Client) -> None:
    specs = [
        JobSpec(f"h{i % 3}", (i,), delay=60 if i % 7 == 0 else None, idempotency_key=f"k{i}")
        for i in range(250)
    ]
    jobs = client.enqueue_many(QUEUE, specs)
    assert [job.id for job in jobs] == [f"=k{i}" for i in range(250)]
    assert all(job.created for job in jobs)
    for i, job in enumerate(jobs):
        found = info(client, job.id)
        assert found.handler == f"h{i % 3}" and found.idempotency_key == f"k{i}"
        expected = JobStatus.SCHEDULED if i % 7 == 0 else JobStatus.QUEUED
        assert found.status is expected
    # Sent again, the whole batch answers the same jobs and makes none.
    again = client.enqueue_many(QUEUE, specs)
    assert [job.id for job in again] == [job.id for job in jobs]
    assert not any(job.created for job in again)
    assert len(claim(client, max_jobs=1000)) == 250 - len(range(0, 250, 7))


def test_enqueue_many_of_nothing_makes_nothing(client: dtaskq.Client, unchanged: Unchanged) -> None:
    assert unchanged(client.enqueue_many, QUEUE, []) == []
    assert unchanged(client.enqueue_many, QUEUE, iter([])) == []


def test_ids_are_unique(client: dtaskq.Client) -> None:
    jobs = client.enqueue_many(QUEUE, [JobSpec("h")] * 300)
    assert len({job.id for job in jobs}) == 300


def test_an_enqueue_retried_after_a_lost_reply_creates_nothing_twice(
    lossy: dtaskq.Client, r: redis.Redis
) -> None:
    """The retry resends the call's request id: it looks up the generated ids the first try
    created (rule J1)."""
    lose_next_reply("enqueue_jobs")
    jobs = lossy.enqueue_many(QUEUE, [JobSpec("h", (i,)) for i in range(3)] + [JobSpec("h")])
    assert LossyConnection.runs["enqueue_jobs"] == 2
    assert [job.created for job in jobs] == [False] * 4
    assert len({job.id for job in jobs}) == 4
    assert r.llen(f"{part0(lossy).base}ready:0") == 4
    assert [job.id for job in claim(lossy, max_jobs=10)] == [job.id for job in jobs]
    # Another call is a first try: its fresh ids are created.
    assert lossy.enqueue(QUEUE, "h").created


# --- idempotency keys -----------------------------------------------------------------------


def test_a_held_key_answers_its_job_and_makes_nothing(
    client: dtaskq.Client, r: redis.Redis, state: Callable[[], dict[bytes, object]]
) -> None:
    first = client.enqueue(QUEUE, "h", (1,), idempotency_key="order-17", priority=3)
    assert first.created and first.id == "=order-17"
    before = state()
    again = client.enqueue(QUEUE, "other", (2,), idempotency_key="order-17")
    after = state()
    # The call only left its request id, kept a minute for its retries (rule J1).
    (request,) = set(after) - set(before)
    assert request.startswith(part0(client).base.encode() + b"req:")
    assert 0 < r.pttl(request) <= 60_000
    del after[request]
    assert after == before
    assert isinstance(again, dtaskq.Job)
    assert again.id == first.id and not again.created
    found = info(client, first.id)
    assert (found.handler, found.priority, found.idempotency_key) == ("h", 3, "order-17")
    # One job only: the second enqueue added nothing to the lane.
    assert [job.id for job in claim(client, max_jobs=10)] == [first.id]
    # While it runs, the key is held too.
    assert not client.enqueue(QUEUE, "h", idempotency_key="order-17").created


def test_keys_in_one_batch(client: dtaskq.Client) -> None:
    jobs = client.enqueue_many(
        QUEUE, [JobSpec("h", (1,), idempotency_key="k"), JobSpec("h", (2,), idempotency_key="k")]
    )
    assert [job.id for job in jobs] == ["=k", "=k"]
    assert [job.created for job in jobs] == [True, False]
    (claimed,) = claim(client, max_jobs=10)
    assert msgpack.unpackb(claimed.arguments) == [[1], {}]


def test_a_key_is_held_while_the_ended_job_is_kept(client: dtaskq.Client) -> None:
    job = client.enqueue(QUEUE, "h", idempotency_key="k", result_ttl=3600)
    settle(client, [completed(claim_one(client), "first")])
    again = client.enqueue(QUEUE, "h", idempotency_key="k")
    assert not again.created and again.status() is JobStatus.COMPLETED
    assert again.result(timeout=5) == "first"
    assert job.id == again.id


def test_a_key_is_free_once_the_result_ttl_passed(client: dtaskq.Client, r: redis.Redis) -> None:
    job = client.enqueue(QUEUE, "h", idempotency_key="k", result_ttl=0.3)
    key = part0(client).job_key(job.id)
    assert r.hget(key, "T") == b"300" and r.pttl(key) == -1
    settle(client, [completed(claim_one(client), "first")])
    assert r.pttl(key) <= 300  # expiring, or gone already
    until(lambda: client.get_job(QUEUE, job.id) is None, what="the record to expire")
    fresh = client.enqueue(QUEUE, "h", idempotency_key="k")
    assert fresh.created and fresh.id == job.id
    found = info(client, fresh.id)
    assert found.status is JobStatus.QUEUED and found.result is None and found.attempt == 0
    assert r.pttl(part0(client).job_key(job.id)) == -1


def test_a_zero_result_ttl_frees_the_key_at_once(client: dtaskq.Client) -> None:
    job = client.enqueue(QUEUE, "h", idempotency_key="k", result_ttl=0)
    settle(client, [completed(claim_one(client), "first")])
    assert client.get_job(QUEUE, job.id) is None
    with pytest.raises(dtaskq.JobNotFound):
        job.result(timeout=1)
    assert client.enqueue(QUEUE, "h", idempotency_key="k").created


def test_cancelled_and_dead_jobs_hold_their_key(client: dtaskq.Client) -> None:
    cancelled = client.enqueue(QUEUE, "h", idempotency_key="c")
    assert cancelled.cancel()
    assert not client.enqueue(QUEUE, "h", idempotency_key="c").created
    dead = client.enqueue(QUEUE, "h", idempotency_key="d", result_ttl=0)
    settle(client, [failed_for_good(claim_one(client))])
    # A dead-lettered job is kept for the operator whatever its result TTL ...
    again = client.enqueue(QUEUE, "h", idempotency_key="d")
    assert not again.created and again.status() is JobStatus.FAILED
    # ... until it is purged.
    assert client.purge_dead(QUEUE, [dead.id]) == 1
    assert client.enqueue(QUEUE, "h", idempotency_key="d").created


def test_a_new_job_of_a_used_key_does_not_inherit_its_end_marker(
    client: dtaskq.Client, r: redis.Redis
) -> None:
    """An awaited job's end is pushed to ``done:<id>``, kept at least a second; a new job of
    the same key must not find it there, or its waiters would not block."""
    job = client.enqueue(QUEUE, "h", idempotency_key="k", result_ttl=0)
    with pytest.raises(dtaskq.JobTimeout):
        job.result(timeout=0)
    settle(client, [completed(claim_one(client), 1)])
    done = part0(client).done_key(job.id)
    assert r.exists(done)
    assert client.enqueue(QUEUE, "h", idempotency_key="k").created
    assert not r.exists(done)


# --- delays ----------------------------------------------------------------------------------


def test_a_delayed_job_waits_until_it_is_due(client: dtaskq.Client, r: redis.Redis) -> None:
    job = client.enqueue(QUEUE, "h", delay=60)
    found = info(client, job.id)
    assert found.status is JobStatus.SCHEDULED
    assert found.run_at is not None and ms(found.run_at) == ms(found.enqueued_at) + 60_000
    answer = client.claim_jobs(part0(client), "n1", 10)
    assert answer.jobs == []
    assert answer.next_due_ms is not None and 0 < answer.next_due_ms <= 60_000
    assert client.sweep_jobs(part0(client)).promoted == 0
    assert job.status() is JobStatus.SCHEDULED
    make_due(r, part0(client), job.id)
    assert claim_one(client).id == job.id


def test_claims_hand_out_a_delayed_job_once_due(client: dtaskq.Client, r: redis.Redis) -> None:
    job = client.enqueue(QUEUE, "h", delay=timedelta(milliseconds=300))
    due = ms(info(client, job.id).run_at or datetime.min)
    claimed = until(lambda: claim(client), what="the delayed job")
    assert [c.id for c in claimed] == [job.id]
    started = info(client, job.id).started_at
    assert started is not None and ms(started) >= due
    assert client.claim_jobs(part0(client), "n1", 1).next_due_ms is None


def test_a_sweep_promotes_a_due_job(client: dtaskq.Client) -> None:
    job = client.enqueue(QUEUE, "h", delay=0.3)
    until(lambda: client.sweep_jobs(part0(client)).promoted == 1, what="the promotion")
    assert job.status() is JobStatus.QUEUED
    assert client.sweep_jobs(part0(client)).wait_ms is None
    assert claim_one(client).id == job.id


def test_run_at(client: dtaskq.Client, r: redis.Redis) -> None:
    now = datetime.fromtimestamp(server_ms(r) / 1000, UTC)
    past = client.enqueue(QUEUE, "h", run_at=now - timedelta(minutes=5))
    future = client.enqueue(QUEUE, "h", run_at=now + timedelta(minutes=5))
    zero = client.enqueue(QUEUE, "h", delay=0)
    assert past.status() is JobStatus.QUEUED and zero.status() is JobStatus.QUEUED
    assert info(client, past.id).run_at is None
    scheduled = info(client, future.id)
    assert scheduled.status is JobStatus.SCHEDULED
    assert scheduled.run_at is not None and ms(scheduled.run_at) == ms(now) + 300_000
    assert {c.id for c in claim(client, max_jobs=10)} == {past.id, zero.id}


def test_a_due_job_with_a_deadline_joins_the_deadline_lane(
    client: dtaskq.Client, r: redis.Redis
) -> None:
    plain = client.enqueue(QUEUE, "h")
    deadline = datetime.now(UTC) + timedelta(hours=1)
    later = client.enqueue(QUEUE, "h", delay=60, deadline=deadline)
    make_due(r, part0(client), later.id)
    # Due now, it goes first within its priority, as deadline jobs do.
    first, second = claim(client, max_jobs=2)
    assert (first.id, second.id) == (later.id, plain.id)
    assert first.deadline_ms == round(deadline.timestamp() * 1000)
    assert status(client, later.id) is JobStatus.RUNNING


async def test_the_async_client_enqueues(aclient: dtaskq.AsyncClient) -> None:
    job = await aclient.enqueue(QUEUE, "h", (1,), idempotency_key="k", delay=60)
    assert isinstance(job, dtaskq.AsyncJob) and job.created
    assert repr(job) == f"AsyncJob({QUEUE!r}, '=k')"
    assert await job.status() is JobStatus.SCHEDULED
    again = await aclient.enqueue_many(QUEUE, [JobSpec("h", idempotency_key="k"), JobSpec("h")])
    assert [j.created for j in again] == [False, True]
    assert again[0].id == job.id
    found = await aclient.get_job(QUEUE, again[1].id)
    assert found is not None and found.status is JobStatus.QUEUED
    assert (await aclient.job(QUEUE, job.id).info()) == await aclient.get_job(QUEUE, job.id)
