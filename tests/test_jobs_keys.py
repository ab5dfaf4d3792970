"""The keys of job queues: the names the job functions write are those ``dtaskq/keys.py``
documents, every per-job key expires, and a queue's partitions spread its jobs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from jobs_support import (
    claim,
    claim_one,
    completed,
    failed,
    failed_for_good,
    part0,
    run_all,
    settle,
)
from redis.crc import key_slot
from support import is_cluster

import dtaskq
from dtaskq import JobSpec, JobStatus
from dtaskq.keys import QUEUE_KEY_KINDS, QueuePartition, partition_of, queues_key

LUA = Path(__file__).resolve().parent.parent / "lua"
JOB_LUA = [LUA / "include" / "jobs.lua"] + [
    p for p in LUA.glob("*.lua") if "job" in p.stem or p.stem in ("handle_dead", "configure_queue")
]
PLACEHOLDERS = {
    "<id>": r"[^\s{}]+",
    "<priority>": r"-?(?:0|[1-9]\d*)",
    "<node>": r"[^\s{}]+",
    "<request id>": r"[^\s{}]{1,100}",
}
ABBREVIATED = {"<priority>": "<prio>", "<request id>": "<rid>"}
"""The placeholders the QueuePartition docstring shortens to fit its columns."""


def kind_pattern(kind: str) -> str:
    for placeholder, pattern in PLACEHOLDERS.items():
        kind = kind.replace(placeholder, pattern)
    return kind


def queue_key(prefix: str) -> re.Pattern[str]:
    """Any key of a queue partition, split into queue, partition and kind."""
    kinds = "|".join(f"(?:{kind_pattern(k)})" for k in QUEUE_KEY_KINDS)
    return re.compile(rf"\{{{re.escape(prefix)}:q:([\w.-]+):(\d+)\}}:({kinds})")


def kind_of(key: str) -> str:
    """The documented kind of a key's tail: ``job:<id>`` for ``job:x1``."""
    for kind in QUEUE_KEY_KINDS:
        if re.fullmatch(kind_pattern(kind), key):
            return kind
    raise AssertionError(f"{key} is of no documented kind")


def test_the_documented_kinds_agree() -> None:
    """QUEUE_KEY_KINDS, the QueuePartition docstring and the Lua that names the keys."""
    doc = QueuePartition.__doc__ or ""
    documented = re.findall(r"\{<prefix>:q:<queue>:<p>\}:(\S+)", doc)
    kinds = list(QUEUE_KEY_KINDS)
    for placeholder, short in ABBREVIATED.items():
        kinds = [k.replace(placeholder, short) for k in kinds]
    assert documented == kinds
    named: set[str] = set()
    for path in JOB_LUA:
        text = path.read_text()
        named |= set(re.findall(r"base \.\. '([a-z]+:?)'", text))
    assert named == {k.split("<")[0] for k in QUEUE_KEY_KINDS}


def test_the_functions_write_only_documented_keys(
    client: dtaskq.Client, r: redis.Redis, prefix: str
) -> None:
    q = "keyed"
    soon = datetime.now(UTC) + timedelta(hours=1)
    client.configure_queue(q, aging_ms=500)
    ended = client.enqueue(q, "h", idempotency_key="ended", priority=9)
    with pytest.raises(dtaskq.JobTimeout):
        ended.result(timeout=0)
    settle(client, [completed(claim_one(client, q), "r")], q)
    client.enqueue(q, "h", priority=8)
    settle(client, [failed_for_good(claim_one(client, q))], q)
    running = client.enqueue(q, "h", priority=7)
    claimed = claim_one(client, q)
    assert client.heartbeat_jobs(part0(client, q), "n1", [(running.id, claimed.token)]) == [0]
    with pytest.raises(dtaskq.JobTimeout):
        running.result(timeout=0)  # awaited while it runs
    client.enqueue_many(
        q,
        [
            JobSpec("h"),
            JobSpec("h", priority=-3),
            JobSpec("h", deadline=soon),
            JobSpec("h", priority=-3, deadline=soon),
            JobSpec("h", delay=600),
        ],
    )
    client.sweep_jobs(part0(client, q), sweeper="s1", lock_ms=60_000)
    part = part0(client, q)

    keys = {k.decode() for k in r.scan_iter(match=f"*{prefix}*", count=1000)}
    assert queues_key(prefix) in keys
    pattern = queue_key(prefix)
    kinds = set()
    for key in keys - {queues_key(prefix)}:
        match = pattern.fullmatch(key)
        assert match is not None, f"{key} is not a documented queue key"
        assert match.group(1, 2) == (q, "0")
        kinds.add(kind_of(match.group(3)))
    # The scenario left a key of every kind, so each kind's name was checked.
    assert kinds == set(QUEUE_KEY_KINDS)
    for made in (
        part.lanes_key(),
        part.wake_key(),
        part.job_key(ended.id),
        part.done_key(ended.id),
        part.running_key(),
        f"{part.base}held:n1",
        f"{part.base}nodes",
        f"{part.base}seq",
        f"{part.base}waiting",
    ):
        assert made in keys
    assert {f"{part.base}ready:0", f"{part.base}ready:-3"} <= keys
    assert {f"{part.base}due:0", f"{part.base}due:-3"} <= keys


def run_queue(client: dtaskq.Client, queue: str, count: int) -> None:
    """``count`` jobs of every kind, run to their end."""
    soon = datetime.now(UTC) + timedelta(hours=1)
    specs = [
        JobSpec(
            "h",
            (i,),
            priority=i % 5 - 2,
            deadline=soon if i % 3 == 0 else None,
            idempotency_key=f"k{i}" if i % 4 == 0 else None,
            max_attempts=2,
            result_ttl=3600 if i % 2 else 0.0,
        )
        for i in range(count)
    ]
    jobs = client.enqueue_many(queue, specs)
    for job in jobs[::10]:  # awaited jobs push an end marker
        with pytest.raises(dtaskq.JobTimeout):
            job.result(timeout=0)
    for job in jobs[5::10]:
        job.cancel()
    # A few fail for good, a few fail once and are retried.
    first = claim(client, queue, max_jobs=20)
    reports = [failed_for_good(j) for j in first[:3]] + [failed(j) for j in first[3:8]]
    reports += [completed(j, j.id) for j in first[8:]]
    settle(client, reports, queue)
    run_all(client, queue)
    client.sweep_jobs(part0(client, queue))
    statuses = {s for job in jobs if (s := job.status()) is not None}
    assert statuses <= {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}


def persistent(r: redis.Redis, prefix: str, queue: str) -> list[str]:
    """The keys of a queue that never expire, with the queue's name left out; checks that every
    per-job key expires."""
    found = []
    for raw in r.scan_iter(match=f"{{{prefix}:q:{queue}:*", count=1000):
        key = raw.decode()
        kind = kind_of(key.split("}:", 1)[1])
        ttl = r.pttl(raw)
        if ttl == -2:
            continue  # an end marker that expired since the scan
        if kind in ("job:<id>", "done:<id>"):
            assert ttl > 0, f"{key} never expires"
        elif kind == "req:<request id>":
            assert 0 < ttl <= 60_000, f"{key} is kept {ttl} ms, not at most a minute"
        elif ttl == -1:
            found.append(key.replace(queue, "<queue>", 1))
    return sorted(found)


def test_per_job_keys_expire(client: dtaskq.Client, r: redis.Redis, prefix: str) -> None:
    run_queue(client, "small", 30)
    run_queue(client, "large", 300)
    small = persistent(r, prefix, "small")
    assert small == persistent(r, prefix, "large")
    fixed = {"lanes", "ready:<priority>", "due:<priority>", "scheduled", "dead", "wake", "conf"}
    fixed |= {"running", "nodes", "held:<node>", "seq", "waiting", "answers"}
    assert {kind_of(key.split("}:", 1)[1]) for key in small} <= fixed
    # Every job ended: no claim, lease or waiter is left, only the keys of the partition
    # (the dead-letter set, the wake marker, the answers of claims and the token counter).
    assert {key.split("}:", 1)[1] for key in small} == {"dead", "wake", "answers", "seq"}


# --- partitions ----------------------------------------------------------------------------


def test_jobs_spread_over_partitions(server_url: str, prefix: str, r: redis.Redis) -> None:
    queue = "spread"
    with dtaskq.Client.from_url(server_url, prefix=prefix, partitions={queue: 4}) as client:
        jobs = client.enqueue_many(queue, [JobSpec("h", (i,)) for i in range(40)])
        keyed = client.enqueue(queue, "h", idempotency_key="one")
        parts = client.queue_partitions(queue)
        assert [p.index for p in parts] == [0, 1, 2, 3]
        by_partition = {
            p.index: [j.id for j in jobs if partition_of(j.id, 4) == p.index] for p in parts
        }
        assert sum(1 for ids in by_partition.values() if ids) > 1
        for job in [*jobs, keyed]:
            found = client.get_job(queue, job.id)
            assert found is not None and found.status is JobStatus.QUEUED
            index = partition_of(job.id, 4)
            assert r.exists(parts[index].job_key(job.id))
        if is_cluster(server_url):
            assert len({key_slot(p.lanes_key().encode()) for p in parts}) > 1
        # Each partition hands out its own jobs, in its own order.
        for part in parts:
            claimed = client.claim_jobs(part, "n1", 100).jobs
            expected = by_partition[part.index]
            if partition_of(keyed.id, 4) == part.index:
                expected = [*expected, keyed.id]
            assert [c.id for c in claimed] == expected
            assert {c.partition for c in claimed} <= {part.index}
            answer = client.claim_jobs(part, "n1", 0, [completed(c, c.id) for c in claimed])
            assert all(answer.settled)
        assert [job.result(timeout=5) for job in jobs] == [job.id for job in jobs]
        # The count is fixed at the queue's first use, whatever a later client asks.
        with dtaskq.Client.from_url(server_url, prefix=prefix, partitions={queue: 2}) as later:
            assert len(later.queue_partitions(queue)) == 4
            assert later.get_job(queue, keyed.id) is not None
            assert not later.enqueue(queue, "h", idempotency_key="one").created
            later.configure_queue(queue, aging_ms=5)
        for part in parts:
            assert r.hget(f"{part.base}conf", "aging") == b"5"


@pytest.mark.parametrize("count", [1, 1300], ids=["one", "many-round-trips"])
async def test_async_batches_over_partitions(server_url: str, prefix: str, count: int) -> None:
    """1300 jobs over 4 partitions take 16 calls of up to 100 jobs: two pipelines."""
    queue = "spread"
    async with dtaskq.AsyncClient.from_url(
        server_url, prefix=prefix, partitions={queue: 4}
    ) as client:
        specs = [JobSpec("h", (i,), idempotency_key=f"k{i}") for i in range(count)]
        jobs = await client.enqueue_many(queue, specs)
        assert [job.id for job in jobs] == [f"=k{i}" for i in range(count)]
        assert all(job.created for job in jobs)
        again = await client.enqueue_many(queue, specs[::-1])
        assert [job.id for job in again] == [f"=k{i}" for i in reversed(range(count))]
        assert not any(job.created for job in again)
        claimed = 0
        for part in await client.queue_partitions(queue):
            claimed += len((await client.claim_jobs(part, "n1", 1000)).jobs)
        assert claimed == count
        last = await client.get_job(queue, jobs[-1].id)
        assert last is not None and last.status is JobStatus.RUNNING
