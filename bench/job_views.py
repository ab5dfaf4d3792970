"""Server-side views of a benchmark queue for ``bench/jobs.py``: what is left to run, the
state of every job, and what Redis counted."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgpack
import redis
from core import (
    Sample,
    delete_matching,
)

from dtaskq.keys import QueuePartition, partition_of
from dtaskq.worker.processes import WorkerProcesses

# -- server-side views of a queue ----------------------------------------------------------------

POLL_S = 0.01
"""How often the drain is checked: the end of a drain is known to within this."""
DEADLINE_S = 600.0


def pending(r: redis.Redis, parts: Sequence[QueuePartition]) -> dict[str, int]:
    """Jobs of the queue that have not ended: ``queued`` (priority-0 lane: every job of this
    benchmark), ``lanes`` (non-empty lanes of any priority), ``scheduled`` and ``running``
    (the claims index: claimed, and not yet reported by the worker), in one round trip."""
    pipe = r.pipeline(transaction=False)
    for part in parts:
        pipe.llen(f"{part.base}ready:0")
        pipe.zcard(f"{part.base}lanes")
        pipe.zcard(f"{part.base}scheduled")
        pipe.hlen(f"{part.base}running")
    replies = pipe.execute()
    names = ("queued", "lanes", "scheduled", "running")
    return {name: sum(replies[i::4]) for i, name in enumerate(names)}


def wait_drained(
    r: redis.Redis, parts: Sequence[QueuePartition], workers: WorkerProcesses | None = None
) -> float:
    """Polls until no job of the queue is queued, scheduled or running; returns the unix time
    it saw that. Raises RuntimeError if a worker exits or the deadline passes."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        left = pending(r, parts)
        if not (left["lanes"] or left["scheduled"] or left["running"]):
            return time.time()
        if workers is not None:
            for node, proc in workers.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {node} exited:\n{workers.log_tail(node)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs left after {DEADLINE_S:g} s: {left}")
        time.sleep(POLL_S)


def job_states(
    r: redis.Redis, parts: Sequence[QueuePartition], ids: Sequence[str]
) -> tuple[Counter[str], Counter[str], list[Any]]:
    """Reads the record of every job: counts by status letter and by node, and the results
    that are not None (the first-job records of ``noop_jobs``)."""
    statuses: Counter[str] = Counter()
    nodes: Counter[str] = Counter()
    results: list[Any] = []
    for start in range(0, len(ids), 1000):
        pipe = r.pipeline(transaction=False)
        for job_id in ids[start : start + 1000]:
            pipe.hmget(parts[partition_of(job_id, len(parts))].job_key(job_id), "s", "c", "o")
        for status, claim, result in pipe.execute():
            statuses[status.decode() if status else "missing"] += 1
            # The latest claim: "<token> <node> <started ms> <result ttl ms>".
            nodes[claim.split(b" ")[1].decode() if claim else "-"] += 1
            if result is not None and result != b"\xc0":
                results.append(msgpack.unpackb(result))
    return statuses, nodes, results


def delete_queue(r: redis.Redis, prefix: str, queue: str) -> None:
    """Deletes every key of a queue's partitions."""
    delete_matching(r, f"{{{prefix}:q:{queue}:*")


def used_memory(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


def script_calls(r: redis.Redis) -> int:
    """Function and script calls the server has run (INFO commandstats)."""
    stats = r.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{c}", {}).get("calls", 0))
        for c in ("fcall", "fcall_ro", "evalsha", "eval")
    )


# -- measures -----------------------------------------------------------------------------------


def per_job(sample: Sample, jobs: int) -> dict[str, float]:
    """A sample's costs per job, in microseconds."""
    return {
        "redis_cpu_us": sample.server_cpu_s / jobs * 1e6,
        "redis_script_us": sample.script_s / jobs * 1e6,
        "client_cpu_us": sample.client_cpu_s / jobs * 1e6,
    }
