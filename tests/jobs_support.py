"""Helpers of the job tests (tests/test_jobs_*.py): a worker's side of a queue, driven by hand
through the client's own methods, and reads of a partition's keys with the raw client."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgpack
import redis

import dtaskq
from dtaskq.job_models import ClaimedJob, JobInfo, JobStatus
from dtaskq.job_ops import Report
from dtaskq.keys import QueuePartition

QUEUE = "jobs"


def part0(client: dtaskq.Client, queue: str = QUEUE) -> QueuePartition:
    """Partition 0 of a queue (a queue has one partition unless the client says otherwise)."""
    return client.queue_partitions(queue)[0]


def claim(
    client: dtaskq.Client,
    queue: str = QUEUE,
    max_jobs: int = 1,
    node: str = "n1",
    reports: Sequence[Report] = (),
) -> list[ClaimedJob]:
    """The jobs one claim_jobs call hands ``node`` on partition 0 (after applying ``reports``)."""
    return client.claim_jobs(part0(client, queue), node, max_jobs, reports).jobs


def claim_one(client: dtaskq.Client, queue: str = QUEUE, node: str = "n1") -> ClaimedJob:
    """The one job a claim hands out; fails the test when there is none."""
    jobs = claim(client, queue, 1, node)
    assert len(jobs) == 1, "a job should be ready"
    return jobs[0]


def settle(
    client: dtaskq.Client, reports: Sequence[Report], queue: str = QUEUE, node: str = "n1"
) -> list[bool]:
    """Reports attempts without claiming anything; answers which reports were accepted."""
    return client.claim_jobs(part0(client, queue), node, 0, reports).settled


def completed(job: ClaimedJob, value: Any = None) -> Report:
    """The report of an attempt that returned ``value``."""
    return Report(job.id, job.token, "c", msgpack.packb(value, use_bin_type=True))


def failed(job: ClaimedJob, error: str = "boom", delay_ms: int = 0) -> Report:
    """The report of an attempt that failed and may be retried after ``delay_ms``."""
    return Report(job.id, job.token, "f", error.encode(), delay_ms)


def failed_for_good(job: ClaimedJob, error: str = "fatal") -> Report:
    """The report of an attempt that failed and must not be retried."""
    return Report(job.id, job.token, "F", error.encode())


def run_all(
    client: dtaskq.Client, queue: str = QUEUE, node: str = "n1", batch: int = 50
) -> list[str]:
    """Claims every ready job of partition 0 and completes each with its id as result, the
    reports riding on the next claim; answers the ids in claim order."""
    part = part0(client, queue)
    order: list[str] = []
    reports: list[Report] = []
    while True:
        claimed = client.claim_jobs(part, node, batch, reports)
        assert all(claimed.settled)
        if not claimed.jobs:
            return order
        order += [job.id for job in claimed.jobs]
        reports = [completed(job, job.id) for job in claimed.jobs]


def info(client: dtaskq.Client, job_id: str, queue: str = QUEUE) -> JobInfo:
    """A job's record, which must exist."""
    found = client.get_job(queue, job_id)
    assert found is not None, f"job {job_id} should exist"
    return found


def status(client: dtaskq.Client, job_id: str, queue: str = QUEUE) -> JobStatus | None:
    """A job's status; None when it has no record."""
    found = client.get_job(queue, job_id)
    return found.status if found else None


def server_ms(r: redis.Redis) -> int:
    """The server's clock in ms, which every time of a job follows."""
    seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


def ms(when: datetime) -> int:
    """A server time as JobInfo holds it, back in ms."""
    return round(when.timestamp() * 1000)


def make_due(r: redis.Redis, part: QueuePartition, job_id: str) -> None:
    """Moves a scheduled job's due time into the past, as if its delay had passed."""
    assert r.zadd(f"{part.base}scheduled", {job_id: 1}, xx=True, ch=True) == 1


def fill_queue(client: dtaskq.Client, queue: str = QUEUE) -> None:
    """Puts a job of every kind in a queue: queued (``=queued``, awaited), scheduled, running
    on node n1 and dead; its aging is configured."""
    client.enqueue(queue, "h", (1,), idempotency_key="queued")
    client.enqueue(queue, "h", delay=60)
    client.enqueue(queue, "h", priority=3)
    settle(client, [failed_for_good(claim_one(client, queue))], queue)
    client.enqueue(queue, "h", priority=2, timeout=60)
    claim_one(client, queue)
    try:
        client.job(queue, "=queued").result(timeout=0)
    except dtaskq.JobTimeout:
        pass
    else:
        raise AssertionError("the queued job should not have ended")
    client.configure_queue(queue, aging_ms=100)


def expire_lease(r: redis.Redis, part: QueuePartition, node: str = "n1") -> None:
    """Ends a node's lease on its claims in a partition now, as if the node had stalled past
    it (a lease is the node's, one per partition: docs/jobs.md, rule J5)."""
    assert r.zadd(f"{part.base}nodes", {node: 0}, xx=True, ch=True) == 1, f"{node} holds no lease"


def lease_end(r: redis.Redis, part: QueuePartition, node: str = "n1") -> int | None:
    """When a node's lease on its claims in a partition ends (server ms); None: it holds none."""
    score = r.zscore(f"{part.base}nodes", node)
    return None if score is None else int(score)


def held(r: redis.Redis, part: QueuePartition, node: str = "n1") -> set[str]:
    """The ids of the jobs a node holds claims on in a partition."""
    return {i.decode() for i in r.smembers(f"{part.base}held:{node}")}


def running(r: redis.Redis, part: QueuePartition) -> dict[str, str]:
    """The claims of a partition's running jobs: job id -> "<token> <node> <started ms> <result
    ttl ms>"."""
    return {k.decode(): v.decode() for k, v in r.hgetall(f"{part.base}running").items()}


def awaited(r: redis.Redis, part: QueuePartition, job_id: str) -> bool:
    """Whether a caller waits for a job that has not ended (await_job put it in ``waiting``)."""
    return bool(r.sismember(f"{part.base}waiting", job_id))
