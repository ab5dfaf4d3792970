"""Claims, leases and fencing tokens, heartbeats, releases, sweeps and cancels of jobs
(docs/jobs.md, rules J5, J7, J8, J10, J11)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
from jobs_support import (
    QUEUE,
    claim,
    claim_one,
    completed,
    expire_lease,
    failed_for_good,
    info,
    make_due,
    ms,
    part0,
    server_ms,
    settle,
    status,
)
from support import Unchanged
from waiting import until

import dtaskq
from dtaskq import JobStatus
from dtaskq.calls import Call
from dtaskq.scripts import function

HELD, LOST, CANCELLED = 0, 1, 2


def lease_end(r: redis.Redis, client: dtaskq.Client, job_id: str) -> int | None:
    score = r.zscore(f"{part0(client).base}leases", job_id)
    return None if score is None else int(score)


def test_a_claim_takes_a_lease(client: dtaskq.Client, r: redis.Redis) -> None:
    plain = client.enqueue(QUEUE, "h")
    timed = client.enqueue(QUEUE, "h", timeout=10)
    first, second = claim(client, max_jobs=2)
    assert (first.id, second.id) == (plain.id, timed.id)
    for job, lease_ms in ((plain, 30_000), (timed, 15_000)):
        started = info(client, job.id).started_at
        assert started is not None and lease_end(r, client, job.id) == ms(started) + lease_ms
    # Nothing else is ready.
    assert claim(client, node="n2") == []


def test_a_heartbeat_renews_held_leases(client: dtaskq.Client, r: redis.Redis) -> None:
    job = client.enqueue(QUEUE, "h", timeout=10)
    claimed = claim_one(client)
    before = lease_end(r, client, job.id)
    assert before is not None
    until(lambda: server_ms(r) > before - 15_000, what="the clock to move")
    assert client.heartbeat_jobs(part0(client), "n1", [(job.id, 1)]) == [HELD]
    after = lease_end(r, client, job.id)
    assert after is not None and after > before
    # Another node, an old token or an unknown job hold nothing; none of them renews.
    answers = client.heartbeat_jobs(part0(client), "n2", [(job.id, claimed.token), ("nothing", 1)])
    assert answers == [LOST, LOST]
    assert client.heartbeat_jobs(part0(client), "n1", [(job.id, 2)]) == [LOST]
    assert lease_end(r, client, job.id) == after


def test_a_lost_lease_is_reclaimed_and_fenced(client: dtaskq.Client, r: redis.Redis) -> None:
    job = client.enqueue(QUEUE, "h", timeout=1)
    other = client.enqueue(QUEUE, "h")
    stalled = claim_one(client, node="n1")
    assert stalled.id == job.id
    expire_lease(r, part0(client), job.id)
    sweep = client.sweep_jobs(part0(client))
    assert (sweep.reclaimed, sweep.more) == (1, False)
    found = info(client, job.id)
    assert found.status is JobStatus.QUEUED and found.leases_lost == 1 and found.failures == 0
    assert client.heartbeat_jobs(part0(client), "n1", [(job.id, 1)]) == [LOST]
    # A report arriving while the job waits again is turned away.
    assert settle(client, [completed(stalled, "stale")], node="n1") == [False]
    # It went back to the front of its lane, and runs again under the next token.
    rerun = claim_one(client, node="n2")
    assert (rerun.id, rerun.token) == (job.id, 2)
    assert settle(client, [completed(stalled, "stale")], node="n1") == [False]
    assert info(client, job.id).node == "n2"
    assert settle(client, [completed(rerun, "fresh")], node="n2") == [True]
    # Late reports never overwrite the newer result.
    assert settle(client, [completed(stalled, "stale")], node="n1") == [False]
    assert settle(client, [completed(rerun, "again")], node="n2") == [False]
    assert job.result(timeout=5) == "fresh"
    assert info(client, job.id).attempt == 2
    assert claim_one(client).id == other.id


def test_the_same_node_with_an_old_token_is_fenced(client: dtaskq.Client, r: redis.Redis) -> None:
    job = client.enqueue(QUEUE, "h")
    first = claim_one(client)
    expire_lease(r, part0(client), job.id)
    assert client.sweep_jobs(part0(client)).reclaimed == 1
    second = claim_one(client)
    assert second.token == first.token + 1
    assert settle(client, [completed(first, 1), completed(second, 2)]) == [False, True]
    assert job.result(timeout=5) == 2


def test_jobs_that_keep_losing_their_lease_fail(client: dtaskq.Client, r: redis.Redis) -> None:
    job = client.enqueue(QUEUE, "h", max_attempts=100)
    for lost in range(1, 9):
        claim_one(client)
        expire_lease(r, part0(client), job.id)
        assert client.sweep_jobs(part0(client)).reclaimed == 1
        assert info(client, job.id).leases_lost == lost
    found = info(client, job.id)
    assert found.status is JobStatus.FAILED and found.error.startswith("LeaseLost:")
    assert [dead.id for dead in client.dead_jobs(QUEUE)] == [job.id]
    with pytest.raises(dtaskq.JobFailed, match="LeaseLost"):
        job.result(timeout=5)


def test_a_sweep_is_bounded(client: dtaskq.Client, r: redis.Redis) -> None:
    jobs = client.enqueue_many(QUEUE, [dtaskq.JobSpec("h")] * 3)
    claim(client, max_jobs=3)
    for job in jobs:
        expire_lease(r, part0(client), job.id)
    first = client.sweep_jobs(part0(client), limit=2)
    assert (first.reclaimed, first.more) == (2, True)
    second = client.sweep_jobs(part0(client), limit=2)
    assert (second.reclaimed, second.more, second.wait_ms) == (1, False, None)


def test_a_sweep_answers_when_to_sweep_next(client: dtaskq.Client) -> None:
    assert client.sweep_jobs(part0(client)).wait_ms is None
    client.enqueue(QUEUE, "h", delay=600)
    wait = client.sweep_jobs(part0(client)).wait_ms
    assert wait is not None and 500_000 < wait <= 600_000
    client.enqueue(QUEUE, "h")
    claim_one(client)  # its lease ends in 30 s, before the scheduled job is due
    wait = client.sweep_jobs(part0(client)).wait_ms
    assert wait is not None and 0 < wait <= 30_000


def test_the_sweep_lock(client: dtaskq.Client, r: redis.Redis) -> None:
    job = client.enqueue(QUEUE, "h")
    claim_one(client)
    expire_lease(r, part0(client), job.id)
    part = part0(client)
    held = client.sweep_jobs(part, sweeper="s1", lock_ms=60_000)
    assert not held.locked_out and held.reclaimed == 1
    claim_one(client)
    expire_lease(r, part, job.id)
    shut = client.sweep_jobs(part, sweeper="s2", lock_ms=60_000)
    assert shut.locked_out and (shut.reclaimed, shut.wait_ms) == (0, None)
    assert status(client, job.id) is JobStatus.RUNNING
    assert client.sweep_jobs(part, sweeper="s1", lock_ms=60_000).reclaimed == 1
    assert 0 < r.pttl(f"{part.base}sweeping") <= 60_000
    # A sweep without a sweeper takes no lock and heeds none.
    claim_one(client)
    expire_lease(r, part, job.id)
    assert client.sweep_jobs(part).reclaimed == 1


def test_a_release_puts_jobs_back_in_front_without_an_attempt(client: dtaskq.Client) -> None:
    job = client.enqueue(QUEUE, "h")  # one attempt only
    later = client.enqueue(QUEUE, "h")
    first = claim_one(client)
    assert first.id == job.id
    part = part0(client)
    assert client.release_jobs(part, "n2", [(job.id, 1)]) == [False]
    assert client.release_jobs(part, "n1", [(job.id, 2)]) == [False]
    assert client.release_jobs(part, "n1", [(job.id, 1), ("nothing", 1)]) == [True, False]
    found = info(client, job.id)
    assert found.status is JobStatus.QUEUED and (found.failures, found.leases_lost) == (0, 0)
    assert client.wait_for_jobs([part], 1.0)  # the release woke a worker
    again = claim_one(client, node="n2")
    assert (again.id, again.token, again.failures) == (job.id, 2, 0)
    assert client.release_jobs(part, "n1", [(job.id, 1)]) == [False]
    assert settle(client, [completed(first, "old")]) == [False]
    assert settle(client, [completed(again, "ok")], node="n2") == [True]
    assert job.result(timeout=5) == "ok"
    assert claim_one(client).id == later.id


def test_a_released_deadline_job_keeps_its_place(client: dtaskq.Client) -> None:
    now = datetime.now(UTC)
    soon = client.enqueue(QUEUE, "h", deadline=now + timedelta(hours=1))
    late = client.enqueue(QUEUE, "h", deadline=now + timedelta(hours=2))
    first = claim_one(client)
    assert first.id == soon.id
    assert client.release_jobs(part0(client), "n1", [(soon.id, 1)]) == [True]
    assert [job.id for job in claim(client, max_jobs=5)] == [soon.id, late.id]


def test_wake_markers(client: dtaskq.Client) -> None:
    part = part0(client)
    assert not client.wait_for_jobs([part], 0.05)
    client.enqueue_many(QUEUE, [dtaskq.JobSpec("h")] * 3)
    assert client.wait_for_jobs([part], 1.0)
    assert not client.wait_for_jobs([part], 0.05)  # one marker, however many jobs
    claim(client, max_jobs=1)  # jobs are left: the claim passes the marker on
    assert client.wait_for_jobs([part], 1.0)
    claim(client, max_jobs=10)
    assert not client.wait_for_jobs([part], 0.05)


def test_a_retried_claim_answers_the_jobs_it_claimed(client: dtaskq.Client) -> None:
    """A claim whose reply was lost, sent again with the same claimer request id."""
    client.enqueue_many(QUEUE, [dtaskq.JobSpec("h")] * 3)
    call = Call(function("claim_jobs"), [part0(client).lanes_key()], ["n1", "p.7/1", 2])
    first = client._execute(call)
    assert client._execute(call) == first
    assert len(first[1]) == 2 * 9
    # The claimer's next call is a new one.
    later = Call(function("claim_jobs"), [part0(client).lanes_key()], ["n1", "p.7/2", 2])
    assert len(client._execute(later)[1]) == 9


def test_a_claim_of_nothing_only_settles(client: dtaskq.Client, r: redis.Redis) -> None:
    job = client.enqueue(QUEUE, "h")
    waiting = client.enqueue(QUEUE, "h", delay=60)
    claimed = claim_one(client)
    client.enqueue(QUEUE, "h")
    answer = client.claim_jobs(part0(client), "n1", 0, [completed(claimed, 5)])
    assert answer.settled == [True] and answer.jobs == []
    assert answer.next_due_ms is not None and answer.next_due_ms <= 60_000
    assert job.result(timeout=5) == 5
    make_due(r, part0(client), waiting.id)
    assert client.claim_jobs(part0(client), "n1", 0).jobs == []
    assert status(client, waiting.id) is JobStatus.SCHEDULED  # claiming nothing promotes nothing


# --- cancel ----------------------------------------------------------------------------------


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
    assert client.heartbeat_jobs(part0(client), "n2", [(job.id, claimed.token)]) == [LOST]
    assert lease_end(r, client, job.id) is None
    assert client.sweep_jobs(part0(client)).reclaimed == 0
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


async def test_the_async_client_runs_jobs(aclient: dtaskq.AsyncClient) -> None:
    await aclient.configure_queue(QUEUE, aging_ms=10)
    jobs = await aclient.enqueue_many(QUEUE, [dtaskq.JobSpec("h", (i,)) for i in range(3)])
    (part,) = await aclient.queue_partitions(QUEUE)
    assert await aclient.wait_for_jobs([part], 1.0)
    first = (await aclient.claim_jobs(part, "n1", 2)).jobs
    claims = [(job.id, job.token) for job in first]
    assert await aclient.heartbeat_jobs(part, "n1", claims) == [HELD, HELD]
    assert await aclient.release_jobs(part, "n1", claims[1:]) == [True]
    assert (await aclient.sweep_jobs(part, sweeper="s1", lock_ms=1000)).reclaimed == 0
    rest = (await aclient.claim_jobs(part, "n1", 5, [completed(first[0], "a")])).jobs
    assert [job.id for job in rest] == [jobs[1].id, jobs[2].id]
    reports = [completed(rest[0], "b"), failed_for_good(rest[1], "c")]
    assert (await aclient.claim_jobs(part, "n1", 0, reports)).settled == [True, True]
    assert [await job.result(timeout=5) for job in jobs[:2]] == ["a", "b"]
    (dead,) = await aclient.dead_jobs(QUEUE)
    assert (dead.id, dead.error) == (jobs[2].id, "c")
    assert await aclient.requeue_dead(QUEUE, [dead.id]) == 1
    again = (await aclient.claim_jobs(part, "n1", 5)).jobs
    await aclient.claim_jobs(part, "n1", 0, [failed_for_good(again[0], "d")])
    assert await aclient.purge_dead(QUEUE, handler="h") == 1
    assert await aclient.get_job(QUEUE, jobs[2].id) is None
    assert await aclient.wait_for_jobs([part], 1.0)  # the requeue's marker
    assert not await aclient.wait_for_jobs([part], 0.05)
