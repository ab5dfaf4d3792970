"""Cancelling jobs: waiting, running and ended ones (docs/jobs.md, rule J10)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
from jobs_support import (
    QUEUE,
    claim,
    claim_one,
    completed,
    held,
    info,
    lease_end,
    ms,
    part0,
    running,
    server_ms,
    settle,
)
from support import Unchanged
from waiting import until

import dtaskq
from dtaskq import JobStatus
from dtaskq.calls import Call
from dtaskq.scripts import function

CANCELLED = 2


def test_cancel_removes_waiting_jobs(client: dtaskq.Client, r: redis.Redis) -> None:
    queued = client.enqueue(QUEUE, "h")
    due = client.enqueue(QUEUE, "h", deadline=datetime.now(UTC) + timedelta(hours=1))
    scheduled = client.enqueue(QUEUE, "h", delay=0.2)
    assert client.cancel_job(QUEUE, queued.id) is JobStatus.QUEUED
    assert due.cancel()
    assert client.cancel_job(QUEUE, scheduled.id) is JobStatus.SCHEDULED
    for job in (queued, due, scheduled):
        found = info(client, job.id)
        assert found.status is JobStatus.CANCELLED and found.finished_at is not None
        with pytest.raises(dtaskq.JobCancelled):
            job.result(timeout=5)
    part = part0(client)
    assert not r.exists(part.lanes_key()) and not r.exists(f"{part.base}scheduled")
    run_at = info(client, scheduled.id).run_at
    assert run_at is not None
    until(lambda: server_ms(r) > ms(run_at), what="the cancelled job's run-at time")
    assert client.sweep_jobs(part).promoted == 0
    assert claim(client, max_jobs=10) == []


def test_cancel_of_a_running_job(client: dtaskq.Client, r: redis.Redis) -> None:
    job = client.enqueue(QUEUE, "h")
    claimed = claim_one(client)
    assert job.cancel()
    assert job.status() is JobStatus.CANCELLED
    assert client.heartbeat_jobs(part0(client), "n1", [(job.id, claimed.token)]) == [CANCELLED]
    # Whoever names a cancelled job learns that it was cancelled (rule J5).
    assert client.heartbeat_jobs(part0(client), "n2", [(job.id, claimed.token)]) == [CANCELLED]
    part = part0(client)
    assert running(r, part) == {} and held(r, part, "n1") == set()
    assert lease_end(r, part, "n1") is None
    found = info(client, job.id)
    assert (found.token, found.node, found.attempt) == (claimed.token, "n1", 0)
    assert client.sweep_jobs(part).reclaimed == 0
    assert settle(client, [completed(claimed, "too late")]) == [False]
    with pytest.raises(dtaskq.JobCancelled) as caught:
        job.result(timeout=5)
    assert caught.value.job_id == job.id and caught.value.queue == QUEUE
    assert info(client, job.id).result is None


def test_cancel_of_an_ended_job_changes_nothing(
    client: dtaskq.Client, unchanged: Unchanged
) -> None:
    job = client.enqueue(QUEUE, "h")
    settle(client, [completed(claim_one(client), "kept")])
    assert unchanged(client.cancel_job, QUEUE, job.id) is JobStatus.COMPLETED
    assert not unchanged(job.cancel)
    cancelled = client.enqueue(QUEUE, "h")
    assert cancelled.cancel()
    assert unchanged(client.cancel_job, QUEUE, cancelled.id) is JobStatus.CANCELLED
    assert unchanged(client.cancel_job, QUEUE, "nothing") is None
    assert unchanged(client.cancel_job, "never-used", "nothing") is None
    assert job.result(timeout=5) == "kept"


def test_a_retried_claim_leaves_out_a_job_whose_record_went(
    client: dtaskq.Client, r: redis.Redis
) -> None:
    """A claim whose reply was lost is sent again after one of its jobs was cancelled with no
    result kept: the retry answers the other job only."""
    part = part0(client)
    gone = client.enqueue(QUEUE, "h", result_ttl=0)
    kept = client.enqueue(QUEUE, "h")
    call = Call(function("claim_jobs"), [part.lanes_key()], ["n1", "p.9/1", 2, 30_000])
    first = client._execute(call)
    assert first[1][0::10] == [gone.id.encode(), kept.id.encode()]
    assert gone.cancel() and client.get_job(QUEUE, gone.id) is None
    again = client._execute(call)
    assert again[1] == first[1][10:]
