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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import redis
from core import (
    delete_prefix,
    describe_version,
    new_parser,
    parse,
    positive,
    publish,
    run_report,
    server,
)
from job_measures import (
    HANDLERS,
    bench_burn,
    bench_delayed,
    bench_enqueue,
    bench_latency,
    bench_steady,
    start_workers,
)
from job_tables import table
from job_views import delete_queue

import dtaskq
from dtaskq.worker.processes import WorkerProcesses

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "jobs.json"
STOP_TIMEOUT_S = 30.0
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
