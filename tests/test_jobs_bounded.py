"""Nothing grows without bound: after 100 000 jobs have been enqueued and run, every key a
job left behind expires, and the keys without a TTL (the queue's indexes and options) are as
many as after a handful of jobs."""

from __future__ import annotations

import redis
from support import one_server

import dtaskq
from dtaskq import JobSpec
from dtaskq.job_ops import Report

CLAIM = 1000


def drain(client: dtaskq.Client, queue: str) -> int:
    """Runs every ready job of the queue through claims of up to CLAIM jobs, each call
    reporting the jobs the previous one claimed as completed; the number of jobs run."""
    ran = 0
    for part in client.queue_partitions(queue):
        reports: list[Report] = []
        while True:
            claim = client.claim_jobs(part, "n1", CLAIM, reports)
            assert all(claim.settled)
            reports = [Report(job.id, job.token, "c", b"\xc0") for job in claim.jobs]
            ran += len(claim.jobs)
            if not reports:
                break
    return ran


def keys_without_ttl(r: redis.Redis, prefix: str) -> list[bytes]:
    """Every key under ``prefix`` that has no TTL."""
    names = list(r.scan_iter(match=f"*{prefix}*", count=10_000))
    pipe = r.pipeline(transaction=False)
    for name in names:
        pipe.pttl(name)
    return sorted(name for name, ttl in zip(names, pipe.execute(), strict=True) if ttl == -1)


# The same functions run on every server kind, and tests/test_jobs_keys.py checks on each that
# every key a job leaves expires and that the keys without a TTL are the same for 30 jobs as
# for 300: the scale of this run needs one server.
@one_server
def test_a_hundred_thousand_jobs_leave_only_keys_that_expire(
    client: dtaskq.Client, r: redis.Redis, prefix: str, namespace: str
) -> None:
    few = client.enqueue_many(namespace, [JobSpec("noop", (i,)) for i in range(10)])
    assert drain(client, namespace) == len(few)
    after_few = keys_without_ttl(r, prefix)
    specs = [JobSpec("noop", (i,), result_ttl=600) for i in range(100_000)]
    for start in range(0, len(specs), 10_000):
        client.enqueue_many(namespace, specs[start : start + 10_000])
    assert drain(client, namespace) == len(specs)
    assert keys_without_ttl(r, prefix) == after_few
    # Those keys are the queue's registry and the partition's indexes, whatever the job count.
    kinds = {name.decode().rsplit(":", 1)[-1] for name in after_few}
    assert kinds <= {"queues", "seq", "lanes", "scheduled", "dead", "wake", "conf", "answers"}
