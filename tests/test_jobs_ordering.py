"""The order claims hand jobs out in: priority, deadlines first and earliest deadline first
within a priority, FIFO otherwise, and aging (docs/jobs.md, rules J3-J4); missed deadlines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
from jobs_support import QUEUE, claim, completed, info, ms, part0, server_ms, settle, status
from waiting import until

import dtaskq
from dtaskq import JobSpec, JobStatus

HOUR = timedelta(hours=1)


def claim_order(client: dtaskq.Client, one_by_one: bool = True, queue: str = QUEUE) -> list[str]:
    """Claims every ready job: one per call, or all in one call; answers their ids in order."""
    if not one_by_one:
        return [job.id for job in claim(client, queue, max_jobs=1000)]
    order = []
    while jobs := claim(client, queue):
        order.append(jobs[0].id)
    return order


@pytest.mark.parametrize("one_by_one", [True, False], ids=["one-by-one", "batch"])
def test_higher_priorities_first_then_fifo(client: dtaskq.Client, one_by_one: bool) -> None:
    priorities = [0, 5, -3, 5, 2, 1000, -1000, 0, 2]
    # One call: every job has the same enqueue time, so only priorities order them.
    jobs = client.enqueue_many(QUEUE, [JobSpec("h", priority=p) for p in priorities])
    expected = [jobs[i].id for i in sorted(range(len(jobs)), key=lambda i: -priorities[i])]
    assert claim_order(client, one_by_one) == expected


def test_fifo_within_a_priority(client: dtaskq.Client, r: redis.Redis) -> None:
    ids = [client.enqueue(QUEUE, "h", (i,)).id for i in range(20)]
    assert claim_order(client) == ids
    assert not r.exists(part0(client).lanes_key())


@pytest.mark.parametrize("one_by_one", [True, False], ids=["one-by-one", "batch"])
def test_deadlines_first_and_earliest_first(client: dtaskq.Client, one_by_one: bool) -> None:
    now = datetime.now(UTC)
    specs = {
        "plain-a": JobSpec("h"),
        "due-3h": JobSpec("h", deadline=now + 3 * HOUR),
        "high": JobSpec("h", priority=1),
        "due-1h": JobSpec("h", deadline=now + HOUR),
        "plain-b": JobSpec("h"),
        "due-2h": JobSpec("h", deadline=now + 2 * HOUR),
        "low-due": JobSpec("h", priority=-1, deadline=now + HOUR / 2),
        "high-due-2h": JobSpec("h", priority=1, deadline=now + 2 * HOUR),
    }
    jobs = dict(zip(specs, client.enqueue_many(QUEUE, list(specs.values())), strict=True))
    order = ["high-due-2h", "high", "due-1h", "due-2h", "due-3h", "plain-a", "plain-b", "low-due"]
    assert claim_order(client, one_by_one) == [jobs[name].id for name in order]


def wait_past(r: redis.Redis, ms_: int) -> None:
    """Waits until the server's clock has passed ``ms_``."""
    until(lambda: server_ms(r) > ms_, what=f"the server clock to pass {ms_}")


def test_a_job_that_waited_long_enough_overtakes_higher_priorities(
    client: dtaskq.Client, r: redis.Redis
) -> None:
    client.configure_queue(QUEUE, aging_ms=50)
    low = client.enqueue(QUEUE, "h", priority=0)
    # One priority step is worth 50 ms of waiting: jobs one step higher enqueued over 50 ms
    # after it must not overtake it (however slowly this machine runs: later only helps).
    wait_past(r, ms(info(client, low.id).enqueued_at) + 100)
    high = [client.enqueue(QUEUE, "h", priority=1).id for _ in range(3)]
    assert claim_order(client) == [low.id, *high]


def test_without_aging_priority_wins(client: dtaskq.Client, r: redis.Redis) -> None:
    client.configure_queue(QUEUE, aging_ms=86_400_000)
    low = client.enqueue(QUEUE, "h", priority=0)
    wait_past(r, ms(info(client, low.id).enqueued_at) + 100)
    high = [client.enqueue(QUEUE, "h", priority=1).id for _ in range(3)]
    assert claim_order(client) == [*high, low.id]


def test_aging_is_per_queue(client: dtaskq.Client, r: redis.Redis) -> None:
    client.configure_queue("other", aging_ms=1)
    client.configure_queue(QUEUE, aging_ms=86_400_000)
    low = client.enqueue(QUEUE, "h", priority=0)
    other_low = client.enqueue("other", "h", priority=0)
    wait_past(r, max(ms(info(client, low.id).enqueued_at) + 100, server_ms(r) + 100))
    high = client.enqueue(QUEUE, "h", priority=1)
    other_high = client.enqueue("other", "h", priority=1)
    assert claim_order(client) == [high.id, low.id]
    assert claim_order(client, queue="other") == [other_low.id, other_high.id]


# Rounds of enqueues, each a few ms after the one before: priorities of each round's jobs.
ROUNDS = [[0, 0], [1, 0], [3, 2], [1, 3], [0, 2, 1], [3], [2, 0]]
AGING_MS = 20
GAP_MS = 25  # over one priority step: a round's lower jobs beat the next round's higher ones


@pytest.mark.parametrize("one_by_one", [True, False], ids=["one-by-one", "batch"])
def test_the_aging_bound(client: dtaskq.Client, r: redis.Redis, one_by_one: bool) -> None:
    """Every job claimed before a job J was enqueued before J's enqueue time plus aging_ms
    for each priority step it has over J (configure_queue's promise)."""
    client.configure_queue(QUEUE, aging_ms=AGING_MS)
    for priorities in ROUNDS:
        client.enqueue_many(QUEUE, [JobSpec("h", priority=p) for p in priorities])
        wait_past(r, server_ms(r) + GAP_MS)
    jobs = {job_id: info(client, job_id) for job_id in claim_order(client, one_by_one)}
    assert len(jobs) == sum(map(len, ROUNDS))
    order = list(jobs.values())
    for j, late in enumerate(order):
        for early in order[:j]:
            bound = ms(late.enqueued_at) + (early.priority - late.priority) * AGING_MS
            assert ms(early.enqueued_at) <= bound, (early, late)
    # Aging did reorder: some lower-priority job went before a higher one.
    assert any(a.priority < b.priority for i, a in enumerate(order) for b in order[i + 1 :])


# --- missed deadlines ------------------------------------------------------------------------


def test_a_claim_settles_jobs_whose_deadline_passed(client: dtaskq.Client, r: redis.Redis) -> None:
    past = datetime.now(UTC) - HOUR
    failing = client.enqueue(QUEUE, "h", deadline=past)
    dropped = client.enqueue(QUEUE, "h", deadline=past, on_deadline="drop")
    ready = client.enqueue(QUEUE, "h")
    assert [job.id for job in claim(client, max_jobs=10)] == [ready.id]
    found = info(client, failing.id)
    assert found.status is JobStatus.FAILED and found.attempt == 0
    assert found.error.startswith("DeadlineExceeded:")
    assert found.finished_at is not None
    assert client.get_job(QUEUE, dropped.id) is None
    # A missed deadline is not a dead letter: the job never ran.
    assert client.dead_jobs(QUEUE) == []
    with pytest.raises(dtaskq.DeadlineExceeded) as caught:
        failing.result(timeout=5)
    assert caught.value.error == found.error and caught.value.job_id == failing.id
    assert isinstance(caught.value, dtaskq.JobFailed)
    with pytest.raises(dtaskq.JobNotFound):
        dropped.result(timeout=5)
    assert 0 < r.pttl(part0(client).job_key(failing.id)) <= 86_400_000


def test_a_sweep_settles_missed_deadlines(client: dtaskq.Client, r: redis.Redis) -> None:
    now = server_ms(r)
    soon = datetime.fromtimestamp((now + 300) / 1000, UTC)
    failing = client.enqueue(QUEUE, "h", deadline=soon, priority=2)
    dropped = client.enqueue(QUEUE, "h", deadline=soon, on_deadline="drop", priority=-2)
    later = client.enqueue(QUEUE, "h", deadline=datetime.now(UTC) + HOUR)
    wait_past(r, now + 300)
    sweep = client.sweep_jobs(part0(client))
    assert (sweep.expired, sweep.more) == (2, False)
    assert status(client, failing.id) is JobStatus.FAILED
    assert status(client, dropped.id) is None
    assert status(client, later.id) is JobStatus.QUEUED
    lanes = r.zrange(part0(client).lanes_key(), 0, -1)
    assert lanes == [b"d0"], "emptied deadline lanes leave the lane index"
    assert [job.id for job in claim(client, max_jobs=10)] == [later.id]


def test_a_deadline_only_bounds_the_start(client: dtaskq.Client, r: redis.Redis) -> None:
    job = client.enqueue(QUEUE, "h", deadline=datetime.now(UTC) + HOUR)
    (claimed,) = claim(client)
    r.hset(part0(client).job_key(job.id), "d", 1)  # the deadline passes while it runs
    assert settle(client, [completed(claimed, "done")]) == [True]
    assert job.result(timeout=5) == "done"
