"""Benchmark of jobs: enqueue rates, burn-down and steady throughput of real ``dtaskq worker``
processes, start latency, delayed-job lateness, and what each job costs Redis and the workers.

Against an embedded server (or ``--url``, or ``$DTASKQ_REDIS_URL``, under a key prefix of its
own that is deleted afterwards), with the no-op handlers of ``bench/noop_jobs.py``:

(enqueue) ``--single-jobs`` jobs with one ``enqueue`` call each, then ``--jobs`` jobs with
    ``enqueue_many``, from one sync client: jobs/s, Redis CPU and script time, the client's
    CPU; Redis memory per pending job (``used_memory`` before and after the ``enqueue_many``,
    and ``MEMORY USAGE`` of one job's hash);
and for every ``--workers`` x ``--concurrency`` pair, with fresh worker processes:
(burn) ``--jobs`` no-op jobs enqueued with ``enqueue_many``, then the workers are started and
    the drain is timed until no job is queued, scheduled or running (a server-side check of
    the partition's lanes, schedule and lease index every ``POLL_S``); then every job's record
    is read and must be COMPLETED. The drain is timed from the first job begun (each worker
    process's first job returns when it began and the CPU it had used by then), and also from
    the workers' launch; the workers' CPU per job is their CPU at the end less what they had
    used when their first job began (start-up);
(steady) a producer enqueues batches of 100 with ``enqueue_many``, keeping up to
    ``--backlog`` jobs queued, for ``--duration`` seconds while the workers run: jobs
    completed in that time per second (enqueued less still queued or running at the end);
(latency) ``--latency-jobs`` jobs one after another to the idle workers: from just before the
    ``enqueue`` call to the handler's first line (``time.time()`` in both processes);
(delayed) ``--delayed-jobs`` jobs with ``delay=--delay``, one after another: how late after
    its due time (the ``run_at`` the server stored) each handler began.

With ``--peer huey`` (huey installed in the interpreter of ``--peer-python``), the same
measures of huey's ``RedisHuey`` (``bench/huey_peer.py``) on the same server follow, reported
apart. Prints a table (``--json``: also the report as JSON) and stores the report in
``bench/results/jobs.json`` under the server kind.

Run from the repository root: ``python bench/jobs.py [--quick] [--server redis|valkey]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import msgpack
import redis
from core import (
    Meter,
    Sample,
    delete_prefix,
    describe_version,
    markdown,
    new_parser,
    parse,
    positive,
    publish,
    run_report,
    server,
)
from runtime import proc_cpu_s
from stats import percentiles

import dtaskq
from dtaskq import JobSpec
from dtaskq.keys import QueuePartition, partition_of
from dtaskq.worker.processes import WorkerProcesses

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "jobs.json"
POLL_S = 0.01
"""How often the drain is checked: the end of a drain is known to within this."""
DEADLINE_S = 600.0
STOP_TIMEOUT_S = 30.0
STEADY_BATCH = 100
IDLE_PAUSE_S = 0.005
"""Pause between two sequential latency jobs, so the worker is back waiting for work."""
RESULT_TIMEOUT_S = 30.0
MODES = ("enqueue", "burn", "steady", "latency", "delayed")
QUICK = {
    "jobs": 500,
    "single_jobs": 200,
    "workers": [1],
    "concurrency": [4],
    "duration": 0.5,
    "latency_jobs": 20,
    "delayed_jobs": 3,
}
DEFAULTS = {
    "jobs": 20_000,
    "single_jobs": 5_000,
    "workers": [1, 2],
    "concurrency": [8, 100],
    "duration": 5.0,
    "latency_jobs": 300,
    "delayed_jobs": 30,
}
HANDLERS = {"sync": ("noop", "stamp"), "async": ("noop_async", "stamp_async")}


# -- server-side views of a queue ----------------------------------------------------------------


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
    batch: list[bytes] = []
    for key in r.scan_iter(match=f"{{{prefix}:q:{queue}:*", count=1000):
        batch.append(key)
        if len(batch) == 1000:
            r.unlink(*batch)
            batch = []
    if batch:
        r.unlink(*batch)


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


def run_config(
    client: dtaskq.Client,
    r: redis.Redis,
    url: str,
    prefix: str,
    count: int,
    concurrency: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Every worker measure with ``count`` fresh workers of ``concurrency`` slots."""
    queue = f"jobs-{count}x{concurrency}"
    out: dict[str, Any] = {"workers": count, "concurrency": concurrency}
    path = os.pathsep.join(p for p in (str(BENCH), os.environ.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "dtaskq", "worker"]
    with WorkerProcesses(command, {"PYTHONPATH": path}) as workers:

        def launch() -> float:
            return start_workers(workers, url, prefix, queue, count, concurrency)

        if "burn" in args.modes:
            print(f"  burn-down of {args.jobs} jobs ...", flush=True)
            out["burn"] = bench_burn(client, r, workers, launch, queue, args)
        else:
            launch()
        workers.wait_started(30.0)
        if "steady" in args.modes:
            print(f"  steady for {args.duration:g} s ...", flush=True)
            out["steady"] = bench_steady(client, r, workers, queue, args)
        if "latency" in args.modes:
            print(f"  latency of {args.latency_jobs} jobs ...", flush=True)
            out["latency"] = bench_latency(client, queue, args)
        if "delayed" in args.modes:
            print(f"  {args.delayed_jobs} delayed jobs ...", flush=True)
            out["delayed"] = bench_delayed(client, queue, args)
        workers.stop(STOP_TIMEOUT_S)
        out["exits"] = workers.exits
    delete_queue(r, prefix, queue)
    return out


@contextlib.contextmanager
def server_for(args: argparse.Namespace) -> Iterator[tuple[str, dict[str, Any]]]:
    """``--url``, else what ``core.server`` finds (``$DTASKQ_REDIS_URL`` or an embedded one)."""
    if args.url:
        with redis.Redis.from_url(args.url) as r:
            yield args.url, {"kind": "external", "version": describe_version(r), "binary": None}
        return
    with server(args.server) as found:
        yield found


def run_peer(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Runs ``bench/huey_peer.py`` with ``--peer-python`` on the same server; its report."""
    command = [
        args.peer_python,
        str(BENCH / "huey_peer.py"),
        *("--jobs", str(args.jobs), "--single-jobs", str(args.single_jobs)),
        *("--concurrency", *map(str, args.concurrency)),
        *("--latency-jobs", str(args.latency_jobs), "--delayed-jobs", str(args.delayed_jobs)),
        *("--delay", str(args.delay)),
    ]
    env = {**os.environ, "HUEY_PEER_URL": url}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"the huey peer failed ({done.returncode}):\n{done.stdout}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every measurement and returns the report."""
    load = os.getloadavg()[0]
    began = time.perf_counter()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    results: dict[str, Any] = {}
    with server_for(args) as (url, described):
        r = redis.Redis.from_url(url)
        client = dtaskq.Client.from_url(url, prefix=prefix)
        try:
            print(f"server: {described['kind']} {described['version']} at {url}", flush=True)
            client.ping()
            if "enqueue" in args.modes:
                print(f"enqueue: {args.single_jobs} single, {args.jobs} batched ...", flush=True)
                results["enqueue"] = bench_enqueue(client, r, prefix, args)
            results["configs"] = []
            if set(args.modes) - {"enqueue"}:
                for count in args.workers:
                    for concurrency in args.concurrency:
                        print(f"{count} worker(s) x concurrency {concurrency}:", flush=True)
                        results["configs"].append(
                            run_config(client, r, url, prefix, count, concurrency, args)
                        )
            if args.peer == "huey":
                print("peer: huey ...", flush=True)
                results["peer"] = run_peer(url, args)
        finally:
            if described["kind"] == "external":
                delete_prefix(r, prefix)
            client.close()
            r.close()
    params = {
        "jobs": args.jobs,
        "single_jobs": args.single_jobs,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "handler": args.handler,
        "modes": args.modes,
        "duration_s": args.duration,
        "backlog": args.backlog,
        "latency_jobs": args.latency_jobs,
        "delayed_jobs": args.delayed_jobs,
        "delay_s": args.delay,
        "peer": args.peer,
    }
    return run_report(described, load, params, results, began)


# -- the table ----------------------------------------------------------------------------------


def _us(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f} µs"


def _ms(stats: dict[str, float], keys: Sequence[str] = ("p50", "p95", "p99", "max")) -> str:
    return ", ".join(f"{k} {stats[k] * 1e3:,.1f}" for k in keys) + " ms"


def _cost_row(measure: str, result: str, m: dict[str, Any]) -> tuple[str, ...]:
    calls = m.get("script_calls_per_job", m.get("commands_per_job"))
    return (
        measure,
        result,
        "" if calls is None else f"{calls:.2f}",
        _us(m.get("redis_cpu_us")),
        _us(m.get("redis_script_us")),
        _us(m.get("client_cpu_us")),
    )


def _row(measure: str, result: str) -> tuple[str, ...]:
    return (measure, result, "", "", "", "")


def table(report: dict[str, Any]) -> str:
    """The results as a Markdown table (also readable as plain text)."""
    res = report["results"]
    handler = report["params"]["handler"]
    header = ("measure", "result", "calls/job", "Redis CPU/job", "script/job", "client CPU/job")
    rows: list[tuple[str, ...]] = [header]
    if "enqueue" in res:
        single, many, mem = (res["enqueue"][k] for k in ("single", "many", "memory"))
        rows.append(
            _cost_row(
                f"enqueue, one call per job ({single['jobs']:,} jobs; client: the producer)",
                f"{single['jobs_per_s']:,.0f} jobs/s",
                single,
            )
        )
        rows.append(
            _cost_row(
                f"enqueue_many ({many['jobs']:,} jobs; client: the producer)",
                f"{many['jobs_per_s']:,.0f} jobs/s",
                many,
            )
        )
        measure = f"Redis memory per pending job ({mem['jobs']:,} jobs): used_memory delta"
        result = f"{mem['per_job_used_memory']:,.0f} B"
        if mem["job_hash_bytes"]:
            measure += "; MEMORY USAGE of one job's hash"
            result += f"; {mem['job_hash_bytes']:,} B"
        rows.append(_row(measure, result))
    for config in res.get("configs", []):
        setup = f"{config['workers']} worker(s) x concurrency {config['concurrency']}"
        if "burn" in config:
            b = config["burn"]
            rows.append(
                _cost_row(
                    f"burn-down, {b['jobs']:,} {handler} no-op jobs, {setup}: first job begun "
                    "-> all COMPLETED (client: the workers)",
                    f"{b['jobs_per_s']:,.0f} jobs/s ({b['drain_s']:.2f} s)",
                    b,
                )
            )
            rows.append(
                _row(
                    "  workers launched -> all COMPLETED (-> first job begun); jobs per worker",
                    f"{b['launch_to_done_s']:.2f} s ({b['launch_to_first_job_s']:.2f} s); "
                    + " / ".join(f"{n:,}" for n in b["per_node"].values()),
                )
            )
        if "steady" in config:
            s = config["steady"]
            rows.append(
                _cost_row(
                    f"steady, {setup}, producer of enqueue_many x {STEADY_BATCH} for "
                    f"{s['duration_s']:.1f} s (client: the workers)",
                    f"{s['jobs_per_s']:,.0f} jobs/s ({s['completed']:,} completed; backlog "
                    f"full {s['producer_waits']:,}x)",
                    s,
                )
            )
        if "latency" in config:
            lat = config["latency"]
            rows.append(
                _row(
                    f"enqueue -> handler start, {lat['count']} sequential jobs, {setup}",
                    _ms(lat),
                )
            )
        if "delayed" in config:
            d = config["delayed"]
            rows.append(
                _row(
                    f"delay={d['delay_s']:g} s: due -> handler start ({d['handler']['count']} "
                    f"jobs), {setup}; due -> claim",
                    f"{_ms(d['handler'], ('p50', 'max'))}; {_ms(d['claim'], ('p50', 'max'))}",
                )
            )
    text = markdown(rows)
    if "peer" in res:
        text += "\n\n" + peer_table(res["peer"])
    return text


def peer_table(peer: dict[str, Any]) -> str:
    """The huey peer's figures, as a table of their own."""
    rows: list[tuple[str, ...]] = [
        ("huey (peer)", "result", "commands/job", "Redis CPU/job", "script/job", "client CPU/job")
    ]
    single, mem = peer["enqueue"], peer["memory"]
    rows.append(
        _cost_row(
            f"enqueue, one call per task ({single['jobs']:,} tasks; no batch API; client: the "
            "producer)",
            f"{single['jobs_per_s']:,.0f} jobs/s",
            single,
        )
    )
    rows.append(
        _row(
            f"Redis memory per pending task ({mem['jobs']:,} tasks): used_memory delta",
            f"{mem['per_job_used_memory']:,.0f} B",
        )
    )
    for b in peer["burn"]:
        rows.append(
            _cost_row(
                f"burn-down, {b['jobs']:,} no-op tasks, 1 consumer x {b['threads']} threads: "
                "first task begun -> all done (client: the consumer)",
                f"{b['jobs_per_s']:,.0f} jobs/s ({b['drain_s']:.2f} s)",
                b,
            )
        )
        rows.append(
            _row(
                "  consumer launched -> all done (-> first task begun)",
                f"{b['launch_to_done_s']:.2f} s ({b['launch_to_first_job_s']:.2f} s)",
            )
        )
    lat = peer["latency"]
    rows.append(
        _row(
            f"enqueue -> task start, {lat['count']} sequential tasks, 1 consumer x "
            f"{peer['latency_threads']} threads",
            _ms(lat),
        )
    )
    if "delayed" in peer:
        d = peer["delayed"]
        rows.append(
            _row(
                f"delay={d['delay_s']:g} s: due (eta) -> task start ({d['handler']['count']} "
                "tasks)",
                _ms(d["handler"], ("p50", "max")),
            )
        )
    head = f"huey {peer['huey']} (RedisHuey, store_none=True; huey_consumer -k thread -q)"
    return head + "\n" + markdown(rows)


# -- the command line ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of the benchmark."""
    p = new_parser(__doc__, RESULTS)
    p.add_argument("--url", help="an existing server instead of an embedded one")
    p.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    p.add_argument("--json", action="store_true", help="also print the report as JSON")
    p.add_argument("--jobs", type=positive, help="jobs of a burn-down and of enqueue_many (20000)")
    p.add_argument("--single-jobs", type=positive, help="jobs enqueued one call each (5000)")
    p.add_argument("--workers", type=positive, nargs="+", help="worker process counts (1 2)")
    p.add_argument(
        "--concurrency", type=positive, nargs="+", help="jobs run at once per worker (8 100)"
    )
    p.add_argument("--handler", choices=sorted(HANDLERS), default="sync", help="sync (default)")
    p.add_argument(
        "--modes", nargs="+", choices=MODES, default=list(MODES), help="what to run (all)"
    )
    p.add_argument("--duration", type=float, help="seconds of the steady run (5)")
    p.add_argument(
        "--backlog", type=positive, default=1000, help="most jobs queued in the steady run (1000)"
    )
    p.add_argument("--latency-jobs", type=positive, help="sequential jobs of the latency (300)")
    p.add_argument("--delayed-jobs", type=positive, help="sequential delayed jobs (30)")
    p.add_argument("--delay", type=float, default=0.2, help="delay of those jobs, s (0.2)")
    p.add_argument("--peer", choices=["huey"], help="also measure huey on the same server")
    p.add_argument(
        "--peer-python",
        default=sys.executable,
        help="a Python with huey and redis installed, for --peer (this one)",
    )
    args = parse(p, argv)
    if args.url and args.server:
        p.error("--url and --server exclude each other")
    fill = QUICK if args.quick else DEFAULTS
    for name, value in fill.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.duration <= 0 or args.delay < 0:
        p.error("--duration must be above 0 and --delay at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark, prints the table (and the JSON) and saves the JSON."""
    args = parse_args(argv)
    report = run(args)
    code = publish(report, table(report), args.out)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    return code


if __name__ == "__main__":
    sys.exit(main())
