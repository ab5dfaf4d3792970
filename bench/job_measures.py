"""The measurements of ``bench/jobs.py``: enqueue rates, burn-down and steady throughput,
start latency and delayed-job lateness."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import redis
from core import (
    Meter,
    Sample,
)
from job_views import (
    delete_queue,
    job_states,
    pending,
    per_job,
    script_calls,
    used_memory,
    wait_drained,
)
from runtime import proc_cpu_s
from stats import percentiles

import dtaskq
from dtaskq import JobSpec
from dtaskq.worker.processes import WorkerProcesses

STEADY_BATCH = 100
IDLE_PAUSE_S = 0.005
"""Pause between two sequential latency jobs, so the worker is back waiting for work."""
RESULT_TIMEOUT_S = 30.0
HANDLERS = {"sync": ("noop", "stamp"), "async": ("noop_async", "stamp_async")}


def bench_enqueue(
    client: dtaskq.Client, r: redis.Redis, prefix: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Single ``enqueue`` calls, then ``enqueue_many``; memory per pending job."""
    noop = HANDLERS[args.handler][0]
    out: dict[str, Any] = {}
    queue = "enqueue-single"
    client.enqueue(queue, noop)  # registers the queue: no measured call pays for it
    calls = script_calls(r)
    with Meter(r) as meter:
        for _ in range(args.single_jobs):
            client.enqueue(queue, noop)
    sample = meter.result()
    out["single"] = {
        "jobs": args.single_jobs,
        "jobs_per_s": args.single_jobs / sample.wall_s,
        "script_calls_per_job": (script_calls(r) - calls) / args.single_jobs,
        "sample": asdict(sample),
        **per_job(sample, args.single_jobs),
    }
    delete_queue(r, prefix, queue)

    queue = "enqueue-many"
    client.enqueue(queue, noop)
    specs = [JobSpec(noop)] * args.jobs
    before = used_memory(r)
    calls = script_calls(r)
    with Meter(r) as meter:
        jobs = client.enqueue_many(queue, specs)
    sample = meter.result()
    grown = used_memory(r) - before
    calls = script_calls(r) - calls
    assert len({j.id for j in jobs}) == args.jobs
    part = client.queue_partitions(queue)
    key = part[0].job_key(jobs[-1].id) if len(part) == 1 else None
    hash_bytes = int(r.memory_usage(key, samples=0) or 0) if key else None
    out["many"] = {
        "jobs": args.jobs,
        "jobs_per_s": args.jobs / sample.wall_s,
        "script_calls_per_job": calls / args.jobs,
        "sample": asdict(sample),
        **per_job(sample, args.jobs),
    }
    out["memory"] = {
        "jobs": args.jobs,
        "used_memory_delta": grown,
        "per_job_used_memory": grown / args.jobs,
        "job_hash_bytes": hash_bytes,
    }
    delete_queue(r, prefix, queue)
    return out


def workers_cpu(workers: WorkerProcesses) -> dict[int, float]:
    """CPU seconds used so far by each live worker, by pid."""
    return {p.pid: proc_cpu_s(p.pid) for p in workers.procs.values() if p.poll() is None}


def start_workers(
    workers: WorkerProcesses, url: str, prefix: str, queue: str, count: int, concurrency: int
) -> float:
    """Starts ``count`` workers serving ``queue``; returns the unix time of the launch."""
    launched = time.time()
    for n in range(1, count + 1):
        node = f"node-{n}"
        options = [
            *("--url", url, "--prefix", prefix, "--queue", queue),
            *("--handlers", "noop_jobs:registry", "--node-id", node),
            *("--concurrency", str(concurrency), "--log-level", "INFO"),
        ]
        workers.start(node, options, {})
    return launched


def bench_burn(
    client: dtaskq.Client,
    r: redis.Redis,
    workers: WorkerProcesses,
    launch: Callable[[], float],
    queue: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Enqueues ``args.jobs`` no-op jobs, starts the workers (``launch()``) and times the
    drain."""
    noop = HANDLERS[args.handler][0]
    jobs = client.enqueue_many(queue, [JobSpec(noop)] * args.jobs)
    ids = [j.id for j in jobs]
    parts = client.queue_partitions(queue)
    calls = script_calls(r)
    with Meter(r) as meter:
        launched = launch()
        drained = wait_drained(r, parts, workers)
        cpu_end = workers_cpu(workers)
    calls = script_calls(r) - calls
    statuses, nodes, firsts = job_states(r, parts, ids)
    assert statuses == Counter({"C": args.jobs}), statuses
    begun = {int(pid): (at, cpu) for pid, at, cpu in firsts}
    if not begun:
        raise RuntimeError("no first-job record: are the workers running bench/noop_jobs.py?")
    first = min(at for at, _ in begun.values())
    # A worker that ran no job: all its CPU counts (start-up included).
    cpu = sum(end - begun.get(pid, (0.0, 0.0))[1] for pid, end in cpu_end.items())
    wall = drained - first
    sample = meter.result()
    sample = Sample(wall, cpu, sample.server_cpu_s, sample.script_s)
    return {
        "jobs": args.jobs,
        "drain_s": wall,
        "jobs_per_s": args.jobs / wall,
        "launch_to_done_s": drained - launched,
        "launch_to_first_job_s": first - launched,
        "workers_with_jobs": len(begun),
        "per_node": dict(sorted(nodes.items())),
        "script_calls_per_job": calls / args.jobs,
        "sample": asdict(sample),
        **per_job(sample, args.jobs),
    }


def bench_steady(
    client: dtaskq.Client,
    r: redis.Redis,
    workers: WorkerProcesses,
    queue: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """A producer keeping up to ``args.backlog`` jobs queued for ``args.duration`` seconds
    while the workers run."""
    noop = HANDLERS[args.handler][0]
    parts = client.queue_partitions(queue)
    batch = [JobSpec(noop)] * STEADY_BATCH
    ids: list[str] = []
    waits = 0
    cpu0 = workers_cpu(workers)
    calls = script_calls(r)
    with Meter(r) as meter:
        end = time.perf_counter() + args.duration
        while time.perf_counter() < end:
            if pending(r, parts)["queued"] >= args.backlog:
                waits += 1
                time.sleep(0.001)
                continue
            ids += [j.id for j in client.enqueue_many(queue, batch)]
        left = pending(r, parts)
        cpu1 = workers_cpu(workers)
    calls = script_calls(r) - calls
    sample = meter.result()
    not_done = left["queued"] + left["scheduled"] + left["running"]
    done = len(ids) - not_done
    wait_drained(r, parts, workers)
    statuses, _, _ = job_states(r, parts, ids)
    assert statuses == Counter({"C": len(ids)}), statuses
    cpu = sum(cpu1[pid] - cpu0.get(pid, 0.0) for pid in cpu1)
    producer = sample.client_cpu_s
    sample = Sample(sample.wall_s, cpu, sample.server_cpu_s, sample.script_s)
    return {
        "duration_s": sample.wall_s,
        "enqueued": len(ids),
        "completed": done,
        "left_at_end": not_done,
        "jobs_per_s": done / sample.wall_s,
        "producer_waits": waits,
        "producer_cpu_us": producer / max(done, 1) * 1e6,
        "script_calls_per_job": calls / max(done, 1),
        "sample": asdict(sample),
        **per_job(sample, max(done, 1)),
    }


def bench_latency(client: dtaskq.Client, queue: str, args: argparse.Namespace) -> dict[str, Any]:
    """Enqueue -> handler start of sequential jobs to idle workers, in seconds."""
    stamp = HANDLERS[args.handler][1]
    client.enqueue(queue, stamp).result(RESULT_TIMEOUT_S)  # the worker's threads are warm
    latencies = []
    for _ in range(args.latency_jobs):
        time.sleep(IDLE_PAUSE_S)
        sent = time.time()
        began = client.enqueue(queue, stamp).result(RESULT_TIMEOUT_S)
        latencies.append(began - sent)
    return percentiles(latencies)


def bench_delayed(client: dtaskq.Client, queue: str, args: argparse.Namespace) -> dict[str, Any]:
    """How late after their due time (``run_at``, server time) delayed jobs begin: in the
    handler (``handler``) and at the claim (``claim``, the server's ``started_at``)."""
    stamp = HANDLERS[args.handler][1]
    handler, claim = [], []
    for _ in range(args.delayed_jobs):
        job = client.enqueue(queue, stamp, delay=args.delay)
        began = job.result(RESULT_TIMEOUT_S + args.delay)
        info = job.info()
        assert info is not None and info.run_at is not None and info.started_at is not None
        handler.append(began - info.run_at.timestamp())
        claim.append((info.started_at - info.run_at).total_seconds())
    return {"delay_s": args.delay, "handler": percentiles(handler), "claim": percentiles(claim)}
