"""Failed attempts, retries and the dead-letter set of a queue (docs/jobs.md, rule J6)."""

from __future__ import annotations

import pytest
import redis
from jobs_support import (
    QUEUE,
    claim,
    claim_one,
    completed,
    failed,
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
from dtaskq import JobSpec, JobStatus, job_ops
from dtaskq.keys import partition_of

DAY_MS = 86_400_000


def test_failed_attempts_are_retried_until_they_run_out(
    client: dtaskq.Client, r: redis.Redis
) -> None:
    job = client.enqueue(QUEUE, "h", max_attempts=3, result_ttl=0)
    first = claim_one(client)
    assert (first.failures, first.max_attempts) == (0, 3)
    # Attempts left and a delay: the job waits in the schedule.
    answer = client.claim_jobs(part0(client), "n1", 1, [failed(first, "boom 1", 60_000)])
    assert answer.settled == [True] and answer.jobs == []
    assert answer.next_due_ms is not None and 50_000 < answer.next_due_ms <= 60_000
    found = info(client, job.id)
    assert found.status is JobStatus.SCHEDULED
    assert (found.failures, found.error, found.attempt) == (1, "boom 1", 1)
    make_due(r, part0(client), job.id)
    second = claim_one(client)
    assert second.token > first.token and (second.attempt, second.failures) == (2, 1)
    # No delay: it is ready again at once.
    assert settle(client, [failed(second, "boom 2")]) == [True]
    found = info(client, job.id)
    assert (found.status, found.failures, found.error) == (JobStatus.QUEUED, 2, "boom 2")
    third = claim_one(client)
    assert third.token > second.token and (third.attempt, third.failures) == (3, 2)
    # The last attempt fails: the job is dead, whatever its result TTL.
    assert settle(client, [failed(third, "boom 3", 60_000)]) == [True]
    found = info(client, job.id)
    assert (found.status, found.failures, found.error) == (JobStatus.FAILED, 3, "boom 3")
    assert found.finished_at is not None
    assert DAY_MS < r.pttl(part0(client).job_key(job.id)) <= 7 * DAY_MS
    (dead,) = client.dead_jobs(QUEUE)
    assert (dead.queue, dead.id, dead.handler) == (QUEUE, job.id, "h")
    assert (dead.error, dead.failures) == ("boom 3", 3)
    assert dead.failed_at == found.finished_at
    with pytest.raises(dtaskq.JobFailed) as caught:
        job.result(timeout=5)
    assert type(caught.value) is dtaskq.JobFailed
    assert caught.value.error == "boom 3" and "boom 3" in str(caught.value)
    assert claim(client) == []


def test_a_final_failure_skips_the_attempts_left(client: dtaskq.Client) -> None:
    job = client.enqueue(QUEUE, "h", max_attempts=5)
    assert settle(client, [failed_for_good(claim_one(client), "no such handler")]) == [True]
    found = info(client, job.id)
    assert (found.status, found.failures, found.error) == (JobStatus.FAILED, 1, "no such handler")
    assert [dead.id for dead in client.dead_jobs(QUEUE)] == [job.id]
    assert claim(client) == []


def test_a_requeued_job_starts_again(client: dtaskq.Client, r: redis.Redis) -> None:
    job = client.enqueue(QUEUE, "h", max_attempts=2, priority=4)
    kept = client.enqueue(QUEUE, "h")
    first = claim_one(client)
    settle(client, [failed_for_good(first)])
    other = claim_one(client)
    settle(client, [failed_for_good(other)])
    assert (first.id, other.id) == (job.id, kept.id)
    assert {dead.id for dead in client.dead_jobs(QUEUE)} == {job.id, kept.id}
    with pytest.raises(dtaskq.JobFailed):
        job.result(timeout=5)
    assert client.requeue_dead(QUEUE, [job.id]) == 1
    found = info(client, job.id)
    assert found.status is JobStatus.QUEUED
    assert (found.failures, found.error, found.finished_at) == (0, "", None)
    assert (found.max_attempts, found.priority, found.attempt) == (2, 4, 0)
    # It keeps the claim of its last attempt.
    assert (found.token, found.node) == (first.token, "n1")
    assert r.pttl(part0(client).job_key(job.id)) == -1
    assert [dead.id for dead in client.dead_jobs(QUEUE)] == [kept.id]
    # It runs with all its attempts again, under a new token.
    again = claim_one(client)
    assert again.id == job.id and again.token > other.token
    assert (again.attempt, again.failures) == (1, 0)
    assert settle(client, [failed(again, "once more")]) == [True]
    last = claim_one(client)
    assert settle(client, [completed(last, "finally")]) == [True]
    assert job.result(timeout=5) == "finally"


def test_a_waiter_of_a_requeued_job_waits_for_its_new_end(
    client: dtaskq.Client, r: redis.Redis
) -> None:
    job = client.enqueue(QUEUE, "h")
    with pytest.raises(dtaskq.JobTimeout):
        job.result(timeout=0)
    settle(client, [failed_for_good(claim_one(client))])
    assert r.exists(part0(client).done_key(job.id))
    client.requeue_dead(QUEUE)
    assert not r.exists(part0(client).done_key(job.id))
    with pytest.raises(dtaskq.JobTimeout):
        job.result(timeout=0.2)


def test_requeue_and_purge_pick_by_id_and_handler(
    client: dtaskq.Client, unchanged: Unchanged
) -> None:
    jobs = client.enqueue_many(QUEUE, [JobSpec(f"h{i % 2}") for i in range(6)])
    client.claim_jobs(
        part0(client), "n1", 0, [failed_for_good(c) for c in claim(client, max_jobs=6)]
    )
    h0 = [job.id for job in jobs[0::2]]
    h1 = [job.id for job in jobs[1::2]]
    # Ids that are not dead letters, or of another handler, are left alone.
    ready = client.enqueue(QUEUE, "h0")
    assert unchanged(client.requeue_dead, QUEUE, [ready.id, "unknown"]) == 0
    assert unchanged(client.purge_dead, QUEUE, [h1[0]], handler="h0") == 0
    assert unchanged(client.requeue_dead, "never-used") == 0
    assert unchanged(client.purge_dead, QUEUE, handler="h2") == 0

    assert client.requeue_dead(QUEUE, handler="h0") == 3
    assert {status(client, i) for i in h0} == {JobStatus.QUEUED}
    assert client.purge_dead(QUEUE, [h1[0], h0[0]]) == 1
    assert status(client, h1[0]) is None
    assert sorted(dead.id for dead in client.dead_jobs(QUEUE)) == sorted(h1[1:])
    assert client.purge_dead(QUEUE) == 2
    assert client.dead_jobs(QUEUE) == []
    assert {status(client, i) for i in h1} == {None}
    assert client.requeue_dead(QUEUE) == 0
    assert len(claim(client, max_jobs=10)) == 4  # h0's three and the ready one


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dead-letter pages of 2 entries, so that a few entries take several calls."""
    monkeypatch.setattr(job_ops, "DEFAULT_DEAD_PAGE", 2)


def test_dead_letters_are_read_and_handled_page_by_page(
    client: dtaskq.Client, small_pages: None
) -> None:
    jobs = client.enqueue_many(QUEUE, [JobSpec(f"h{i % 3}") for i in range(9)])
    for job in jobs:
        settle(client, [failed_for_good(claim_one(client), job.id)])
    dead = client.dead_jobs(QUEUE)
    assert sorted(d.id for d in dead) == sorted(job.id for job in jobs)
    assert all(d.error == d.id for d in dead)
    assert [d.failed_at for d in dead] == sorted(d.failed_at for d in dead)
    assert len(client.dead_jobs(QUEUE, 5)) == 5
    assert client.requeue_dead(QUEUE, handler="h1") == 3
    assert client.purge_dead(QUEUE, handler="h2") == 3
    assert sorted(d.id for d in client.dead_jobs(QUEUE)) == sorted(j.id for j in jobs[0::3])


def keys_of_partition(index: int, count: int, partitions: int = 4) -> list[str]:
    """Idempotency keys whose jobs live in partition ``index``."""
    found: list[str] = []
    n = 0
    while len(found) < count:
        if partition_of(f"=k{n}", partitions) == index:
            found.append(f"k{n}")
        n += 1
    return found


def test_dead_letters_of_every_partition_oldest_first(
    server_url: str, prefix: str, r: redis.Redis
) -> None:
    with dtaskq.Client.from_url(server_url, prefix=prefix, partitions={QUEUE: 4}) as client:
        parts = client.queue_partitions(QUEUE)
        # The oldest dead letters are in partition 2, newer ones in partition 0.
        rounds = [(2, keys_of_partition(2, 2)), (0, keys_of_partition(0, 3))]
        for index, keys in rounds:
            client.enqueue_many(QUEUE, [JobSpec("h", idempotency_key=k) for k in keys])
            jobs = client.claim_jobs(parts[index], "n1", 10).jobs
            assert len(jobs) == len(keys)
            client.claim_jobs(parts[index], "n1", 0, [failed_for_good(j) for j in jobs])
            newest = ms(client.dead_jobs(QUEUE)[-1].failed_at)
            until(lambda: server_ms(r) > newest, what="the next millisecond")  # noqa: B023
        oldest = [f"={k}" for k in rounds[0][1]]
        assert sorted(d.id for d in client.dead_jobs(QUEUE, 2)) == oldest
        everything = client.dead_jobs(QUEUE)
        assert len(everything) == 5
        assert [d.failed_at for d in everything] == sorted(d.failed_at for d in everything)
        assert client.requeue_dead(QUEUE, [f"={k}" for k in rounds[1][1]] + oldest[:1]) == 4
        assert [d.id for d in client.dead_jobs(QUEUE)] == oldest[1:]
