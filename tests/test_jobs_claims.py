"""Claims, leases and fencing tokens, heartbeats, releases and sweeps of jobs (docs/jobs.md,
rules J5, J7, J8, J11); cancels are in tests/test_jobs_cancel.py."""

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
    held,
    info,
    lease_end,
    make_due,
    ms,
    part0,
    running,
    server_ms,
    settle,
    status,
)
from support import LossyConnection, is_cluster, lose_next_reply
from waiting import until

import dtaskq
from dtaskq import JobStatus
from dtaskq.calls import Call
from dtaskq.keys import partition_of
from dtaskq.scripts import function

HELD, LOST, CANCELLED = 0, 1, 2


def test_a_claim_takes_the_nodes_lease(client: dtaskq.Client, r: redis.Redis) -> None:
    """The lease is the node's, per partition: a claim sets it to now plus the shortest of
    lease_ms and each claimed job's own (timeout + 5 s, or 30 s without a timeout)."""
    part = part0(client)
    plain = client.enqueue(QUEUE, "h")
    timed = client.enqueue(QUEUE, "h", timeout=10)
    also = client.enqueue(QUEUE, "h")
    short = client.enqueue(QUEUE, "h")
    assert [job.id for job in claim(client, node="n1")] == [plain.id]
    started = ms(info(client, plain.id).started_at or datetime.min)
    assert lease_end(r, part, "n1") == started + 30_000
    # A claim writes nothing into the record: the claim lives in `running`.
    record = r.hgetall(part.job_key(plain.id))
    assert record[b"s"] == b"Q" and b"c" not in record
    # A job with a timeout shortens the lease of every claim its node holds there.
    first, second = claim(client, max_jobs=2, node="n2")
    assert (first.id, second.id) == (timed.id, also.id)
    started = ms(info(client, timed.id).started_at or datetime.min)
    assert lease_end(r, part, "n2") == started + 15_000
    assert info(client, also.id).lease_ends_at == info(client, timed.id).lease_ends_at
    assert held(r, part, "n2") == {timed.id, also.id}
    # lease_ms bounds it too, and a claim sets the end even when it is earlier.
    (third,) = client.claim_jobs(part, "n1", 1, lease_ms=2_000).jobs
    assert third.id == short.id
    started = ms(info(client, short.id).started_at or datetime.min)
    assert lease_end(r, part, "n1") == started + 2_000
    found = info(client, plain.id)
    assert found.lease_ends_at is not None and ms(found.lease_ends_at) == started + 2_000
    assert held(r, part, "n1") == {plain.id, short.id}
    assert set(running(r, part)) == {plain.id, timed.id, also.id, short.id}
    # A claim of nothing leaves the lease as it was.
    assert claim(client, node="n1") == []
    assert lease_end(r, part, "n1") == started + 2_000
    assert claim(client, node="n3") == [] and lease_end(r, part, "n3") is None


def test_tokens_come_from_the_partition_counter(client: dtaskq.Client) -> None:
    """Unique and increasing within a partition, whatever the job: one count per claim."""
    jobs = client.enqueue_many(QUEUE, [dtaskq.JobSpec("h")] * 5)
    first = claim(client, max_jobs=2)
    second = claim(client, max_jobs=3, node="n2")
    tokens = [job.token for job in first + second]
    assert [job.id for job in first + second] == [job.id for job in jobs]
    assert tokens == sorted(set(tokens)) and tokens[0] >= 1
    assert [info(client, job.id).token for job in jobs] == tokens
    assert {job.attempt for job in first + second} == {1}


def test_a_heartbeat_renews_the_nodes_lease(client: dtaskq.Client, r: redis.Redis) -> None:
    part = part0(client)
    job = client.enqueue(QUEUE, "h", timeout=10)
    unnamed = client.enqueue(QUEUE, "h")
    claimed, other = claim(client, max_jobs=2)
    assert (claimed.id, other.id) == (job.id, unnamed.id)
    before = lease_end(r, part, "n1")
    assert before is not None
    start = server_ms(r)
    assert client.heartbeat_jobs(part, "n1", [(job.id, claimed.token)], lease_ms=20_000) == [HELD]
    stop = server_ms(r)
    after = lease_end(r, part, "n1")
    # One end for all of the node's claims there, those it did not name too.
    assert after is not None and start + 20_000 <= after <= stop + 20_000
    found = info(client, unnamed.id)
    assert found.lease_ends_at is not None and ms(found.lease_ends_at) == after
    # Another node, another token or an unknown job hold nothing; a heartbeat that holds
    # nothing renews nothing and writes nothing.
    answers = client.heartbeat_jobs(part, "n2", [(job.id, claimed.token), ("nothing", 1)])
    assert answers == [LOST, LOST]
    assert lease_end(r, part, "n2") is None
    assert client.heartbeat_jobs(part, "n1", [(job.id, claimed.token + 5)]) == [LOST]
    assert lease_end(r, part, "n1") == after
    # One held claim renews the lease, whatever else the call names.
    answers = client.heartbeat_jobs(part, "n1", [("nothing", 1), (other.id, other.token)])
    assert answers == [LOST, HELD]
    assert (lease_end(r, part, "n1") or 0) > after
    # The lease becomes now + lease_ms, sooner than it was too; once past, a sweep ends it.
    assert client.heartbeat_jobs(part, "n1", [(job.id, claimed.token)], lease_ms=1) == [HELD]
    end = lease_end(r, part, "n1")
    assert end is not None
    until(lambda: server_ms(r) >= end, what="the shortened lease to pass")
    assert client.sweep_jobs(part).reclaimed == 2
    assert client.heartbeat_jobs(part, "n1", [(job.id, claimed.token)]) == [LOST]


def test_a_lost_lease_is_reclaimed_and_fenced(client: dtaskq.Client, r: redis.Redis) -> None:
    part = part0(client)
    job = client.enqueue(QUEUE, "h", timeout=1)
    other = client.enqueue(QUEUE, "h")
    stalled = claim_one(client, node="n1")
    assert (stalled.id, stalled.attempt) == (job.id, 1)
    expire_lease(r, part, "n1")
    sweep = client.sweep_jobs(part)
    assert (sweep.reclaimed, sweep.more) == (1, False)
    found = info(client, job.id)
    assert found.status is JobStatus.QUEUED and found.leases_lost == 1 and found.failures == 0
    # The lost claim is the job's latest, and every trace of it in the partition is gone.
    assert (found.token, found.node, found.attempt) == (stalled.token, "n1", 1)
    assert running(r, part) == {} and held(r, part, "n1") == set()
    assert lease_end(r, part, "n1") is None
    assert client.heartbeat_jobs(part, "n1", [(job.id, stalled.token)]) == [LOST]
    # A report arriving while the job waits again is turned away.
    assert settle(client, [completed(stalled, "stale")], node="n1") == [False]
    # It went back to the front of its lane, and runs again under a newer token; the lost
    # lease counts in the attempt number.
    rerun = claim_one(client, node="n2")
    assert rerun.id == job.id and rerun.token > stalled.token
    assert (rerun.attempt, rerun.failures) == (2, 0)
    assert settle(client, [completed(stalled, "stale")], node="n1") == [False]
    assert info(client, job.id).node == "n2"
    assert settle(client, [completed(rerun, "fresh")], node="n2") == [True]
    # Late reports never overwrite the newer result.
    assert settle(client, [completed(stalled, "stale")], node="n1") == [False]
    assert settle(client, [completed(rerun, "again")], node="n2") == [False]
    assert job.result(timeout=5) == "fresh"
    found = info(client, job.id)
    assert (found.attempt, found.token, found.node) == (2, rerun.token, "n2")
    assert claim_one(client).id == other.id


def test_a_lease_past_its_end_holds_until_a_sweep(client: dtaskq.Client, r: redis.Redis) -> None:
    """Only the sweep ends leases: until one runs, the node's heartbeats and reports count."""
    part = part0(client)
    job = client.enqueue(QUEUE, "h")
    done = client.enqueue(QUEUE, "h")
    first, second = claim(client, max_jobs=2)
    expire_lease(r, part, "n1")
    client.enqueue(QUEUE, "h")
    assert len(claim(client, node="n2")) == 1  # a claim ends no lease
    assert status(client, job.id) is JobStatus.RUNNING
    assert client.heartbeat_jobs(part, "n1", [(first.id, first.token)]) == [HELD]
    assert (lease_end(r, part, "n1") or 0) > server_ms(r)
    expire_lease(r, part, "n1")
    assert settle(client, [completed(second, "in time")]) == [True]
    assert done.result(timeout=5) == "in time"
    assert client.sweep_jobs(part).reclaimed == 1
    assert status(client, job.id) is JobStatus.QUEUED


def test_the_same_node_with_an_old_token_is_fenced(client: dtaskq.Client, r: redis.Redis) -> None:
    job = client.enqueue(QUEUE, "h")
    first = claim_one(client)
    expire_lease(r, part0(client), "n1")
    assert client.sweep_jobs(part0(client)).reclaimed == 1
    second = claim_one(client)
    assert second.id == job.id and second.token > first.token
    assert settle(client, [completed(first, 1), completed(second, 2)]) == [False, True]
    assert job.result(timeout=5) == 2


def test_jobs_that_keep_losing_their_lease_fail(client: dtaskq.Client, r: redis.Redis) -> None:
    job = client.enqueue(QUEUE, "h", max_attempts=100)
    for lost in range(1, 9):
        assert claim_one(client).attempt == lost
        expire_lease(r, part0(client), "n1")
        assert client.sweep_jobs(part0(client)).reclaimed == 1
        assert info(client, job.id).leases_lost == lost
    found = info(client, job.id)
    assert found.status is JobStatus.FAILED and found.error.startswith("LeaseLost:")
    assert (found.failures, found.attempt) == (0, 8)
    assert [dead.id for dead in client.dead_jobs(QUEUE)] == [job.id]
    with pytest.raises(dtaskq.JobFailed, match="LeaseLost"):
        job.result(timeout=5)


def test_a_sweep_is_bounded(client: dtaskq.Client, r: redis.Redis) -> None:
    """The limit counts nodes: each node whose lease ended loses all its claims at once."""
    part = part0(client)
    client.enqueue_many(QUEUE, [dtaskq.JobSpec("h")] * 3)
    nodes = ["n1", "n2", "n3"]
    for node in nodes:
        claim_one(client, node=node)
        expire_lease(r, part, node)
    first = client.sweep_jobs(part, limit=2)
    assert (first.reclaimed, first.more) == (2, True)
    second = client.sweep_jobs(part, limit=2)
    assert (second.reclaimed, second.more, second.wait_ms) == (1, False, None)
    assert r.zcard(f"{part.base}nodes") == 0 and running(r, part) == {}
    assert len(claim(client, max_jobs=3, node="n4")) == 3
    expire_lease(r, part, "n4")
    assert client.sweep_jobs(part, limit=1).reclaimed == 3
    assert held(r, part, "n4") == set() and running(r, part) == {}


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
    part = part0(client)
    expire_lease(r, part, "n1")
    locked = client.sweep_jobs(part, sweeper="s1", lock_ms=60_000)
    assert not locked.locked_out and locked.reclaimed == 1
    claim_one(client)
    expire_lease(r, part, "n1")
    shut = client.sweep_jobs(part, sweeper="s2", lock_ms=60_000)
    assert shut.locked_out and (shut.reclaimed, shut.wait_ms) == (0, None)
    assert status(client, job.id) is JobStatus.RUNNING
    assert client.sweep_jobs(part, sweeper="s1", lock_ms=60_000).reclaimed == 1
    assert 0 < r.pttl(f"{part.base}sweeping") <= 60_000
    # A sweep without a sweeper takes no lock and heeds none.
    claim_one(client)
    expire_lease(r, part, "n1")
    assert client.sweep_jobs(part).reclaimed == 1


def test_a_release_puts_jobs_back_in_front_without_an_attempt(
    client: dtaskq.Client, r: redis.Redis
) -> None:
    job = client.enqueue(QUEUE, "h")  # one attempt only
    later = client.enqueue(QUEUE, "h")
    first = claim_one(client)
    assert first.id == job.id
    part = part0(client)
    assert client.release_jobs(part, "n2", [(job.id, first.token)]) == [False]
    assert client.release_jobs(part, "n1", [(job.id, first.token + 1)]) == [False]
    assert status(client, job.id) is JobStatus.RUNNING
    answers = client.release_jobs(part, "n1", [(job.id, first.token), ("nothing", 1)])
    assert answers == [True, False]
    found = info(client, job.id)
    assert found.status is JobStatus.QUEUED and (found.failures, found.leases_lost) == (0, 0)
    # A release writes no claim into the record, and the node held nothing else there.
    assert (found.attempt, found.token, found.node) == (0, None, None)
    assert running(r, part) == {} and lease_end(r, part, "n1") is None
    assert client.wait_for_jobs([part], 1.0) == part  # the release woke a worker
    again = claim_one(client, node="n2")
    assert again.id == job.id and again.token > first.token
    assert (again.attempt, again.failures) == (first.attempt, 0)
    assert client.release_jobs(part, "n1", [(job.id, first.token)]) == [False]
    assert settle(client, [completed(first, "old")]) == [False]
    assert settle(client, [completed(again, "ok")], node="n2") == [True]
    assert job.result(timeout=5) == "ok"
    assert info(client, job.id).attempt == 1
    assert claim_one(client).id == later.id


def test_a_released_deadline_job_keeps_its_place(client: dtaskq.Client) -> None:
    now = datetime.now(UTC)
    soon = client.enqueue(QUEUE, "h", deadline=now + timedelta(hours=1))
    late = client.enqueue(QUEUE, "h", deadline=now + timedelta(hours=2))
    first = claim_one(client)
    assert first.id == soon.id
    assert client.release_jobs(part0(client), "n1", [(soon.id, first.token)]) == [True]
    assert [job.id for job in claim(client, max_jobs=5)] == [soon.id, late.id]


def test_wake_markers(client: dtaskq.Client) -> None:
    part = part0(client)
    assert client.wait_for_jobs([part], 0.05) is None
    client.enqueue_many(QUEUE, [dtaskq.JobSpec("h")] * 3)
    assert client.wait_for_jobs([part], 1.0) == part
    assert client.wait_for_jobs([part], 0.05) is None  # one marker, however many jobs
    claim(client, max_jobs=1)  # jobs are left: the claim passes the marker on
    assert client.wait_for_jobs([part], 1.0) == part
    claim(client, max_jobs=10)
    assert client.wait_for_jobs([part], 0.05) is None


def test_wait_for_jobs_answers_the_partition_it_woke_for(server_url: str, prefix: str) -> None:
    queue = "spread"
    with dtaskq.Client.from_url(server_url, prefix=prefix, partitions={queue: 4}) as c:
        parts = c.queue_partitions(queue)
        # On a cluster the partitions of one call share a slot: wait on each alone there.
        job = c.enqueue(queue, "h")
        index = partition_of(job.id, 4)
        assert c.wait_for_jobs([parts[index]], 1.0) == parts[index]
        if not is_cluster(server_url):
            c.enqueue(queue, "h", idempotency_key="x")
            woke = c.wait_for_jobs(parts, 1.0)
            assert woke == parts[partition_of("=x", 4)]
            assert c.wait_for_jobs(parts, 0.05) is None


def test_a_retried_claim_answers_the_jobs_it_claimed(client: dtaskq.Client, r: redis.Redis) -> None:
    """A claim whose reply was lost, sent again with the same claimer request id."""
    part = part0(client)
    client.enqueue_many(QUEUE, [dtaskq.JobSpec("h")] * 3)
    call = Call(function("claim_jobs"), [part.lanes_key()], ["n1", "p.7/1", 2, 30_000])
    first = client._execute(call)
    claims = running(r, part)
    assert client._execute(call) == first
    assert len(first[1]) == 2 * 10 and running(r, part) == claims
    # The claimer's next call is a new one.
    later = Call(function("claim_jobs"), [part.lanes_key()], ["n1", "p.7/2", 2, 30_000])
    third = client._execute(later)[1]
    assert len(third) == 10 and third[1] > max(first[1][1], first[1][11])


def test_a_claim_retried_after_a_lost_reply_gets_its_jobs_again(
    lossy: dtaskq.Client, r: redis.Redis
) -> None:
    part = part0(lossy)
    jobs = lossy.enqueue_many(QUEUE, [dtaskq.JobSpec("h")] * 4)
    first = claim(lossy, max_jobs=2)
    lose_next_reply("claim_jobs")
    answer = lossy.claim_jobs(part, "n1", 1, [completed(first[0], "a"), completed(first[1], "b")])
    assert LossyConnection.runs["claim_jobs"] == 2
    # The retry neither settles nor claims again: it answers what the first try did.
    assert answer.settled == [True, True]
    assert [job.id for job in answer.jobs] == [jobs[2].id]
    assert set(running(r, part)) == {jobs[2].id}
    assert [job.result(timeout=5) for job in jobs[:2]] == ["a", "b"]
    (last,) = claim(lossy, max_jobs=5)
    assert last.id == jobs[3].id and last.token > answer.jobs[0].token


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


async def test_the_async_client_runs_jobs(aclient: dtaskq.AsyncClient) -> None:
    await aclient.configure_queue(QUEUE, aging_ms=10)
    jobs = await aclient.enqueue_many(QUEUE, [dtaskq.JobSpec("h", (i,)) for i in range(3)])
    (part,) = await aclient.queue_partitions(QUEUE)
    assert await aclient.wait_for_jobs([part], 1.0) == part
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
    assert await aclient.wait_for_jobs([part], 1.0) == part  # the requeue's marker
    assert await aclient.wait_for_jobs([part], 0.05) is None
